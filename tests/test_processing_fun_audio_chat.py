"""FunAudioChatProcessor: loading, exact parity with the official processor (golden data), long audio, chat template,
bad inputs, decoding and save/reload."""

import json
import math

import numpy as np
import pytest
import torch
from transformers import AutoProcessor

from tests.processing_test_utils import (
    AUDIO_FILES,
    SCENARIOS,
    TINY_FAC,
    assert_matches_golden,
    golden_inputs,
    golden_scenarios,
    prompt,
    read_wav,
    scenario_audio,
    tiny_processor,
)
from transformers_fac import FunAudioChatProcessor
from transformers_fac.audio_io import AudioInputError
from transformers_fac.generation_fun_audio_chat import SpeechReply
from transformers_fac.processing_fun_audio_chat import default_chat_template, format_speech_codes
from transformers_fac.prompts import ASR_INSTRUCTION, AUDIO_TEMPLATE, S2M_SYSTEM_PROMPT, S2T_SYSTEM_PROMPT


def train_audio_items(user_audio=None) -> list:
    """The golden `train` audio inputs: the user's `en` recording and the assistant target (codes + reply)."""
    train = golden_scenarios()["train"]
    assistant = {"path": "", "token": format_speech_codes(train["codes"]), "text": train["reply"]}
    return [str(AUDIO_FILES["en"]) if user_audio is None else user_audio, assistant]


def test_auto_processor_loads_the_hub_layout():
    processor = tiny_processor()
    assert isinstance(processor, FunAudioChatProcessor)
    assert type(processor.feature_extractor).__name__ == "WhisperFeatureExtractor"
    assert processor.speech_tokenizer.convert_tokens_to_ids("[AU0123]") == 123
    assert processor.audio_token_id == processor.tokenizer.convert_tokens_to_ids("<|AUDIO|>")
    assert processor.audio_group_size == 5
    assert processor.max_audio_seconds == 300
    assert processor.chat_template == (TINY_FAC / "chat_template.jinja").read_text(encoding="utf-8")


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_inference_inputs_match_the_official_processor(scenario):
    audio = [str(AUDIO_FILES[name]) for name in scenario_audio(scenario)]
    outputs = tiny_processor()(text=[prompt(scenario)] * len(audio), audio=audio, return_tensors="pt")
    expected = golden_inputs(scenario)
    assert_matches_golden(outputs, expected)
    if scenario == "forward":
        assert "input_features" in expected
    assert "text_ids" not in outputs


def test_batch_is_left_padded():
    outputs = tiny_processor()(text=[prompt()] * 2, audio=[read_wav("en"), read_wav("zh")], return_tensors="pt")
    assert outputs["attention_mask"][0, 0] == 0 and outputs["attention_mask"][1, 0] == 1
    right = tiny_processor()(
        text=[prompt()] * 2, audio=[read_wav("en"), read_wav("zh")], padding_side="right", return_tensors="pt"
    )
    assert right["attention_mask"][0, -1] == 0
    assert torch.equal(right["input_ids"][0, : right["attention_mask"][0].sum()], outputs["input_ids"][0, 4:])


def test_training_inputs_match_the_official_processor():
    train = golden_scenarios()["train"]
    outputs = tiny_processor()(text=train["prompt_text"], audio=train_audio_items(), return_tensors="pt")
    expected = golden_inputs("train")
    assert {"text_ids", "text_attention_mask", "input_features", "feature_exist_mask"} <= set(expected)
    assert_matches_golden(outputs, expected)
    assert outputs["feature_exist_mask"].tolist() == [True, False]
    assert outputs["text_attention_mask"].tolist() == [False, True]
    assert (outputs["text_ids"][0] == tiny_processor().tokenizer.pad_token_id).all()


def test_training_inputs_from_official_json_strings():
    """The official data format: JSON strings with `path`, `token` and `text` for every audio."""
    train = golden_scenarios()["train"]
    frames = int(len(read_wav("en")) / 16000 * 25)
    user = json.dumps({"path": str(AUDIO_FILES["en"]), "text": "", "token": "<|audio_pad|>" * frames}, sort_keys=True)
    assistant = json.dumps(train_audio_items()[1], sort_keys=True)
    outputs = tiny_processor()(text=train["prompt_text"], audio=[user, assistant], return_tensors="pt")
    assert_matches_golden(outputs, golden_inputs("train"))


