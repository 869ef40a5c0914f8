"""Audio in and out of the OpenAI shapes: base64 input files, encoded replies, PCM16 chunks.

Input audio (`input_audio.data`) is a base64 wav, mp3, flac or ogg file; its duration is checked from the header before
it is decoded, so a small compressed body cannot expand into hours of samples. Replies are encoded as wav, flac, mp3,
opus (ogg) or raw 16-bit little-endian PCM (`pcm16`, what streaming sends) at the decoder's 24 kHz.
"""

import base64
import binascii
import io

import numpy as np
import soundfile as sf

from ..audio_io import AudioInputError, load_audio
from .errors import invalid

INPUT_FORMATS = ("wav", "mp3", "flac", "ogg")
OUTPUT_FORMATS = {
    "wav": ("WAV", "PCM_16"),
    "flac": ("FLAC", "PCM_16"),
    "mp3": ("MP3", "MPEG_LAYER_III"),
    "opus": ("OGG", "OPUS"),
    "pcm16": None,
}


def b64decode(data: str, param: str) -> bytes:
    """Base64 (optionally a `data:...;base64,` URI) -> bytes, or a 400 naming `param`."""
    if not isinstance(data, str) or not data:
        raise invalid(f"{param} must be a non-empty base64 string.", param=param)
    if data.startswith("data:"):
        data = data.partition(",")[2]
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise invalid(f"{param} is not valid base64.", param=param) from None


def decode_input_audio(
    data: str, audio_format: str | None, max_seconds: float, param: str, total_seconds: float | None = None
) -> np.ndarray:
    """A base64 audio file of at most `max_seconds` -> 16 kHz mono float32, or a 400 that names `param` and says what
    is wrong (`total_seconds`: the request's whole audio budget, for the message).

    Example:
        >>> import base64, io, soundfile as sf
        >>> buffer = io.BytesIO(); sf.write(buffer, np.sin(np.arange(8000) / 9.0), 8000, format="WAV")
        >>> decode_input_audio(base64.b64encode(buffer.getvalue()).decode(), "wav", 60, "audio").shape
        (16000,)
    """
    if audio_format is not None and audio_format not in INPUT_FORMATS:
        raise invalid(
            f"{param}.format must be one of {', '.join(INPUT_FORMATS)}, got {audio_format!r}.", param=f"{param}.format"
        )
    raw = b64decode(data, f"{param}.data")
    try:
        with sf.SoundFile(io.BytesIO(raw)) as handle:
            seconds = handle.frames / handle.samplerate
            if seconds > max_seconds:
                raise invalid(
                    f"{param} is {seconds:.1f} s long: more audio than this server takes per request "
                    f"({total_seconds or max_seconds:g} s in all).",
                    param=param,
                    code="audio_too_long",
                )
            rate = handle.samplerate
            samples = handle.read(dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError):
        raise invalid(
            f"{param}.data is not an audio file this server can read ({', '.join(INPUT_FORMATS)}).",
            param=f"{param}.data",
            code="invalid_audio",
        ) from None
    return checked_waveform((samples, rate), param)


def checked_waveform(audio, param: str) -> np.ndarray:
    """Any `load_audio` input -> 16 kHz mono float32, or a 400 (empty, all zeros, not finite)."""
    try:
        return load_audio(audio, name=param)
    except AudioInputError as error:
        raise invalid(f"{param}: {error}", param=param, code="invalid_audio") from None


def decode_pcm16(data: bytes) -> np.ndarray:
    """Little-endian 16-bit mono PCM -> int16 samples (an odd trailing byte is an error)."""
    if len(data) % 2:
        raise ValueError("PCM16 audio must have an even number of bytes.")
    return np.frombuffer(data, dtype="<i2")


def pcm16(samples: np.ndarray, rate: int = 24000) -> bytes:
    """float32 samples in [-1, 1] -> 16-bit little-endian PCM bytes (converted by libsndfile, like the wav files)."""
    buffer = io.BytesIO()
    sf.write(buffer, samples, rate, format="RAW", subtype="PCM_16", endian="LITTLE")
    return buffer.getvalue()


def encode_audio(samples: np.ndarray, rate: int, audio_format: str) -> bytes:
    """Encodes a reply in one of `OUTPUT_FORMATS`."""
    container = OUTPUT_FORMATS[audio_format]
    if container is None:
        return pcm16(samples, rate)
    buffer = io.BytesIO()
    sf.write(buffer, samples, rate, format=container[0], subtype=container[1])
    return buffer.getvalue()


__all__ = [
    "INPUT_FORMATS",
    "OUTPUT_FORMATS",
    "b64decode",
    "checked_waveform",
    "decode_input_audio",
    "decode_pcm16",
    "encode_audio",
    "pcm16",
]
