"""Audio input handling for Fun-Audio-Chat: loading, down-mixing, resampling and validation.

Every function returns or checks a **mono float32 waveform at 16 kHz**, the format the processor, the pipeline, the CLI
and the demo feed to the model. Bad inputs raise `AudioInputError` (a `ValueError`) with a message that names the
input.

Accepted inputs of `load_audio` (one audio):

- a waveform: `np.ndarray`, `torch.Tensor` or a list of floats, at `sampling_rate` (default 16 kHz). Float arrays are
  taken as they are; integer arrays are PCM and scaled to [-1, 1) by their type's range (int16 / 32768, ...).
- a 2-D waveform (several channels), down-mixed by averaging the channels. The channel axis is the **smaller**
  dimension: `(samples, channels)` as soundfile returns and `(channels, samples)` as torch/torchcodec return are both
  understood; a square array is read as `(channels, samples)`. More than `MAX_CHANNELS` channels is an error.
- a path (`str` or `os.PathLike`) to an audio file (wav, flac, ogg and mp3 through soundfile; any other format through
  the `ffmpeg` program when it is installed), an `http(s)://` URL or a `data:` URI (through
  `transformers.audio_utils.load_audio`), or the bytes of an encoded file.
- `(waveform, sampling_rate)` or `(sampling_rate, waveform)` (the Gradio numpy format).
- a dict `{"array" | "raw": waveform, "sampling_rate": int}` (the transformers pipelines' format), or
  `{"bytes": ..., "path": ...}` / `{"path": ...}` (a `datasets.Audio(decode=False)` value).
- a decoded `datasets.Audio` value or any torchcodec `AudioDecoder` (anything with `get_all_samples()`, or with
  `["array"]` and `["sampling_rate"]`).

Example:
    >>> import numpy as np
    >>> from transformers_fac.audio_io import load_audio
    >>> stereo_44k = np.stack([np.sin(np.arange(44100) / 10.0)] * 2, axis=1).astype(np.float32)  # (samples, channels)
    >>> wav = load_audio((stereo_44k, 44100))
    >>> wav.shape, wav.dtype
    ((16000,), dtype('float32'))
"""

import io
import math
import os
import shutil
from collections.abc import Mapping
from typing import Any

import numpy as np

SAMPLING_RATE = 16000
"""The sampling rate of the model's audio input (Hz)."""

MAX_CHANNELS = 32
"""The most channels a 2-D waveform may have; a larger smaller-dimension means the layout is not a waveform."""

DEFAULT_SILENCE_THRESHOLD_DB = -60.0
"""`is_silent` calls a waveform silent when its RMS level is below this (dB relative to full scale)."""


class AudioInputError(ValueError):
    """An audio input that cannot be used: unreadable, malformed, empty, silent or out of range."""


def _describe(source: Any) -> str:
    """A short printable name for an audio source (paths in full, long strings and data URIs cut)."""
    if isinstance(source, (str, os.PathLike)):
        text = os.fspath(source)
        return repr(text if len(text) <= 200 else text[:80] + "...")
    return type(source).__name__


def check_sampling_rate(sampling_rate: Any, name: str = "audio") -> float:
    """Return `sampling_rate` as a number after checking that it is a finite positive number.

    Example:
        >>> check_sampling_rate(16000)
        16000
    """
    if isinstance(sampling_rate, (bool, np.bool_)) or not isinstance(
        sampling_rate, (int, float, np.integer, np.floating)
    ):
        raise AudioInputError(f"{name}: sampling_rate must be a positive number, got {sampling_rate!r}.")
    if not math.isfinite(sampling_rate) or sampling_rate <= 0:
        raise AudioInputError(f"{name}: sampling_rate must be a positive number, got {sampling_rate!r}.")
    return sampling_rate.item() if isinstance(sampling_rate, (np.integer, np.floating)) else sampling_rate


def to_float_array(waveform: Any, name: str = "audio") -> np.ndarray:
    """Convert a waveform (numpy array, torch tensor, list of numbers) to a float32 array of rank 1 or 2.

    Integer samples are PCM: signed types are divided by 2**(bits-1), unsigned ones centred first.

    Example:
        >>> to_float_array(np.array([0, 16384, -32768], dtype=np.int16)).tolist()
        [0.0, 0.5, -1.0]
    """
    if hasattr(waveform, "detach") and hasattr(waveform, "cpu"):  # torch.Tensor, without importing torch
        if waveform.is_complex():
            raise AudioInputError(f"{name}: audio samples must be real numbers, got a {waveform.dtype} tensor.")
        waveform = waveform.detach().cpu()
        waveform = waveform.numpy() if not waveform.is_floating_point() else waveform.float().numpy()
    try:
        array = np.asarray(waveform)
    except (ValueError, TypeError) as error:
        raise AudioInputError(f"{name}: cannot read a waveform from a {type(waveform).__name__} ({error}).") from error
    if array.dtype.kind in "iu":
        bits = array.dtype.itemsize * 8
        offset = 2.0 ** (bits - 1) if array.dtype.kind == "u" else 0.0
        array = (array.astype(np.float64) - offset) / 2.0 ** (bits - 1)
    elif array.dtype.kind != "f":
        raise AudioInputError(
            f"{name}: audio samples must be real numbers (a float or integer array), got dtype {array.dtype}."
        )
    if array.ndim not in (1, 2):
        raise AudioInputError(
            f"{name}: a waveform must have 1 dimension (samples) or 2 (samples and channels), got shape {array.shape}."
        )
    return np.ascontiguousarray(array, dtype=np.float32)