def test_assistant_target_waveform_is_ignored_and_placeholders_follow_the_codes():
    train = golden_scenarios()["train"]
    target = dict(train_audio_items()[1], path=str(AUDIO_FILES["zh"]))
    outputs = tiny_processor()(text=train["prompt_text"], audio=[str(AUDIO_FILES["en"]), target], return_tensors="pt")
    assert outputs["feature_exist_mask"].tolist() == [True, False]
    assert outputs["input_features"].shape[0] == 1
    slots = (outputs["input_ids"][0] == tiny_processor().audio_token_id).sum().item()
    assert slots == math.ceil(128 / 5) + math.ceil((10 + len(train["codes"])) / 5)


def test_code_only_items_have_no_features():
    train = golden_scenarios()["train"]
    text = "<|im_start|>assistant\n<|audio_bos|><|AUDIO|><|audio_eos|><|im_end|>\n"
    outputs = tiny_processor()(text=text, audio=[train_audio_items()[1]], return_tensors="pt")
    assert "input_features" not in outputs and outputs["feature_exist_mask"].tolist() == [False]
    assert outputs["speech_ids"][0, :10].tolist() == [6561] * 10
    assert outputs["speech_ids"][0, 10:47].tolist() == train["codes"]


def test_placeholders_are_wrapped_only_when_bare():
    processor = tiny_processor()
    wav = read_wav("en")
    wrapped = processor(text="<|im_start|>user\n<|AUDIO|><|im_end|>", audio=[wav], return_tensors="pt")
    ids = wrapped["input_ids"][0].tolist()
    bos, eos, slot = (
        processor.tokenizer.convert_tokens_to_ids(t) for t in ("<|audio_bos|>", "<|audio_eos|>", "<|AUDIO|>")
    )
    assert ids.count(bos) == 1 and ids.count(eos) == 1 and ids.count(slot) == math.ceil(128 / 5)
    assert ids[ids.index(bos) + 1] == slot and ids[ids.index(eos) - 1] == slot
    already = processor(text=f"x{AUDIO_TEMPLATE}y", audio=[wav], return_tensors="pt")["input_ids"][0].tolist()
    assert already.count(bos) == 1 and already.count(eos) == 1


def test_long_audio_is_not_truncated():
    long_wav = np.concatenate([read_wav("long")] * 6)  # 36 s, longer than the 30 s Whisper window
    frames = int(len(long_wav) / 16000 * 25)
    processor = tiny_processor()
    outputs = processor(text=[prompt(), prompt()], audio=[long_wav, read_wav("en")], return_tensors="pt")
    assert outputs["input_features"].shape == (2, 128, 6000)
    assert outputs["feature_attention_mask"][0].sum().item() == math.ceil(len(long_wav) / 160) == 3600
    assert outputs["speech_attention_mask"][0].sum().item() == frames == 900
    assert (outputs["input_ids"][0] == processor.audio_token_id).sum().item() == math.ceil(frames / 5)
    # The short audio of the same batch keeps the official features in its first 30 s window.
    reference = golden_inputs("train")["input_features"][0]
    torch.testing.assert_close(outputs["input_features"][1, :, :3000], reference, rtol=0, atol=1e-5)
    assert outputs["feature_attention_mask"][1].sum().item() == 513


def test_audio_over_the_limit_raises_naming_it():
    too_long = np.tile(read_wav("long"), 51)[: 301 * 16000]
    with pytest.raises(ValueError, match=r"301.0 s long.*at most 300 s per audio.*max_source_positions=1500"):
        tiny_processor()(text=prompt(), audio=[too_long])
    codes = {"token": format_speech_codes([1] * (300 * 25 + 1), num_bos=0), "text": ""}
    with pytest.raises(ValueError, match="at most 300 s"):
        tiny_processor()(text=prompt(), audio=[codes])


def test_max_audio_seconds_is_configurable_and_saved(tmp_path):
    processor = AutoProcessor.from_pretrained(TINY_FAC, max_audio_seconds=5)
    assert processor.max_audio_seconds == 5
    with pytest.raises(ValueError, match="at most 5 s per audio"):
        processor(text=prompt(), audio=[read_wav("long")])
    processor.save_pretrained(tmp_path)
    assert AutoProcessor.from_pretrained(tmp_path).max_audio_seconds == 5


