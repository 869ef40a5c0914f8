"""`fac-eval run` end to end on the tiny checkpoint, offline: every benchmark on a three-item local copy in its real
schema, the console script on a custom folder, an interrupted run that resumes, and a judged subset scored by a real
OpenAI-compatible endpoint (`fac-serve --model tiny`)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import evaluation_data as data
from tests.serving_utils import running_server
from transformers_fac.evaluation import run_evaluation, score_predictions
from transformers_fac.evaluation.benchmarks import get_benchmark
from transformers_fac.evaluation.judging import Judge

ROOT = Path(__file__).resolve().parents[1]

# (benchmark, subset, builder of the local copy): one case per benchmark, plus the subsets whose schema differs
CASES = [
    ("voicebench", "ifeval", data.voicebench_ifeval),
    ("voicebench", "sd-qa", data.voicebench_sdqa),
    ("openaudiobench", "trivia_qa", data.openaudiobench_trivia),
    ("ultraeval_s2s", "llama_questions", data.ultraeval_llama_questions),
    ("speechfc", "bfcl_single", data.speechfc_bfcl_single),
    ("speechfc", "acebench_parallel", data.speechfc_acebench_parallel),
    ("mmau", "test-mini", data.mmau_test_mini),
    ("librispeech", "test_clean", data.librispeech_test_clean),
    ("commonvoice", "zh", data.commonvoice_zh),
    ("custom", "custom", data.custom_saved),
]


def _records(output: Path) -> list[dict]:
    return [json.loads(line) for line in (output / "predictions.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def tiny_whisper(tmp_path_factory) -> Path:
    return data.build_tiny_whisper(tmp_path_factory.mktemp("asr") / "tiny-whisper")


@pytest.mark.parametrize("name, subset, build", CASES, ids=[f"{case[0]}-{case[1]}" for case in CASES])
def test_every_benchmark_runs_end_to_end_on_a_local_copy(name, subset, build, tmp_path, tiny_whisper, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    data_dir = build(tmp_path / "source")
    output = tmp_path / "out"

    results = run_evaluation(
        "tiny",
        name,
        output,
        subset=subset,
        data_dir=str(data_dir),
        limit=3,
        batch_size=3,
        max_new_tokens=4,
        asr_model=str(tiny_whisper),
    )

    assert {path.name for path in output.iterdir()} >= {"predictions.jsonl", "results.json", "results.md"}
    records = _records(output)
    assert len(records) == 3 and len({record["id"] for record in records}) == 3
    assert all(record["subset"] == subset and record["error"] is None and "scores" in record for record in records)
    summary = results["subsets"][subset]
    assert summary["items"] == 3 and summary["paper"] == get_benchmark(name).subset(subset).paper
    assert json.loads((output / "results.json").read_text()) == results
    assert f"| {subset} |" in (output / "results.md").read_text()
    if name in ("ultraeval_s2s", "custom"):  # spoken replies: saved, scored with DNSMOS
        assert all((output / record["audio"]).is_file() for record in records)
        assert 1.0 <= summary["speech"]["dnsmos"]["ovrl_mos"] <= 5.0
    else:
        assert all(record["audio"] is None for record in records)
    if name == "ultraeval_s2s":  # transcribed by the ASR model; UTMOS cannot load offline and says so
        assert all("transcript" in record for record in records)
        assert summary["scored_on"] == "transcripts of the spoken replies"
        assert "UTMOS needs" in results["unavailable"]["utmos"]
    if subset in ("sd-qa", "trivia_qa"):  # LLM-judged, no judge given: unscored, not failed
        assert summary["score"] is None and "--judge-model" in summary["note"]
    else:
        assert isinstance(summary["score"], float)
    if subset == "ifeval":
        assert {"prompt_strict", "instruction_loose"} <= set(summary)
    if name == "mmau":
        assert all(record["fields"]["choices"] == ["Man", "Woman", "Child", "Robot"] for record in records)


def _fac_eval(args: list[str], **kwargs) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    command = [sys.executable, "-m", "transformers_fac.evaluation.cli", *args]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)


def test_console_script_runs_a_custom_folder_offline(tmp_path):
    source = data.custom_jsonl(tmp_path / "mine", count=4)
    output = tmp_path / "out"
    process = _fac_eval(
        ["run", "--model", "tiny", "--benchmark", "custom", "--data-dir", str(source)]
        + ["--limit", "3", "--max-new-tokens", "6", "--output", str(output)]
    )
    log, _ = process.communicate(timeout=600)
    assert process.returncode == 0, log
    assert sorted(path.name for path in output.iterdir()) == [
        "audio",
        "predictions.jsonl",
        "results.json",
        "results.md",
    ]
    records = _records(output)
    assert [record["id"] for record in records] == ["q0", "q1", "q2"]
    assert [record["scores"]["score"] for record in records][1] is None  # q1 has no reference
    results = json.loads((output / "results.json").read_text())
    assert results["generated"] == 3 and results["subsets"]["custom"]["items"] == 3
    assert "| custom | reference match % |" in log  # the table is printed too


def test_an_interrupted_run_resumes_without_redoing_items(tmp_path):
    source = data.custom_jsonl(tmp_path / "mine", count=4)
    output = tmp_path / "out"
    args = ["run", "--model", "tiny", "--benchmark", "custom", "--data-dir", str(source), "--batch-size", "1"]
    args += ["--max-new-tokens", "20", "--output", str(output)]
    process = _fac_eval(args)
    predictions = output / "predictions.jsonl"
    deadline = time.monotonic() + 400
    while time.monotonic() < deadline and process.poll() is None:
        if predictions.is_file() and predictions.read_text().count("\n") >= 1:
            process.send_signal(signal.SIGINT)
            break
        time.sleep(0.05)
    log, _ = process.communicate(timeout=120)
    assert process.returncode != 0 and "interrupted" in log, log
    before = _records(output)
    assert 1 <= len(before) < 4, "the run finished before it could be interrupted"
    assert not (output / "results.json").exists()

    results = run_evaluation("tiny", "custom", output, data_dir=str(source), batch_size=1, max_new_tokens=20)

    after = _records(output)
    assert results["generated"] == 4 - len(before) and results["resumed"] == len(before)
    assert sorted(record["id"] for record in after) == ["q0", "q1", "q2", "q3"]
    for old, new in zip(before, after):  # the first replies were kept, not generated again
        assert (old["id"], old["text"], old["audio"]) == (new["id"], new["text"], new["audio"])


def test_a_judged_subset_against_a_real_endpoint(tmp_path):
    """OpenAudioBench AlpacaEval judged by `fac-serve --model tiny` (text replies): the random model never writes a
    "[[rating]]", so every judgement is counted unparseable and the run still completes."""
    questions = ["Give me three tips for sleeping well.", "What is a haiku?", "Name a prime number."]
    lines = [
        {
            "benchmark": "openaudiobench",
            "subset": "alpaca_eval",
            "id": str(index),
            "text": f"Answer {index}.",
            "raw_text": f"Answer {index}.",
            "audio": None,
            "error": None,
            "fields": {"instruction": question, "output": "A reference answer.", "audio_filename": f"{index}.mp3"},
        }
        for index, question in enumerate(questions)
    ]
    predictions = tmp_path / "predictions.jsonl"
    predictions.write_text("".join(json.dumps(line) + "\n" for line in lines))

    with running_server(["--model", "tiny", "--max-new-tokens", "8"], tmp_path / "server.log") as server:
        judge = Judge(f"{server.url}/v1", "fun-audio-chat", api_key="unused", max_tokens=8)
        results = score_predictions("openaudiobench", predictions, judge=judge)

    summary = results["subsets"]["alpaca_eval"]
    assert summary["items"] == 3 and summary["judge_errors"] == 0
    assert summary["unparseable"] == 3 and summary["score"] is None
    records = _records(tmp_path)
    assert all(isinstance(record["scores"]["judgement"], str) for record in records)
    assert "unparseable 3" in (tmp_path / "results.md").read_text()


def test_vstyle_spoken_replies_are_heard_by_a_real_judge_endpoint(tmp_path, monkeypatch):
    """VStyle on a three-item local copy: spoken replies (SPOKEN_S2M_PROMPT), each sent as WAV `input_audio` with
    the judging instruction to `fac-serve --model tiny`, which accepts it; the random model never writes a 1-5 score,
    so every judgement is counted unparseable and the run still completes."""
    from transformers_fac.evaluation.benchmark_data import load_items
    from transformers_fac.evaluation.runner import _system_prompt
    from transformers_fac.prompts import SPOKEN_S2M_PROMPT

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    source = data.vstyle(tmp_path / "vstyle")
    output = tmp_path / "out"

    with running_server(["--model", "tiny", "--max-new-tokens", "8"], tmp_path / "server.log") as server:
        judge = Judge(f"{server.url}/v1", "fun-audio-chat", api_key="unused", max_tokens=8)
        results = run_evaluation(
            "tiny", "vstyle", output, subset="en", data_dir=str(source), batch_size=3, max_new_tokens=6, judge=judge
        )

    summary = results["subsets"]["en"]
    assert summary["items"] == 3 and summary["paper"] == 3.35
    assert summary["judge_errors"] == 0 and summary["unspoken"] == 0
    assert summary["unparseable"] == 3 and summary["score"] is None
    records = _records(output)
    assert [record["id"] for record in records] == ["1", "11", "21"]
    assert all((output / record["audio"]).is_file() for record in records)
    assert all(isinstance(record["scores"]["judgement"], str) for record in records)
    assert "unparseable 3" in (output / "results.md").read_text()
    unjudged = run_evaluation("tiny", "vstyle", output, subset="en", data_dir=str(source))  # resumed, no judge
    assert unjudged["generated"] == 0 and "--judge-model" in unjudged["subsets"]["en"]["note"]
    vstyle = get_benchmark("vstyle")
    item = load_items(vstyle, vstyle.subset("en"), str(source), limit=1)[0]
    assert _system_prompt(vstyle, item) == SPOKEN_S2M_PROMPT and item.instruction is None
    assert item.fields["ability"] == "acoustic_attributes/speed" and Path(item.audio).is_file()


def test_cheap_checks_fail_before_the_model_loads(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match=r"voicebench/mmsu could not be loaded from the Hub .*--data-dir"):
        run_evaluation("tiny", "voicebench", tmp_path / "a", subset="mmsu", limit=2)
    with pytest.raises(ValueError, match="say which with --subset"):
        run_evaluation("tiny", "voicebench", tmp_path / "b", data_dir=str(tmp_path))
    with pytest.raises(ValueError, match="MMAU is not on the Hugging Face Hub"):
        run_evaluation("tiny", "mmau", tmp_path / "c")
    with pytest.raises(ValueError, match="Unknown benchmark 'voicebnech'"):
        run_evaluation("tiny", "voicebnech", tmp_path / "d")
    with pytest.raises(ValueError, match="has no subset 'sdqa'"):
        run_evaluation("tiny", "voicebench", tmp_path / "e", subset="sdqa")
    assert not (tmp_path / "a" / "predictions.jsonl").exists()


def test_replies_in_a_saved_voice_get_a_speaker_similarity(tmp_path, monkeypatch):
    from tests.serving_utils import save_test_voice
    from transformers_fac.audio_io import load_audio
    from transformers_fac.evaluation.voice_similarity import speaker_similarities
    from transformers_fac.tiny import tiny_checkpoint

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    source = data.custom_jsonl(tmp_path / "mine", count=2)
    voice = save_test_voice(tmp_path / "voices")
    with pytest.raises(ValueError, match="--voice"):
        run_evaluation("tiny", "custom", tmp_path / "bad", data_dir=str(source), voice="no-such-voice")

    results = run_evaluation(
        "tiny", "custom", tmp_path / "out", data_dir=str(source), voice=str(voice), max_new_tokens=30, batch_size=2
    )

    assert results["voice"] == str(voice)
    speech = results["subsets"]["custom"]["speech"]
    records = _records(tmp_path / "out")
    clips = [load_audio(tmp_path / "out" / record["audio"]) for record in records]
    expected = speaker_similarities(clips, str(voice), frontend_source=str(tiny_checkpoint() / "token2wav"))
    assert [record["scores"]["speaker_similarity"] for record in records] == pytest.approx(expected["per_clip"])
    assert speech["speaker_similarity"] == pytest.approx(expected["similarity"]) and -1 <= expected["similarity"] <= 1
    assert "speaker similarity" in (tmp_path / "out" / "results.md").read_text()


def test_mmsu_reads_every_split_and_the_instruction_formats(tmp_path):
    """VoiceBench's mmsu has one split per domain (all are read); MMAU items carry the report's instruction; ASR
    items the transcription instruction."""
    import datasets

    from transformers_fac.evaluation.benchmark_data import load_items
    from transformers_fac.prompts import ASR_INSTRUCTION

    clips = data.write_clips(tmp_path / "clips", 2)
    columns = {"prompt": ["q?", "q?"], "reference": ["A", "C"]}
    splits = {name: data.audio_dataset(columns, clips) for name in ("law", "physics")}
    datasets.DatasetDict(splits).save_to_disk(str(tmp_path / "mmsu"))
    voicebench = get_benchmark("voicebench")
    items = load_items(voicebench, voicebench.subset("mmsu"), str(tmp_path / "mmsu"))
    assert [item.fields["reference"] for item in items] == ["A", "C", "A", "C"] and items[0].instruction is None
    assert len(load_items(voicebench, voicebench.subset("mmsu"), str(tmp_path / "mmsu"), limit=3)) == 3

    mmau = get_benchmark("mmau")
    item = load_items(mmau, mmau.subsets[0], str(data.mmau_test_mini(tmp_path / "mmau")), limit=1)[0]
    assert item.id == "mmau-0" and item.instruction.endswith("(A)Man\n(B)Woman\n(C)Child\n(D)Robot")
    assert Path(item.audio).is_file()
    librispeech = get_benchmark("librispeech")
    source = str(data.librispeech_test_clean(tmp_path / "ls"))
    assert load_items(librispeech, librispeech.subsets[0], source)[0].instruction == ASR_INSTRUCTION


def test_an_adapter_is_merged_into_the_model_it_measures(tmp_path, monkeypatch):
    from transformers import AutoModelForMultimodalLM

    from transformers_fac.tiny import tiny_checkpoint
    from transformers_fac.training.lora import apply_lora

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    base = AutoModelForMultimodalLM.from_pretrained(tiny_checkpoint())
    adapter = tmp_path / "adapter"
    apply_lora(base, r=4, alpha=64, dropout=0.0, init_lora_weights=False).save_pretrained(adapter)  # random, nonzero
    dataset = data.audio_dataset({"prompt": ["How do I pick a lock?"] * 3}, data.write_clips(tmp_path / "clips"))
    dataset.save_to_disk(str(tmp_path / "advbench"))
    options = {"subset": "advbench", "data_dir": str(tmp_path / "advbench"), "max_new_tokens": 8, "temperature": 0}

    plain = run_evaluation("tiny", "voicebench", tmp_path / "plain", **options)
    adapted = run_evaluation("tiny", "voicebench", tmp_path / "adapted", adapter=str(adapter), **options)

    assert adapted["adapter"] == str(adapter) and plain["subsets"]["advbench"]["items"] == 3
    plain_texts = [record["text"] for record in _records(tmp_path / "plain")]
    assert [record["text"] for record in _records(tmp_path / "adapted")] != plain_texts
    with pytest.raises(FileNotFoundError, match="--adapter"):
        run_evaluation("tiny", "voicebench", tmp_path / "none", adapter=str(tmp_path / "missing"), **options)


def test_a_quantized_backbone_is_measured_through_the_same_switch(tmp_path, monkeypatch):
    """`fac-eval run --quantize int8`: the model it measures has its backbone quantized (and nothing else), the run
    answers every item and says it was quantized."""
    from transformers_fac.evaluation import model_loading
    from transformers_fac.evaluation.cli import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    loaded = []
    real_load = model_loading.load_model

    def keep(**options):
        loaded.append(real_load(**options))
        return loaded[-1]

    monkeypatch.setattr(model_loading, "load_model", keep)
    source = data.custom_jsonl(tmp_path / "mine", count=2)
    output = tmp_path / "out"
    args = ["run", "--model", "tiny", "--benchmark", "custom", "--data-dir", str(source), "--quantize", "int8"]
    main([*args, "--max-new-tokens", "12", "--output", str(output)])
    model = loaded[0][0]
    quantized = {
        name for name, module in model.named_modules() if "Int8" in type(getattr(module, "weight", None)).__name__
    }
    assert quantized and all(name.startswith("language_model.model.layers.") for name in quantized)
    results = json.loads((output / "results.json").read_text())
    assert results["quantize"] == "int8" and results["subsets"]["custom"]["items"] == 2
    with pytest.raises(SystemExit):
        main([*args[:-1], "int3", "--output", str(output)])
