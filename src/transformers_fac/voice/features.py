"""Features of a reference clip, computed exactly as CosyVoice3's zero-shot frontend computes them.

- `speaker_features(waveform_16k)`: the CAM++ input: Kaldi fbank (80 bins, dither 0, 25 ms frames, 10 ms shift,
  povey window, pre-emphasis 0.97, DC removal, log power) with `kaldi-native-fbank` on [-1, 1] float samples, then the
  per-bin mean over frames subtracted. The input scale matters: int16-scale samples give different features.
- `prompt_mel(waveform_24k)`: the decoder's mel (natural-log Slaney mel, n_fft 1920, hop 480, window 1920, fmin 0,
  fmax = Nyquist, no centring, 720 samples of reflection padding on each side): 50 frames per second.
- `load_clip(audio)`: a reference clip at 16 kHz and 24 kHz after the clip rules (1 s to 30 s, not silent, finite).
- `speech_ratio(waveform)`: the fraction of frames that carry speech energy (used to pick a dataset's prompt clip).

Example:
    >>> import numpy as np
    >>> wave = (0.1 * np.sin(np.arange(24000) / 5.0)).astype(np.float32)
    >>> prompt_mel(wave).shape  # 1 s at 24 kHz: 50 frames
    torch.Size([1, 50, 80])
"""

import math
from functools import lru_cache
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..audio_io import AudioInputError, is_silent, load_audio
from .dependencies import import_voice_dependency

SPEAKER_SAMPLING_RATE = 16000
"""Rate of the clip for the speaker vector and the prompt codes."""

MIN_CLIP_SECONDS = 1.0
MAX_CLIP_SECONDS = 30.0
"""Reference clips must last between these (the reference frontend refuses clips over 30 s)."""

FBANK_FRAME_SAMPLES = 400
"""One 25 ms Kaldi frame at 16 kHz: shorter audio has no fbank frame at all."""


def _waveform(waveform: Any, name: str) -> torch.Tensor:
    tensor = waveform.detach().cpu() if torch.is_tensor(waveform) else torch.from_numpy(np.asarray(waveform))
    if not torch.is_floating_point(tensor) or tensor.dim() != 1:
        raise ValueError(f"{name} must be a 1-D float waveform in [-1, 1], got {tensor.dtype} {tuple(tensor.shape)}.")
    if not torch.isfinite(tensor).all():
        raise ValueError(f"{name} contains NaN or infinite samples.")
    return tensor.float()


def speaker_features(waveform_16k: Any) -> torch.Tensor:
    """Mean-normalised 80-bin Kaldi fbank of a 16 kHz waveform in [-1, 1] ([n]) -> [frames, 80] float32 (the input of
    CAM++). Raises on audio shorter than one 25 ms frame."""
    wave = _waveform(waveform_16k, "waveform_16k")
    if wave.numel() < FBANK_FRAME_SAMPLES:
        raise ValueError(
            f"The clip is shorter than one fbank frame ({wave.numel()} samples < {FBANK_FRAME_SAMPLES} = 25 ms at "
            "16 kHz): no speaker features can be computed."
        )
    knf = import_voice_dependency("kaldi_native_fbank")
    options = knf.FbankOptions()
    options.frame_opts.dither = 0.0
    options.frame_opts.samp_freq = SPEAKER_SAMPLING_RATE
    options.mel_opts.num_bins = 80
    fbank = knf.OnlineFbank(options)
    fbank.accept_waveform(SPEAKER_SAMPLING_RATE, wave.numpy())
    fbank.input_finished()
    features = torch.from_numpy(np.stack([fbank.get_frame(index) for index in range(fbank.num_frames_ready)]))
    return features - features.mean(dim=0, keepdim=True)


@lru_cache(maxsize=4)
def _mel_filters(sampling_rate: int, n_fft: int, mel_bins: int) -> torch.Tensor:
    from transformers.audio_utils import mel_filter_bank

    filters = mel_filter_bank(
        num_frequency_bins=n_fft // 2 + 1,
        num_mel_filters=mel_bins,
        min_frequency=0.0,
        max_frequency=sampling_rate / 2,
        sampling_rate=sampling_rate,
        norm="slaney",
        mel_scale="slaney",
    )
    return torch.from_numpy(filters.T.astype(np.float32))  # [mel_bins, n_fft // 2 + 1]


