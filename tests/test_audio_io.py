"""Audio input forms (paths, arrays, tensors, tuples, dicts, datasets values, decoders), resampling, down-mixing and
validation, through `transformers_fac.audio_io` and through the processor."""

import base64
import math
from pathlib import Path
from types import SimpleNamespace

import datasets
import numpy as np
import pytest
import soundfile
import soxr
import torch

from tests.processing_test_utils import (
    AUDIO_FILES,
    assert_matches_golden,
    golden_inputs,
    prompt,
    read_wav,
    tiny_processor,
)
from transformers_fac._compat import hide_broken_torchaudio
from transformers_fac.audio_io import (
    AudioInputError,
    check_sampling_rate,
    is_silent,
    load_audio,
    resample,
    to_float_array,
    to_mono,
    validate_waveform,
)


class FakeAudioDecoder:
    """The torchcodec `AudioDecoder` interface that `datasets.Audio` decodes to: `get_all_samples()` and dict access."""

    def __init__(self, channels_first: np.ndarray, sample_rate: int):
        self._samples = SimpleNamespace(data=torch.from_numpy(channels_first), sample_rate=sample_rate)

    def get_all_samples(self):
        return self._samples

    def __getitem__(self, key):
        return {"array": self._samples.data.mean(0).numpy(), "sampling_rate": self._samples.sample_rate}[key]


def _torchcodec_decodes() -> bool:
    try:
        from torchcodec.decoders import AudioDecoder  # noqa: F401
    except Exception:  # broken builds raise OSError/RuntimeError, not only ImportError
        return False
    return True


def _exact_forms() -> dict[str, object]:
    """Inputs that must give exactly the `en` waveform."""
    wav = read_wav("en")
    return {
        "path str": str(AUDIO_FILES["en"]),
        "path object": AUDIO_FILES["en"],
        "float32 array": wav,
        "float64 array": wav.astype(np.float64),
        "list of floats": wav.tolist(),
        "torch tensor": torch.from_numpy(wav.copy()),
        "int16 pcm": soundfile.read(AUDIO_FILES["en"], dtype="int16")[0],
        "tuple (array, rate)": (wav, 16000),
        "tuple (rate, array)": (16000, wav),
        "dict array": {"array": wav, "sampling_rate": 16000},
        "dict raw": {"raw": wav, "sampling_rate": 16000},
        "dict path": {"path": str(AUDIO_FILES["en"])},
        "dict bytes": {"bytes": AUDIO_FILES["en"].read_bytes(), "path": None},
        "bytes": AUDIO_FILES["en"].read_bytes(),
        "data uri": "data:audio/wav;base64," + base64.b64encode(AUDIO_FILES["en"].read_bytes()).decode(),
        "stereo (samples, channels)": np.stack([wav, wav], axis=1),
        "stereo (channels, samples)": np.stack([wav, wav], axis=0),
        "stereo tensor": torch.from_numpy(np.stack([wav, wav], axis=0)),
        "decoder": FakeAudioDecoder(np.stack([wav, wav]), 16000),
    }


@pytest.mark.parametrize("form", list(_exact_forms()))
def test_every_input_form_gives_the_same_waveform_and_golden_inputs(form):
    audio = _exact_forms()[form]
    waveform = load_audio(audio)
    assert waveform.dtype == np.float32 and waveform.ndim == 1
    np.testing.assert_allclose(waveform, read_wav("en"), rtol=0, atol=1e-7)
    assert_matches_golden(tiny_processor()(text=prompt(), audio=[audio], return_tensors="pt"), golden_inputs("s2t_en"))


def test_single_audio_without_list():
    outputs = tiny_processor()(text=prompt(), audio=read_wav("en"), return_tensors="pt")
    assert_matches_golden(outputs, golden_inputs("s2t_en"))
    outputs = tiny_processor()(text=prompt(), audio=(read_wav("en"), 16000), return_tensors="pt")
    assert_matches_golden(outputs, golden_inputs("s2t_en"))


def test_datasets_audio_column_values():
    """A real `datasets.Dataset` with an `Audio(sampling_rate=16000)` column built from the fixture wavs. The decoded
    value needs a working torchcodec; where it cannot load, the column is read undecoded ({"path", "bytes"})."""
    decode = _torchcodec_decodes()
    paths = [str(AUDIO_FILES["en"]), str(AUDIO_FILES["zh"])]
    dataset = datasets.Dataset.from_dict({"audio": paths}).cast_column(
        "audio", datasets.Audio(sampling_rate=16000, decode=decode)
    )
    embedded = datasets.Dataset.from_dict(
        {"audio": [{"bytes": Path(path).read_bytes(), "path": None} for path in paths]}
    ).cast_column("audio", datasets.Audio(sampling_rate=16000, decode=decode))
    for column in (dataset["audio"], embedded["audio"]):
        outputs = tiny_processor()(text=[prompt()] * 2, audio=list(column), return_tensors="pt")
        assert_matches_golden(outputs, golden_inputs("s2t_batch"))


