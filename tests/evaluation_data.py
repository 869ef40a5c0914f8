"""Helpers of the evaluation tests: three-item local copies of every benchmark in its real schema (columns and
types as the benchmark's source has them; see `transformers_fac.evaluation.benchmarks` for where each schema comes
from), and a tiny random Whisper saved locally (the ASR model of spoken replies, offline)."""

import json
from pathlib import Path

import numpy as np
import soundfile as sf

AUDIO = Path(__file__).resolve().parent / "fixtures" / "audio"
CLIP_SECONDS = 1.5


def write_clips(folder: Path, count: int = 3) -> list[Path]:
    """`count` short 16 kHz clips of the fixture speech (English and Chinese, alternating), as WAV files."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        source = AUDIO / ("question_en.wav" if index % 2 == 0 else "question_zh.wav")
        waveform, rate = sf.read(source, dtype="float32")
        start = int(0.5 * rate) + index * 1000
        path = folder / f"clip_{index}.wav"
        sf.write(path, waveform[start : start + int(CLIP_SECONDS * rate)], rate)
        paths.append(path)
    return paths


def audio_dataset(columns: dict, clips: list[Path]):
    import datasets

    table = {"audio": [str(path) for path in clips], **columns}
    return datasets.Dataset.from_dict(table).cast_column("audio", datasets.Audio(sampling_rate=16000))


def voicebench_ifeval(root: Path) -> Path:
    """hlt-lab/voicebench `ifeval`: audio, prompt, key, instruction_id_list, kwargs (a list of structs)."""
    dataset = audio_dataset(
        {
            "prompt": ["Write a story without commas.", "Say hello in lowercase.", "Describe rain in 5 words."],
            "key": [1000, 1001, 1005],
            "instruction_id_list": [
                ["punctuation:no_comma"],
                ["change_case:english_lowercase"],
                ["length_constraints:number_words"],
            ],
            "kwargs": [[{"relation": None, "num_words": None}], [{}], [{"relation": "less than", "num_words": 6}]],
        },
        write_clips(root / "clips"),
    )
    dataset.save_to_disk(str(root / "data"))
    return root / "data"


def voicebench_sdqa(root: Path) -> Path:
    """hlt-lab/voicebench `sd-qa`: a DatasetDict with one split per accent (usa, aus, ...), columns audio, prompt,
    reference."""
    import datasets

    clips = write_clips(root / "clips")
    columns = {"prompt": ["Who wrote Hamlet?", "What is 2 plus 2?", "Capital of France?"]}
    columns["reference"] = ["Shakespeare", "4", "Paris"]
    splits = {"usa": audio_dataset(columns, clips), "aus": audio_dataset(columns, clips)}
    datasets.DatasetDict(splits).save_to_disk(str(root / "data"))
    return root / "data"


def openaudiobench_trivia(root: Path) -> Path:
    """baichuan-inc/OpenAudioBench: eval_datas/trivia_qa/trivia_qa.csv (audio_filename, question,
    answer_normalized_aliases) and the clips under eval_datas/trivia_qa/audios/."""
    folder = root / "eval_datas" / "trivia_qa"
    clips = write_clips(folder / "audios")
    lines = ["audio_filename,question,answer_normalized_aliases"]
    answers = ["['paris']", "['4', 'four']", "['shakespeare', 'william shakespeare']"]
    questions = ["Capital of France?", "What is 2 plus 2?", "Who wrote Hamlet?"]
    for clip, question, answer in zip(clips, questions, answers):
        lines.append(f'{clip.name},{question},"{answer}"')
    (folder / "trivia_qa.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def ultraeval_llama_questions(root: Path) -> Path:
    """TwinkStart/llama-questions (UltraEval-Audio): audio, Questions, Answer."""
    dataset = audio_dataset(
        {
            "Questions": ["Who wrote Hamlet?", "Capital of France?", "What is 2 plus 2?"],
            "Answer": ["Shakespeare", "Paris", "4"],
        },
        write_clips(root / "clips"),
    )
    dataset.save_to_disk(str(root / "data"))
    return root / "data"


TRIANGLE_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "calculate_triangle_area",
            "description": "Calculate the area of a triangle given its base and height.",
            "parameters": {
                "type": "dict",
                "properties": {
                    "base": {"type": "integer", "description": "The base of the triangle."},
                    "height": {"type": "integer", "description": "The height of the triangle."},
                    "unit": {"type": "string", "description": "The unit of measure."},
                },
                "required": ["base", "height"],
            },
        },
    }
]
TRIANGLE_TRUTH = [{"calculate_triangle_area": {"base": [10], "height": [5], "unit": ["units", ""]}}]


def speechfc_record(index: int, file_name: str, category: str = "SpeechFC_BFCL_Single") -> dict:
    """One SpeechFCEval record (the fields of the official repository's evaluate/SpeechFCEval/result files)."""
    return {
        "utterance": "Find the area of a triangle with a base of 10 units and height of 5 units.",
        "file_name": file_name,
        "function": json.dumps(TRIANGLE_TOOLS),
        "time": "",
        "ground_truth": json.dumps(TRIANGLE_TRUTH),
        "category": category,
        "dataset_key": f"simple_python_{index}",
        "index": index,
    }


def _speechfc_files(root: Path, category: str, other: str, record) -> Path:
    """Three `record(index, file_name, category)` records of `category` as JSON lines, clips at `file_name` relative
    to the root, plus one record of the `other` category, which the subset must leave out."""
    clips = write_clips(root / "wav" / category)
    records = [record(i, f"wav/{category}/{clip.name}", category) for i, clip in enumerate(clips)]
    records.append(record(9, f"wav/{category}/{clips[0].name}", other))
    (root / f"{category}.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n", encoding="utf-8")
    return root


def speechfc_bfcl_single(root: Path) -> Path:
    """FunAudioLLM/SpeechFCEval: JSON-lines records, clips at `file_name` relative to the root."""
    return _speechfc_files(root, "SpeechFC_BFCL_Single", "SpeechFC_BFCL_Parallel", speechfc_record)


WEATHER_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather forecast of a city.",
            "parameters": {
                "type": "dict",
                "properties": {
                    "city": {"type": "string", "description": "The city."},
                    "days": {"type": "integer", "description": "How many days ahead."},
                    "units": {"type": "array", "items": {"type": "string"}, "description": "Units to report in."},
                    "filters": {"type": "object", "description": "What to include."},
                },
                "required": ["city"],
            },
        },
    }
]
WEATHER_SINGLE_TRUTH = [{"get_weather": {"city": "Beijing", "days": 3}}]
WEATHER_PARALLEL_TRUTH = [
    {"get_weather_1": {"city": "Beijing", "days": 3}, "get_weather_2": {"city": "Shanghai", "days": 3}}
]


