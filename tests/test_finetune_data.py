"""Data preparation: datasets with Audio columns → training examples (speech codes, bad rows, tasks, lengths)."""

import json
import pickle
import sys

import datasets  # noqa: E402
import numpy as np
import pytest
import torch
from conftest import AUDIO_FILES, TINY_FAC, read_audio
from transformers import AutoProcessor

from transformers_fac import S2M_SYSTEM_PROMPT, S2T_SYSTEM_PROMPT
from transformers_fac.prompts import ASR_INSTRUCTION, parse_tool_calls
from transformers_fac.training import (
    FunAudioChatDataCollator,
    SpeechCodeTokenizer,
    format_tool_calls,
    import_s3tokenizer,
    prepare_dataset,
    split_windows,
)

TINY_TOKENIZER = {"n_audio_state": 64, "n_audio_head": 1, "n_audio_layer": 1}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]


@pytest.fixture(scope="module")
def processor():
    return AutoProcessor.from_pretrained(TINY_FAC)


@pytest.fixture(scope="module")
def speech_tokenizer():
    return SpeechCodeTokenizer.random(seed=0, **TINY_TOKENIZER)


@pytest.fixture(scope="module")
def smoke_rows(tmp_path_factory):
    from finetune.build_smoke_data import build_smoke_dataset

    return build_smoke_dataset(tmp_path_factory.mktemp("smoke"), rows=4, bad_rows=True)


def test_s2s_rows_become_examples_and_bad_rows_are_skipped(smoke_rows, speech_tokenizer, processor, caplog):
    prepared, skipped = prepare_dataset(
        smoke_rows,
        task="s2s",
        user_audio_column="question",
        reply_column="answer",
        assistant_audio_column="answer_audio",
        speech_tokenizer=speech_tokenizer,
        processor=processor,
        num_proc=2,
        return_skipped=True,
    )
    assert len(prepared) == 4 and [row.index for row in skipped] == [4, 5, 6, 7]
    reasons = [row.reason for row in skipped]
    assert "user audio" in reasons[0] and "empty" in reasons[0]
    assert "all zeros" in reasons[1]
    assert "not found" in reasons[2] and reasons[2].startswith("user audio")
    assert reasons[3] == "reply is empty."
    assert "Skipped 4 of 8 rows" in caplog.text
    row = prepared[0]
    assert row["system"] == S2M_SYSTEM_PROMPT and row["reply"] == smoke_rows[0]["answer"]
    # 25 codes per second of the (24 kHz file of the) spoken reply, computed as the real tokenizer would be used
    answer = smoke_rows[0]["answer_audio"].get_all_samples()
    seconds = answer.data.shape[-1] / answer.sample_rate
    assert abs(len(row["speech_codes"]) - seconds * 25) <= 1
    assert row["speech_codes"] == speech_tokenizer(smoke_rows[0]["answer_audio"])
    # user audio comes back at 16 kHz whatever the file's rate (files are written at 16, 22.05, 24, 44.1 kHz)
    assert {prepared[i]["user_audio"].get_all_samples().sample_rate for i in range(4)} == {16000}
    # `length` is the exact number of LLM tokens the collator produces
    batch = FunAudioChatDataCollator(processor)([prepared[i] for i in range(4)])
    assert batch["attention_mask"].sum(-1).tolist() == prepared["length"]


def test_missing_columns_are_named(smoke_rows):
    with pytest.raises(ValueError, match=r"reply_column='reply'.*columns \['question', 'answer', 'answer_audio'\]"):
        prepare_dataset(smoke_rows, task="s2s", user_audio_column="question", codes_column="answer")
    with pytest.raises(ValueError, match="assistant_audio_column or codes_column"):
        prepare_dataset(smoke_rows, task="s2s", user_audio_column="question", reply_column="answer")
    with pytest.raises(ValueError, match="task must be one of"):
        prepare_dataset(smoke_rows, task="tts", user_audio_column="question", reply_column="answer")


def in_memory_rows(**columns):
    rows = datasets.Dataset.from_dict({"audio": [str(AUDIO_FILES["en"]), str(AUDIO_FILES["zh"])], **columns})
    return rows.cast_column("audio", datasets.Audio())


def test_text_targets_with_an_instruction():
    rows = in_memory_rows(text=["What is the capital of France?", "你好"])
    prepared = prepare_dataset(
        rows, task="s2t", user_audio_column="audio", reply_column="text", instruction=ASR_INSTRUCTION
    )
    assert prepared[0]["system"] == S2T_SYSTEM_PROMPT and prepared[0]["speech_codes"] == []
    assert prepared[0]["messages"] == [
        {"role": "user", "content": "<|audio_bos|><|AUDIO|><|audio_eos|>\n" + ASR_INSTRUCTION},
        {"role": "assistant", "content": "What is the capital of France?"},
    ]