def to_mono(waveform: np.ndarray, name: str = "audio") -> np.ndarray:
    """Down-mix a 1-D or 2-D float waveform to mono by averaging the channels.

    The channel axis is the smaller dimension (`(samples, channels)` and `(channels, samples)` both work; a square array
    is read as `(channels, samples)`).

    Example:
        >>> to_mono(np.array([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]], dtype=np.float32)).tolist()  # (samples, channels)
        [0.5, 0.5, 0.5]
    """
    if waveform.ndim == 1:
        return waveform
    if waveform.size == 0:
        return np.zeros(0, dtype=np.float32)
    rows, columns = waveform.shape
    if min(rows, columns) > MAX_CHANNELS:
        raise AudioInputError(
            f"{name}: cannot tell the channel axis of a waveform of shape {waveform.shape}: both dimensions exceed "
            f"{MAX_CHANNELS}. Pass one waveform per audio (1-D), or (samples, channels) / (channels, samples)."
        )
    channel_axis = 0 if rows <= columns else 1
    return np.ascontiguousarray(waveform.mean(axis=channel_axis, dtype=np.float32))


def resample(waveform: np.ndarray, orig_sampling_rate: float, target_sampling_rate: int = SAMPLING_RATE) -> np.ndarray:
    """Resample a mono waveform with soxr (high quality), to `ceil(len * target / orig)` samples like `librosa.load`.

    Example:
        >>> resample(np.zeros(44100, dtype=np.float32), 44100, 16000).shape
        (16000,)
    """
    if orig_sampling_rate == target_sampling_rate or waveform.size == 0:
        return waveform
    import soxr

    num_samples = math.ceil(waveform.shape[-1] * target_sampling_rate / orig_sampling_rate)
    resampled = soxr.resample(waveform, orig_sampling_rate, target_sampling_rate, quality="HQ")
    resampled = np.pad(resampled, (0, max(0, num_samples - len(resampled))))[:num_samples]
    return np.ascontiguousarray(resampled, dtype=np.float32)


def validate_waveform(waveform: np.ndarray, name: str = "audio", allow_silent: bool = False) -> np.ndarray:
    """Check that a mono float waveform is usable: 1-D, non-empty, finite and (unless `allow_silent`) not all zeros.

    Returns the waveform unchanged. Use `is_silent` for a level-based silence test.

    Example:
        >>> validate_waveform(np.zeros(16000, dtype=np.float32))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        transformers_fac.audio_io.AudioInputError: audio: the waveform is all zeros (digital silence, 16000 samples); ...
    """
    if waveform.ndim != 1:
        raise AudioInputError(f"{name}: expected a mono (1-D) waveform, got shape {waveform.shape}.")
    if waveform.size == 0:
        raise AudioInputError(f"{name}: the audio is empty (0 samples).")
    finite = np.isfinite(waveform)
    if not finite.all():
        bad = int(waveform.size - np.count_nonzero(finite))
        raise AudioInputError(
            f"{name}: the waveform contains {bad} NaN or infinite sample(s) out of {waveform.size}; "
            "audio samples must be finite numbers."
        )
    if not allow_silent and not np.any(waveform):
        raise AudioInputError(
            f"{name}: the waveform is all zeros (digital silence, {waveform.size} samples); "
            "there is no speech to process. Check the microphone or the file."
        )
    return waveform


def is_silent(waveform: Any, threshold_db: float = DEFAULT_SILENCE_THRESHOLD_DB) -> bool:
    """Whether a waveform is silent: empty, or its RMS level is below `threshold_db` dBFS (default -60 dB).

    Callers (pipeline, CLI, demo) can use it to reject near-silent recordings before running the model; the processor
    itself only rejects exact digital silence (all zeros).

    Example:
        >>> is_silent(np.zeros(100)), is_silent(1e-5 * np.ones(100)), is_silent(0.1 * np.ones(100))
        (True, True, False)
    """
    array = to_float_array(waveform, name="is_silent")
    if array.size == 0:
        return True
    rms = float(np.sqrt(np.mean(np.square(array, dtype=np.float64))))
    return rms == 0.0 or 20.0 * math.log10(rms) < threshold_db


def _decode_with_ffmpeg(data: bytes, target_sampling_rate: int, what: str) -> np.ndarray:
    if shutil.which("ffmpeg") is None:
        raise AudioInputError(f"could not decode {what}: not a format soundfile reads, and ffmpeg is not installed.")
    from transformers.pipelines.audio_utils import ffmpeg_read

    try:
        return ffmpeg_read(data, target_sampling_rate)
    except ValueError as error:
        raise AudioInputError(f"could not decode {what}: it is not an audio file ({error}).") from error