def acebench_record(index: int, file_name: str, category: str = "SpeechFC_ACEBench_Parallel") -> dict:
    """One Speech-ACEBench record: the SpeechFCEval fields, `ground_truth` a list of candidate answers."""
    parallel = category.endswith("Parallel")
    return {
        **speechfc_record(index, file_name, category),
        "utterance": "What will the weather be in Beijing and Shanghai over the next three days?",
        "function": json.dumps(WEATHER_TOOLS),
        "ground_truth": json.dumps(WEATHER_PARALLEL_TRUTH if parallel else WEATHER_SINGLE_TRUTH),
        "dataset_key": f"{'parallel' if parallel else 'normal_single'}_{index}",
    }


def speechfc_acebench_parallel(root: Path) -> Path:
    """FunAudioLLM/SpeechFCEval, Speech-ACEBench parallel records (plus one single record the subset leaves out)."""
    return _speechfc_files(root, "SpeechFC_ACEBench_Parallel", "SpeechFC_ACEBench_Single", acebench_record)


def mmau_test_mini(root: Path) -> Path:
    """Sakshi113/MMAU mmau-test-mini.json: id, audio_id (relative), question, choices, answer, dataset, task,
    split, category, sub-category, difficulty."""
    clips = write_clips(root / "test-mini-audios")
    entries = []
    for index, clip in enumerate(clips):
        entries.append(
            {
                "id": f"mmau-{index}",
                "audio_id": f"./test-mini-audios/{clip.name}",
                "question": "Based on the given audio, identify the source of the speaking voice.",
                "choices": ["Man", "Woman", "Child", "Robot"],
                "answer": "Woman",
                "dataset": "AudioSet",
                "task": "speech",
                "split": "test-mini",
                "category": "Reasoning",
                "sub-category": "Acoustic Source Inference",
                "difficulty": "medium",
            }
        )
    (root / "mmau-test-mini.json").write_text(json.dumps(entries), encoding="utf-8")
    return root