def _bad_wav(kind: str, tmp_path):
    wav = read_wav("en")
    if kind == "nan":
        return np.full_like(wav, np.nan)
    if kind == "one inf":
        return np.where(np.arange(len(wav)) == 7, np.inf, wav).astype(np.float32)
    if kind == "not audio file":
        path = tmp_path / "notes.txt"
        path.write_text("this is not audio\n" * 50)
        return str(path)
    return {
        "empty": np.zeros(0, dtype=np.float32),
        "zeros": np.zeros(16000, dtype=np.float32),
        "rank 3": np.zeros((2, 2, 100), dtype=np.float32),
        "strings": np.array(["a", "b"]),
        "complex": wav.astype(np.complex64),
        "missing file": str(tmp_path / "missing.wav"),
        "too short": wav[:300],
        "none": None,
        "bad json": '{"path": "x.wav", "token": ',
        "unknown speech tokens": {"token": "hello world", "text": ""},
    }[kind]


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("empty", r"empty \(0 samples\)"),
        ("nan", "NaN or infinite"),
        ("one inf", "1 NaN or infinite"),
        ("zeros", "all zeros"),
        ("rank 3", r"shape \(2, 2, 100\)"),
        ("strings", "must be real numbers"),
        ("complex", "must be real numbers"),
        ("missing file", "audio file not found: .*missing.wav"),
        ("not audio file", "notes.txt"),
        ("too short", "too short"),
        ("none", "None"),
        ("bad json", "not valid JSON"),
        ("unknown speech tokens", "does not know"),
    ],
)
def test_bad_audio_raises_a_clear_value_error(kind, message, tmp_path):
    with pytest.raises(ValueError, match=message) as error:
        tiny_processor()(text=prompt(), audio=[_bad_wav(kind, tmp_path)])
    assert isinstance(error.value, AudioInputError)
    assert "audio[0]" in str(error.value) or kind in ("missing file", "not audio file")


@pytest.mark.parametrize("rate", [0, -16000, float("nan"), "16k"])
def test_bad_sampling_rate_raises(rate):
    with pytest.raises(ValueError, match="sampling_rate must be a positive number"):
        tiny_processor()(text=prompt(), audio=[(read_wav("en"), rate)])


def test_placeholder_count_mismatch_names_both_counts():
    with pytest.raises(ValueError, match=r"1 <\|AUDIO\|> placeholder\(s\) but 2 audio"):
        tiny_processor()(text=prompt(), audio=[read_wav("en"), read_wav("zh")])
    with pytest.raises(ValueError, match=r"2 <\|AUDIO\|> placeholder\(s\) but 1 audio"):
        tiny_processor()(text=[prompt(), prompt()], audio=[read_wav("en")])
    with pytest.raises(ValueError, match="no audio"):
        tiny_processor()(text=prompt())


def test_chat_template_renders_audio_blocks_like_the_golden_prompt():
    processor = tiny_processor()
    for scenario, system in (("s2t_en", S2T_SYSTEM_PROMPT), ("s2m_eos", S2M_SYSTEM_PROMPT)):
        path = str(AUDIO_FILES[scenario_audio(scenario)[0]])
        as_string = [{"role": "system", "content": system}, {"role": "user", "content": AUDIO_TEMPLATE}]
        as_blocks = [
            {"role": "system", "content": system},
            {"role": "user", "content": [{"type": "audio", "path": path}]},
        ]
        for conversation in (as_string, as_blocks):
            assert processor.apply_chat_template(conversation, add_generation_prompt=True) == prompt(scenario)
        inputs = processor.apply_chat_template(
            as_blocks, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
        )
        assert_matches_golden(inputs, golden_inputs(scenario))


