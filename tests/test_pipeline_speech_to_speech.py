from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import AUDIO_FILES, TINY_FAC, read_audio
from transformers import pipeline

from transformers_fac.audio_io import AudioInputError
from transformers_fac.pipeline_speech_to_speech import FunAudioChatSpeechToSpeechPipeline

TEXT = dict(generation_mode="text", max_new_tokens=6, do_sample=False)


@pytest.fixture(scope="module")
def text_pipe():
    return pipeline("speech-to-speech", model=str(TINY_FAC))


def test_registered_under_both_task_names(text_pipe):
    assert isinstance(text_pipe, FunAudioChatSpeechToSpeechPipeline)
    assert isinstance(pipeline("audio-to-audio", model=str(TINY_FAC)), FunAudioChatSpeechToSpeechPipeline)


def test_text_mode_on_every_input_form(text_pipe, tiny_model):
    from datasets import Audio, Dataset

    path = str(AUDIO_FILES["long"])
    waveform = read_audio("long")
    reference = text_pipe(path, **TEXT)
    assert set(reference) == {"text"} and reference["text"]
    dataset = Dataset.from_dict({"audio": [path]}).cast_column("audio", Audio(sampling_rate=16000))
    forms = [
        waveform,
        {"array": waveform, "sampling_rate": 16000},
        {"raw": waveform, "sampling_rate": 16000},
        Path(path).read_bytes(),
        dataset[0]["audio"],
    ]
    for form in forms:
        assert text_pipe(form, **TEXT) == reference


def test_batch_gives_a_list(text_pipe):
    outputs = text_pipe([str(AUDIO_FILES["en"]), str(AUDIO_FILES["zh"])], **TEXT)
    assert isinstance(outputs, list) and len(outputs) == 2 and all(set(o) == {"text"} for o in outputs)
    assert outputs[0] == text_pipe(str(AUDIO_FILES["en"]), **TEXT)


def test_chat_input_for_multi_turn(text_pipe):
    chat = [
        {"role": "user", "content": [{"type": "audio", "path": str(AUDIO_FILES["en"])}]},
        {"role": "assistant", "content": "Hello there."},
        {"role": "user", "content": [{"type": "audio", "audio": read_audio("zh")}]},
    ]
    reply = text_pipe(chat, **TEXT)
    assert set(reply) == {"text"} and reply["text"]


@pytest.mark.parametrize(
    ("audio", "options", "message"),
    [
        ("missing.wav", {}, "missing.wav"),
        (np.zeros(32000, dtype=np.float32), {}, "silence"),
        (np.full(32000, 1e-5, dtype=np.float32), {}, "silent"),
        (np.full(32000, np.nan, dtype=np.float32), {}, "NaN"),
        (np.ones((2, 2, 100), dtype=np.float32), {}, "rank|dimension"),
        (AUDIO_FILES["en"], {"generation_mode": "video"}, "generation_mode"),
        (AUDIO_FILES["en"], {"generation_mode": "text", "voice": "中文女"}, "`voice` chooses the voice"),
    ],
)
def test_bad_inputs_give_clear_errors(text_pipe, audio, options, message):
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        text_pipe(str(audio) if not isinstance(audio, np.ndarray) else audio, **{"max_new_tokens": 2, **options})


def test_non_audio_file_is_rejected(text_pipe, tmp_path):
    bogus = tmp_path / "notes.wav"
    bogus.write_text("this is not audio")
    with pytest.raises(AudioInputError, match="notes.wav"):
        text_pipe(str(bogus), **TEXT)


def test_audio_mode_without_a_decoder_says_how_to_fix(text_pipe, tmp_path):
    path = tmp_path / "q.wav"
    sf.write(path, read_audio("en"), 16000)
    with pytest.raises(ValueError, match="token2wav"):
        text_pipe(str(path), max_new_tokens=2)