def vstyle(root: Path, language: str = "en") -> Path:
    """zhanjun/VStyle (alibaba/vstyle): `<language>/metadata.jsonl` (file_name, id, instruct_id, ability,
    instruct_text) and the spoken instructions under `<language>/wav/`."""
    folder = root / language
    clips = write_clips(folder / "wav")
    abilities = ["acoustic_attributes/speed", "role_play/character", "empathy/sadness_disappointment"]
    texts = [
        "Using a very slow delivery, please describe your favorite kind of weather.",
        "You are an old pirate captain: tell your crew that a storm is coming.",
        "I failed my driving test again today and I feel terrible.",
    ]
    lines = []
    for index, (clip, ability, text) in enumerate(zip(clips, abilities, texts)):
        entry = {"file_name": f"wav/{clip.name}", "id": 10 * index + 1, "instruct_id": index + 1}
        lines.append(json.dumps({**entry, "ability": ability, "instruct_text": text}))
    (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def librispeech_test_clean(root: Path) -> Path:
    """TwinkStart/librispeech (UltraEval-Audio): audio, text."""
    dataset = audio_dataset({"text": ["HELLO WORLD", "HOW ARE YOU", "GOOD MORNING"]}, write_clips(root / "clips"))
    dataset.save_to_disk(str(root / "data"))
    return root / "data"


def commonvoice_zh(root: Path) -> Path:
    """TwinkStart/CommonVoice_15 (UltraEval-Audio), split zh: audio, sentence."""
    dataset = audio_dataset({"sentence": ["今天天气很好", "你好", "谢谢你"]}, write_clips(root / "clips"))
    dataset.save_to_disk(str(root / "data"))
    return root / "data"


def custom_jsonl(root: Path, count: int = 4) -> Path:
    """A custom benchmark folder: data.jsonl (id, audio relative to the folder, optional reference)."""
    clips = write_clips(root / "clips", count)
    lines = []
    for index, clip in enumerate(clips):
        record = {"id": f"q{index}", "audio": f"clips/{clip.name}"}
        if index % 2 == 0:
            record["reference"] = "weather"
        lines.append(json.dumps(record))
    (root / "data.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def custom_saved(root: Path) -> Path:
    """A custom benchmark as a `save_to_disk` folder: id, audio (an Audio column), reference."""
    dataset = audio_dataset(
        {"id": ["a", "b", "c"], "reference": ["weather", "", "Paris"]}, write_clips(root / "clips")
    )
    dataset.save_to_disk(str(root / "data"))
    return root / "data"


def build_tiny_whisper(folder: Path) -> Path:
    """A tiny random Whisper (WhisperConfig, a byte-level WhisperTokenizer, WhisperFeatureExtractor) saved in
    `folder`: a real transformers ASR model for the pipeline, offline. It transcribes nonsense."""
    import torch
    from tokenizers import pre_tokenizers
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
        WhisperTokenizer,
    )

    if (folder / "config.json").is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    vocab = {symbol: index for index, symbol in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    specials = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|zh|>", "<|translate|>", "<|transcribe|>"]
    specials += ["<|startoflm|>", "<|startofprev|>", "<|nospeech|>", "<|notimestamps|>"]
    for token in specials:
        vocab[token] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    eos = "<|endoftext|>"
    tokenizer = WhisperTokenizer(
        str(folder / "vocab.json"),
        str(folder / "merges.txt"),
        unk_token=eos,
        bos_token=eos,
        eos_token=eos,
        pad_token=eos,
    )
    tokenizer.add_special_tokens({"additional_special_tokens": specials[1:]})
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in specials}
    config = WhisperConfig(
        vocab_size=len(vocab),
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        num_mel_bins=80,
        max_target_positions=64,
        pad_token_id=ids[eos],
        bos_token_id=ids[eos],
        eos_token_id=ids[eos],
        decoder_start_token_id=ids["<|startoftranscript|>"],
    )
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(config)
    model.generation_config = GenerationConfig(
        decoder_start_token_id=ids["<|startoftranscript|>"],
        eos_token_id=ids[eos],
        pad_token_id=ids[eos],
        max_length=16,
        no_timestamps_token_id=ids["<|notimestamps|>"],
        lang_to_id={"<|en|>": ids["<|en|>"], "<|zh|>": ids["<|zh|>"]},
        task_to_id={"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]},
        is_multilingual=True,
    )
    model.save_pretrained(folder)
    WhisperProcessor(WhisperFeatureExtractor(feature_size=80), tokenizer).save_pretrained(folder)
    return folder


def noisy(waveform: np.ndarray, level: float = 0.05, seed: int = 0) -> np.ndarray:
    """The waveform with white noise added."""
    noise = np.random.default_rng(seed).standard_normal(waveform.shape).astype(np.float32)
    return np.clip(waveform + level * noise, -1.0, 1.0)