def test_function_calling_examples(processor):
    calls = [[{"name": "get_weather", "arguments": {"city": "Paris"}}], [{"name": "get_weather", "arguments": "{}"}]]
    rows = in_memory_rows(tools=[json.dumps(TOOLS)] * 2, calls=[json.dumps(call) for call in calls])
    prepared = prepare_dataset(
        rows, task="function_calling", user_audio_column="audio", reply_column=None, tools_column="tools",
        tool_calls_column="calls",
    )  # fmt: skip
    system, reply = prepared[0]["system"], prepared[0]["reply"]
    assert system.startswith(S2T_SYSTEM_PROMPT) and json.dumps(TOOLS[0]) in system
    assert reply == '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    assert parse_tool_calls(prepared[1]["reply"]) == [{"name": "get_weather", "arguments": {}}]
    batch = FunAudioChatDataCollator(processor)([prepared[0]])
    learned = batch["input_ids"][0][batch["labels"][0] != -100]
    assert processor.decode(learned) == reply + "<|im_end|>"


def test_precomputed_codes_are_checked():
    rows = in_memory_rows(reply=["Hi.", "Hello."], codes=[[1, 2, 3], [1, 7000]])
    prepared, skipped = prepare_dataset(
        rows, task="s2s", user_audio_column="audio", codes_column="codes", return_skipped=True
    )
    assert prepared["speech_codes"] == [[1, 2, 3]]
    assert [row.index for row in skipped] == [1] and "0..6560" in skipped[0].reason


def test_format_tool_calls_round_trip():
    calls = [{"name": "a", "arguments": {"x": 1}}, {"name": "b", "arguments": {"y": "二"}}]
    assert parse_tool_calls(format_tool_calls(calls)) == calls
    assert format_tool_calls(json.dumps(calls)) == format_tool_calls(calls)
    with pytest.raises(ValueError, match="'name'"):
        format_tool_calls([{"arguments": {}}])


def test_windows_follow_the_official_rule():
    rate = 16000
    assert [len(w) for w in split_windows(np.zeros(rate * 45))] == [rate * 30, rate * 15]
    # a last window under 1 s is merged with the previous one and the pair is split in halves
    assert [len(w) for w in split_windows(np.zeros(rate * 60 + rate // 2))] == [rate * 30, 244000, 244000]
    assert [len(w) for w in split_windows(np.zeros(rate // 2))] == [rate // 2]


def test_speech_tokenizer_codes(speech_tokenizer):
    waveform = read_audio("en")
    codes = speech_tokenizer(waveform)
    assert len(codes) == int(len(waveform) / 16000 * 25) and all(0 <= code < 6561 for code in codes)
    assert SpeechCodeTokenizer.random(seed=0, **TINY_TOKENIZER)(waveform) == codes  # seeded: same weights
    # long audio: 30 s windows, codes concatenated; batching windows does not change them
    long = np.tile(waveform, 8)[: 16000 * 35]
    assert speech_tokenizer(long) == speech_tokenizer(long[: 16000 * 30]) + speech_tokenizer(long[16000 * 30 :])
    assert speech_tokenizer.batch_encode([waveform, long]) == [codes, speech_tokenizer(long)]
    # resampled: 44.1 kHz input gives 25 codes per second too
    assert len(speech_tokenizer((np.tile(waveform, 3)[:44100], 44100))) == 25


def test_speech_tokenizer_pickles_without_weights(speech_tokenizer):
    speech_tokenizer(read_audio("en")[:16000])
    assert speech_tokenizer._model is not None
    clone = pickle.loads(pickle.dumps(speech_tokenizer))
    assert clone._model is None and clone.to_dict() == speech_tokenizer.to_dict()
    assert len(pickle.dumps(speech_tokenizer)) < 2000


def test_s3tokenizer_import_leaves_torchaudio_alone(monkeypatch):
    for name in [name for name in sys.modules if name.startswith(("s3tokenizer", "torchaudio"))]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "torchaudio", None)  # what hide_broken_torchaudio sets for a broken one
    module = import_s3tokenizer()
    assert sys.modules["torchaudio"] is None
    with pytest.raises(ImportError, match="transformers_fac.audio_io.load_audio"):
        module.load_audio("x.wav")
    assert torch.is_tensor(module.log_mel_spectrogram(torch.zeros(16000), 128))