def test_chat_template_batch_and_audio_forms():
    conversations = [
        [
            {"role": "system", "content": S2T_SYSTEM_PROMPT},
            {"role": "user", "content": [{"type": "audio", "audio": audio}]},
        ]
        for audio in (read_wav("en"), str(AUDIO_FILES["zh"]))
    ]
    inputs = tiny_processor().apply_chat_template(
        conversations, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    assert_matches_golden(inputs, golden_inputs("s2t_batch"))


def test_chat_template_with_instruction_and_other_blocks():
    processor = tiny_processor()
    conversation = [
        {"role": "system", "content": S2T_SYSTEM_PROMPT},
        {
            "role": "user",
            "content": [{"type": "audio", "url": str(AUDIO_FILES["en"])}, {"type": "text", "text": ASR_INSTRUCTION}],
        },
    ]
    rendered = processor.apply_chat_template(conversation, add_generation_prompt=True)
    assert f"<|im_start|>user\n{AUDIO_TEMPLATE}\n{ASR_INSTRUCTION}<|im_end|>\n" in rendered
    # The official template itself writes "Audio k: ..." for blocks with an `audio` key and drops `url`/`path` ones.
    official = processor.apply_chat_template(conversation, add_generation_prompt=True, normalize_audio_content=False)
    assert AUDIO_TEMPLATE not in official
    conversation[1]["content"][0] = {"type": "audio", "audio": str(AUDIO_FILES["en"])}
    official = processor.apply_chat_template(conversation, add_generation_prompt=True, normalize_audio_content=False)
    assert f"Audio 1: {AUDIO_TEMPLATE}\n{ASR_INSTRUCTION}" in official
    with pytest.raises(ValueError, match="'image' block"):
        processor.apply_chat_template([{"role": "user", "content": [{"type": "image", "url": "x.png"}]}])
    with pytest.raises(ValueError, match="no 'audio', 'path' or 'url'"):
        processor.apply_chat_template([{"role": "user", "content": [{"type": "audio"}]}], tokenize=True)


def test_default_chat_template_is_the_official_one():
    processor = tiny_processor()
    rebuilt = FunAudioChatProcessor(processor.feature_extractor, processor.tokenizer, processor.speech_tokenizer)
    assert rebuilt.chat_template == default_chat_template() == processor.chat_template


def test_save_and_reload_round_trip(tmp_path):
    processor = tiny_processor()
    processor.save_pretrained(tmp_path)
    for name in ("processor_config.json", "preprocessor_config.json", "chat_template.jinja", "tokenizer.json"):
        assert (tmp_path / name).is_file(), name
    assert (tmp_path / "speech_tokenizer" / "tokenizer.json").is_file()
    config = json.loads((tmp_path / "processor_config.json").read_text())
    assert config["processor_class"] == "FunAudioChatProcessor" and "feature_extractor" not in config
    assert json.loads((tmp_path / "preprocessor_config.json").read_text())["feature_size"] == 128
    reloaded = AutoProcessor.from_pretrained(tmp_path)
    train = golden_scenarios()["train"]
    before = processor(text=train["prompt_text"], audio=train_audio_items(), return_tensors="pt")
    after = reloaded(text=train["prompt_text"], audio=train_audio_items(), return_tensors="pt")
    assert sorted(before) == sorted(after)
    for key in before:
        assert torch.equal(before[key], after[key]), key


def test_decode_skips_speech_markers_but_keeps_tool_call_tags():
    processor = tiny_processor()
    ids = processor.tokenizer.encode("<|audio_bos|>Hi<|sil|><|sil|><tool_call>{}</tool_call><|audio_eos|><|im_end|>")
    assert processor.decode(ids, skip_special_tokens=True) == "Hi<tool_call>{}</tool_call>"
    assert processor.decode(torch.tensor(ids)) == processor.tokenizer.decode(ids)
    assert (
        processor.batch_decode(torch.tensor([ids, ids]), skip_special_tokens=True)
        == ["Hi<tool_call>{}</tool_call>"] * 2
    )


def test_post_process_multimodal_output():
    processor = tiny_processor()
    ids = torch.tensor([processor.tokenizer.encode("<|audio_bos|>Hello<|im_end|>")] * 2)
    assert processor.post_process_multimodal_output(ids) == ["Hello", "Hello"]
    assert processor.post_process_multimodal_output(ids[0], generation_mode="text") == ["Hello"]
    waveform = torch.linspace(-1, 1, 240)
    speech_ids = torch.full((2, 10), 6561)
    for outputs in (SpeechReply(ids, speech_ids, audio=[waveform]), {"sequences": ids, "audio": [waveform]}):
        audio = processor.post_process_multimodal_output(outputs, generation_mode="audio")
        assert len(audio) == 1 and audio[0].dtype == np.float32 and np.allclose(audio[0], waveform.numpy())
    reply = SpeechReply(ids, speech_ids, audio=[waveform])
    assert processor.post_process_multimodal_output(reply, generation_mode="text") == ["Hello", "Hello"]
    for outputs in (ids, SpeechReply(ids, speech_ids), (ids, speech_ids)):
        # Speech codes are not audio: without a decoder's waveforms, audio mode refuses.
        with pytest.raises(ValueError, match="no `audio`"):
            processor.post_process_multimodal_output(outputs, generation_mode="audio")
    with pytest.raises(ValueError, match="'image'"):
        processor.post_process_multimodal_output(ids, generation_mode="image")


def test_model_input_names_and_format_speech_codes():
    names = tiny_processor().model_input_names
    for name in ("input_ids", "attention_mask", "speech_ids", "input_features", "feature_exist_mask", "text_ids"):
        assert name in names
    assert format_speech_codes([0, 42], num_bos=1) == "<|audio_bos|>[AU0000][AU0042]"