def _decode_encoded(data: bytes | str, target_sampling_rate: int, what: str) -> np.ndarray:
    """Decode an encoded audio file (path or bytes) to mono float32 at the target rate."""
    import soundfile

    try:
        with soundfile.SoundFile(io.BytesIO(data) if isinstance(data, bytes) else data) as handle:
            sampling_rate = handle.samplerate
            waveform = handle.read(dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, TypeError):
        if isinstance(data, str):
            with open(data, "rb") as handle:
                data = handle.read()
        return _decode_with_ffmpeg(data, target_sampling_rate, what)
    waveform = waveform.mean(axis=1) if waveform.shape[1] > 1 else waveform[:, 0]
    return resample(np.ascontiguousarray(waveform), sampling_rate, target_sampling_rate)


def _load_file(path: str | os.PathLike, target_sampling_rate: int) -> np.ndarray:
    path = os.fspath(path)
    if path.startswith(("http://", "https://", "data:")):
        from transformers.audio_utils import load_audio as transformers_load_audio

        try:
            return transformers_load_audio(path, sampling_rate=target_sampling_rate)
        except Exception as error:  # network, decoding and base64 errors all mean the same to the caller
            raise AudioInputError(f"could not load audio from {_describe(path)}: {error}") from error
    if not os.path.exists(path):
        raise AudioInputError(f"audio file not found: {path!r}.")
    if not os.path.isfile(path):
        raise AudioInputError(f"audio path is not a file: {path!r}.")
    return _decode_encoded(path, target_sampling_rate, f"audio file {path!r}")


def _split_pair(pair: tuple | list, name: str) -> tuple[Any, Any]:
    """`(waveform, rate)` or `(rate, waveform)` -> `(waveform, rate)`."""
    first, second = pair
    if isinstance(first, (int, float, np.integer, np.floating)) and not isinstance(first, bool):
        return second, first
    return first, second


def _from_mapping(item: Mapping, target_sampling_rate: int, name: str) -> tuple[Any, Any]:
    for key in ("array", "raw"):
        if key in item and item[key] is not None:
            for rate_key in ("sampling_rate", "sample_rate"):
                if item.get(rate_key) is not None:
                    return item[key], item[rate_key]
            raise AudioInputError(f"{name}: a dict with {key!r} also needs a 'sampling_rate' key.")
    if item.get("bytes"):
        return _decode_encoded(bytes(item["bytes"]), target_sampling_rate, f"{name} bytes"), target_sampling_rate
    if item.get("path"):
        return _load_file(item["path"], target_sampling_rate), target_sampling_rate
    raise AudioInputError(
        f"{name}: a dict audio input needs 'array' (or 'raw') with 'sampling_rate', 'bytes' or 'path'; "
        f"got keys {sorted(item)}."
    )


def _from_decoder(decoder: Any) -> tuple[Any, Any]:
    """A torchcodec `AudioDecoder` (also what `datasets.Audio` decodes to): all samples, `(channels, samples)`."""
    samples = decoder.get_all_samples()
    return samples.data, samples.sample_rate


def load_audio(
    audio: Any,
    sampling_rate: float | None = None,
    target_sampling_rate: int = SAMPLING_RATE,
    name: str = "audio",
    validate: bool = True,
) -> np.ndarray:
    """Load one audio input of any supported form (see the module docstring) as mono float32 at 16 kHz.

    Args:
        audio: the audio: waveform, path/URL/data URI, bytes, `(waveform, rate)`, dict, or a datasets/torchcodec
            decoder.
        sampling_rate: the rate of a bare waveform (ignored for inputs that carry their own rate); default 16 kHz.
        target_sampling_rate: the output rate.
        name: how error messages call this input (e.g. `"audio[1]"`).
        validate: run `validate_waveform` on the result (non-empty, finite, not all zeros).

    Example:
        >>> wav = load_audio({"array": np.ones(8000, dtype=np.float32), "sampling_rate": 8000})
        >>> wav.shape
        (16000,)
    """
    rate: Any = sampling_rate if sampling_rate is not None else target_sampling_rate
    waveform: Any = audio
    if isinstance(audio, (str, os.PathLike)):
        waveform, rate = _load_file(audio, target_sampling_rate), target_sampling_rate
    elif isinstance(audio, (bytes, bytearray, memoryview)):
        waveform, rate = _decode_encoded(bytes(audio), target_sampling_rate, f"{name} bytes"), target_sampling_rate
    elif isinstance(audio, tuple) and len(audio) == 2:
        waveform, rate = _split_pair(audio, name)
    elif isinstance(audio, Mapping):
        waveform, rate = _from_mapping(audio, target_sampling_rate, name)
    elif hasattr(audio, "get_all_samples"):
        waveform, rate = _from_decoder(audio)
    rate = check_sampling_rate(rate, name)
    if waveform is None:
        raise AudioInputError(f"{name}: no audio given (None).")
    mono = to_mono(to_float_array(waveform, name), name)
    mono = resample(mono, rate, target_sampling_rate)
    return validate_waveform(mono, name) if validate else mono
