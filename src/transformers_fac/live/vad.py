"""Live audio in: chunks of any size and rate → 16 kHz mono, cut into the 512-sample windows that Silero VAD scores.

Silero VAD (the `silero-vad` package; its model ships inside the wheel and runs on torch alone) is imported lazily,
so `import transformers_fac` does not need it.
"""

import math
import warnings

import numpy as np
import torch

from ..audio_io import SAMPLING_RATE, check_sampling_rate, to_float_array, to_mono
from ..optional_imports import install_hint

WINDOW = 512
"""Samples per VAD window at 16 kHz (32 ms): the window size Silero VAD is trained for."""

LIVE_EXTRA = install_hint("live")


def load_vad_model():
    """A fresh Silero VAD model (it keeps state between windows, so each session has its own).

    Raises an `ImportError` naming the `live` extra when `silero-vad` is missing. Importing `silero_vad` sets torch's
    thread count to 1 for the whole process; the previous count is restored.
    """
    threads = torch.get_num_threads()
    try:
        from silero_vad import load_silero_vad
    except ImportError as error:
        raise ImportError(f"Live conversations need the silero-vad package: {LIVE_EXTRA}") from error
    finally:
        torch.set_num_threads(threads)
    with warnings.catch_warnings():  # its own loader uses APIs that torch and importlib now mark deprecated
        warnings.simplefilter("ignore", DeprecationWarning)
        return load_silero_vad()


def level_db(window: np.ndarray) -> float:
    """RMS level of a window in dB relative to full scale (-inf for digital silence)."""
    rms = float(np.sqrt(np.mean(np.square(window, dtype=np.float64)))) if window.size else 0.0
    return 20.0 * math.log10(rms) if rms > 0 else -math.inf


class AudioWindows:
    """Turns live chunks (any size, any rate, mono or multi-channel, float or integer PCM) into a continuous 16 kHz
    stream and hands out complete 512-sample windows. A change of input rate restarts the resampler.

    Example:

    ```python
    >>> windows = AudioWindows()
    >>> [w.shape for w in windows.push(np.zeros(48000 // 10, np.int16), 48000)]  # 0.1 s at 48 kHz -> 3 windows
    [(512,), (512,), (512,)]
    ```
    """

    def __init__(self):
        self._rate: float | None = None
        self._resampler = None
        self._pending = np.zeros(0, np.float32)

    def push(self, audio, sampling_rate: float) -> list[np.ndarray]:
        rate = check_sampling_rate(sampling_rate, "live audio")
        samples = to_mono(to_float_array(audio, "live audio"), "live audio")
        if rate != self._rate:
            self._restart(rate)
        if self._resampler is not None:
            samples = self._resampler.resample_chunk(np.ascontiguousarray(samples, dtype=np.float32))
        self._pending = np.concatenate([self._pending, samples.astype(np.float32, copy=False)])
        count = len(self._pending) // WINDOW
        windows = [self._pending[i * WINDOW : (i + 1) * WINDOW] for i in range(count)]
        self._pending = self._pending[count * WINDOW :]
        return windows

    def _restart(self, rate: float) -> None:
        if self._resampler is not None:  # flush what the previous resampler still holds
            tail = self._resampler.resample_chunk(np.zeros(0, np.float32), last=True)
            self._pending = np.concatenate([self._pending, tail.astype(np.float32)])
        self._rate = rate
        if rate == SAMPLING_RATE:
            self._resampler = None
        else:
            import soxr

            self._resampler = soxr.ResampleStream(rate, SAMPLING_RATE, 1, dtype="float32", quality="HQ")


class VoiceActivity:
    """Speech probability of consecutive 512-sample 16 kHz windows (Silero VAD, stateful).

    Example:

    ```python
    >>> vad = VoiceActivity()
    >>> vad(np.zeros(512, np.float32)) < 0.1
    True
    ```
    """

    def __init__(self, model=None):
        self.model = model if model is not None else load_vad_model()

    @torch.inference_mode()
    def __call__(self, window: np.ndarray) -> float:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # a tiny model: one thread is several times faster (what silero-vad recommends)
        try:
            return float(self.model(torch.from_numpy(window), SAMPLING_RATE))
        finally:
            torch.set_num_threads(threads)

    def reset(self) -> None:
        self.model.reset_states()


__all__ = ["LIVE_EXTRA", "WINDOW", "AudioWindows", "VoiceActivity", "level_db", "load_vad_model"]
