"""Helpers of the live-conversation tests: scripted timelines of fixture questions and silence."""

import numpy as np
import soundfile as sf
from processing_test_utils import AUDIO_FILES

RATE = 16000


def clip(name: str, gain_db: float = 0.0) -> np.ndarray:
    """A fixture question at 16 kHz (float32), optionally attenuated."""
    audio, rate = sf.read(AUDIO_FILES[name], dtype="float32")
    assert rate == RATE
    return audio * np.float32(10 ** (gain_db / 20))


def silence(seconds: float) -> np.ndarray:
    return np.zeros(round(seconds * RATE), np.float32)


def timeline(*parts: np.ndarray) -> np.ndarray:
    return np.concatenate(parts)


def two_questions() -> np.ndarray:
    """Question, a pause in which the reply starts, a second question that interrupts it, a pause."""
    return timeline(silence(0.5), clip("en"), silence(1.5), clip("zh"), silence(1.5))


def chunks(audio: np.ndarray, rate: int, sizes: list[int]):
    """`audio` (16 kHz) resampled to `rate` as int16 PCM, cut into chunks of the given sizes (cycled)."""
    from transformers_fac.audio_io import resample

    pcm = (np.clip(resample(audio, RATE, rate), -1, 1) * 32767).astype(np.int16)
    start, index = 0, 0
    while start < len(pcm):
        size = sizes[index % len(sizes)]
        yield pcm[start : start + size]
        start, index = start + size, index + 1