def test_resampling_from_44k():
    wav = read_wav("en")
    wav_44k = soxr.resample(wav, 16000, 44100, quality="HQ")
    back = load_audio((wav_44k, 44100))
    assert len(back) == math.ceil(len(wav_44k) * 16000 / 44100)
    assert np.abs(back[: len(wav)] - wav).mean() < 1e-3
    processor = tiny_processor()
    for call in (
        lambda: processor(text=prompt(), audio=[(wav_44k, 44100)], return_tensors="pt"),
        lambda: processor(text=prompt(), audio=[wav_44k], sampling_rate=44100, return_tensors="pt"),
        lambda: processor(text=prompt(), audio=[{"array": wav_44k, "sampling_rate": 44100}], return_tensors="pt"),
    ):
        outputs = call()
        expected = golden_inputs("s2t_en")
        for name in ("input_ids", "speech_ids", "speech_attention_mask", "feature_attention_mask"):
            assert torch.equal(outputs[name].to(expected[name].dtype), expected[name]), name
        difference = (outputs["input_features"] - golden_inputs("train")["input_features"]).abs().mean()
        assert difference < 1e-2


def test_downmix_layouts_and_values():
    left = np.linspace(-1, 1, 1000, dtype=np.float32)
    right = np.zeros(1000, dtype=np.float32)
    expected = (left + right) / 2
    np.testing.assert_allclose(to_mono(np.stack([left, right], axis=1)), expected)
    np.testing.assert_allclose(to_mono(np.stack([left, right], axis=0)), expected)
    six_channels = np.stack([left] * 6, axis=1)
    np.testing.assert_allclose(to_mono(six_channels), left, atol=1e-6)
    with pytest.raises(AudioInputError, match="channel axis"):
        to_mono(np.zeros((100, 200), dtype=np.float32))


def test_integer_pcm_is_scaled():
    assert to_float_array(np.array([0, 16384, -32768], dtype=np.int16)).tolist() == [0.0, 0.5, -1.0]
    assert to_float_array(np.array([128, 255, 0], dtype=np.uint8)).tolist() == [0.0, 127 / 128, -1.0]
    with pytest.raises(AudioInputError, match="real numbers"):
        to_float_array(np.array([True, False]))
    with pytest.raises(AudioInputError, match="real numbers"):
        to_float_array(torch.ones(4, dtype=torch.complex64))
    assert to_float_array(torch.ones(3, dtype=torch.bfloat16)).dtype == np.float32


def test_validation_and_silence():
    wav = read_wav("en")
    assert validate_waveform(wav) is wav
    assert validate_waveform(np.zeros(10, dtype=np.float32), allow_silent=True).size == 10
    with pytest.raises(AudioInputError, match="all zeros"):
        validate_waveform(np.zeros(10, dtype=np.float32))
    with pytest.raises(AudioInputError, match="1 NaN"):
        validate_waveform(np.array([0.1, np.nan, 0.2], dtype=np.float32))
    assert is_silent(np.zeros(16000)) and is_silent(np.zeros(0)) and is_silent(1e-4 * np.ones(100))
    assert not is_silent(wav)
    assert not is_silent(1e-4 * np.ones(100), threshold_db=-90)
    assert check_sampling_rate(44100.0) == 44100.0
    for rate in (0, -1, True, None, float("inf")):
        with pytest.raises(AudioInputError, match="positive number"):
            check_sampling_rate(rate)


def test_loading_errors_name_the_source(tmp_path):
    with pytest.raises(AudioInputError, match="not found: .*nope.wav"):
        load_audio(str(tmp_path / "nope.wav"))
    with pytest.raises(AudioInputError, match="not a file"):
        load_audio(tmp_path)
    text_file = tmp_path / "readme.md"
    text_file.write_text("# not audio\n" * 100)
    with pytest.raises(AudioInputError, match="readme.md"):
        load_audio(str(text_file))
    with pytest.raises(AudioInputError, match="'sampling_rate'"):
        load_audio({"array": read_wav("en")})
    with pytest.raises(AudioInputError, match="needs 'array'"):
        load_audio({"foo": 1})
    with pytest.raises(AudioInputError, match="None"):
        load_audio(None)


def test_resample_identity_and_length():
    wav = read_wav("en")
    assert resample(wav, 16000, 16000) is wav
    assert resample(wav, 8000, 16000).shape == (2 * len(wav),)


def test_hide_broken_torchaudio_is_idempotent():
    first = hide_broken_torchaudio()
    assert hide_broken_torchaudio() is first