def prompt_mel(
    waveform_24k: Any, sampling_rate: int = 24000, mel_bins: int = 80, hop_length: int = 480, n_fft: int = 1920
) -> torch.Tensor:
    """The decoder's mel of a 24 kHz waveform in [-1, 1] ([n]) -> [1, n // hop_length, mel_bins] float32 (see the
    module docstring; the defaults are CosyVoice3's)."""
    wave = _waveform(waveform_24k, "waveform_24k")
    padding = (n_fft - hop_length) // 2
    if wave.numel() <= padding:
        raise ValueError(f"waveform_24k needs more than {padding} samples for its mel, got {wave.numel()}.")
    padded = F.pad(wave[None, None], (padding, padding), mode="reflect")[0]
    window = torch.hann_window(n_fft)
    spectrum = torch.stft(
        padded, n_fft, hop_length=hop_length, win_length=n_fft, window=window, center=False, return_complex=True
    )
    magnitude = torch.sqrt(spectrum.real.pow(2) + spectrum.imag.pow(2) + 1e-9)
    mel = torch.matmul(_mel_filters(sampling_rate, n_fft, mel_bins), magnitude)
    return torch.log(torch.clamp(mel, min=1e-5)).transpose(1, 2).contiguous()


def speech_ratio(waveform: Any, sampling_rate: int = SPEAKER_SAMPLING_RATE, floor_db: float = -50.0) -> float:
    """Fraction of 20 ms frames with speech energy: RMS level above `floor_db` dBFS and within 35 dB of the clip's
    loudest frame. 0 for silence, close to 1 for a clip without pauses."""
    wave = _waveform(waveform, "waveform").double()
    frame = max(1, int(0.02 * sampling_rate))
    frames = wave[: wave.numel() // frame * frame].view(-1, frame)
    if frames.shape[0] == 0:
        return 0.0
    level = 10 * torch.log10(frames.pow(2).mean(dim=1).clamp_min(1e-20))
    threshold = max(floor_db, float(level.max()) - 35.0)
    return float((level > threshold).double().mean())


def load_clip(
    audio: Any, sampling_rate: int | None = None, trim: bool = False, target_sampling_rate: int = 24000
) -> tuple[np.ndarray, np.ndarray]:
    """A reference clip (any input `load_audio` takes; a bare waveform is at `sampling_rate`, default 16 kHz) ->
    (16 kHz waveform, `target_sampling_rate` waveform), mono float32, each resampled from the original.

    Rules (clear `AudioInputError`s): not audio, NaN/infinite samples, silence (below -60 dBFS), shorter than 1 s,
    longer than 30 s (unless `trim=True`: then the first 30 s are used).
    """
    rate = sampling_rate if sampling_rate is not None else SPEAKER_SAMPLING_RATE
    clip_16k = load_audio(audio, sampling_rate=rate, name="reference clip")
    seconds = clip_16k.shape[0] / SPEAKER_SAMPLING_RATE
    if seconds < MIN_CLIP_SECONDS:
        raise AudioInputError(
            f"reference clip: {seconds:.2f} s is too short to clone a voice (at least {MIN_CLIP_SECONDS:g} s; "
            "3 to 15 s of clear speech work best)."
        )
    if seconds > MAX_CLIP_SECONDS and not trim:
        raise AudioInputError(
            f"reference clip: {seconds:.1f} s is too long (at most {MAX_CLIP_SECONDS:g} s, as in CosyVoice3); "
            "pass trim=True to use its first 30 s."
        )
    if is_silent(clip_16k):
        raise AudioInputError("reference clip: the clip is silent (below -60 dBFS); record some speech.")
    clip_24k = load_audio(audio, sampling_rate=rate, target_sampling_rate=target_sampling_rate, name="reference clip")
    keep = math.floor(MAX_CLIP_SECONDS * SPEAKER_SAMPLING_RATE)
    return clip_16k[:keep], clip_24k[: math.floor(MAX_CLIP_SECONDS * target_sampling_rate)]


__all__ = [
    "MAX_CLIP_SECONDS",
    "MIN_CLIP_SECONDS",
    "load_clip",
    "prompt_mel",
    "speaker_features",
    "speech_ratio",
]
