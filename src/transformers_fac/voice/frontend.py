"""Cloning a voice from a reference clip: CAM++ speaker vector, v3 speech codes and the decoder's mel.

`VoiceFrontend` follows CosyVoice3's zero-shot frontend step by step:

1. the clip, mono, at 16 kHz -> `speaker_features` (mean-normalised Kaldi fbank) -> the unchanged `campplus.onnx`
   through ONNX Runtime (CPU) -> speaker vector [1, 192];
2. the clip at 16 kHz -> the v3 speech tokenizer, the same `SpeechCodeTokenizer` the fine-tuning data preparation
   uses -> prompt codes;
3. the clip at 24 kHz -> `prompt_mel` -> prompt mel; 4. `FunAudioChatVoice` aligns codes and mel.

`VoiceFrontend.from_source(decoder_source)` finds `campplus.onnx` and the speech tokenizer (`speech_tokenizer_v3.onnx`,
or a `speech_tokenizer_v3.safetensors` written by `SpeechCodeTokenizer.save`) in the decoder's directory or Hub repo,
else in `FunAudioLLM/Fun-CosyVoice3-0.5B-2512`; files are fetched with `hf_hub_download` on first use only.

Example (the stand-in models of the tiny checkpoint; the real ones come from the CosyVoice3 repository):
    >>> from transformers_fac.tiny import tiny_checkpoint
    >>> frontend = VoiceFrontend.from_source(tiny_checkpoint() / "token2wav")
    >>> voice = frontend.clone("examples/question_en.wav", name="me")
    >>> voice.speaker_embedding.shape, voice.prompt_mel.shape[-1]
    (torch.Size([1, 192]), 80)
"""

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..speech_tokenizer import SpeechCodeTokenizer
from .dependencies import import_voice_dependency
from .features import SPEAKER_SAMPLING_RATE, load_clip, prompt_mel, speaker_features
from .voice_file import FunAudioChatVoice

logger = logging.getLogger(__name__)

DEFAULT_FRONTEND_REPO = "FunAudioLLM/Fun-CosyVoice3-0.5B-2512"
CAMPPLUS_FILE = "campplus.onnx"
SPEECH_TOKENIZER_FILES = ("speech_tokenizer_v3.onnx", "speech_tokenizer_v3.safetensors")


def _local_file(directory: Path, names: tuple[str, ...]) -> Path | None:
    return next((directory / name for name in names if (directory / name).is_file()), None)


def _hub_file(repo_id: str, names: tuple[str, ...], **hub_kwargs) -> Path | None:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    for name in names:
        try:
            return Path(hf_hub_download(repo_id, name, **hub_kwargs))
        except EntryNotFoundError:
            continue
    return None


def resolve_frontend_files(source: str | os.PathLike | None = None, **hub_kwargs) -> tuple[Path, Path]:
    """(campplus.onnx, speech tokenizer file) of a decoder directory or Hub repo, falling back to the CosyVoice3 repo.
    Downloads (once, into the Hugging Face cache) only what is not found locally."""
    found: dict[str, Path | None] = {"campplus": None, "tokenizer": None}
    wanted = {"campplus": (CAMPPLUS_FILE,), "tokenizer": SPEECH_TOKENIZER_FILES}
    if source is not None and Path(source).is_dir():
        for key, names in wanted.items():
            found[key] = _local_file(Path(source), names)
    elif source is not None and str(source).count("/") == 1 and str(source) != DEFAULT_FRONTEND_REPO:
        for key, names in wanted.items():
            found[key] = _hub_file(str(source), names, **hub_kwargs)
    for key, names in wanted.items():
        if found[key] is None:
            logger.info("Fetching %s from %s (voice cloning)", names[0], DEFAULT_FRONTEND_REPO)
            found[key] = _hub_file(DEFAULT_FRONTEND_REPO, names, **hub_kwargs)
        if found[key] is None:
            raise FileNotFoundError(f"{names[0]} not found in {source} nor in {DEFAULT_FRONTEND_REPO}.")
    return found["campplus"], found["tokenizer"]


class VoiceFrontend:
    """Speaker vectors (CAM++ through ONNX Runtime) and voice cloning (see the module docstring).

    Args:
        campplus: path of `campplus.onnx` (input [1, frames, 80] float32, output [1, 192]).
        speech_tokenizer: a `SpeechCodeTokenizer` or the path of a v3 speech tokenizer file.
        sampling_rate / mel_bins / hop_length: the decoder's mel (CosyVoice3: 24 kHz, 80 bins, hop 480, n_fft 4 hops).
    """

    def __init__(
        self,
        campplus: str | os.PathLike,
        speech_tokenizer: SpeechCodeTokenizer | str | os.PathLike,
        sampling_rate: int = 24000,
        mel_bins: int = 80,
        hop_length: int = 480,
    ):
        self.campplus_path = Path(campplus)
        if not self.campplus_path.is_file():
            raise FileNotFoundError(f"CAM++ model {self.campplus_path} does not exist.")
        if not isinstance(speech_tokenizer, SpeechCodeTokenizer):
            speech_tokenizer = SpeechCodeTokenizer(speech_tokenizer)
        self.speech_tokenizer = speech_tokenizer
        self.sampling_rate = sampling_rate
        self.mel_bins = mel_bins
        self.hop_length = hop_length
        self._session = None

    @classmethod
    def from_source(cls, source: str | os.PathLike | None = None, hub_kwargs: dict | None = None, **kwargs):
        """The frontend of a decoder directory or Hub repo (see `resolve_frontend_files`); `kwargs` as in `__init__`."""
        campplus, tokenizer = resolve_frontend_files(source, **(hub_kwargs or {}))
        return cls(campplus, tokenizer, **kwargs)

    def __repr__(self) -> str:
        return f"VoiceFrontend(campplus={str(self.campplus_path)!r}, speech_tokenizer={self.speech_tokenizer!r})"

    # pickling (e.g. into datasets.map workers): the ONNX session is rebuilt on first use
    def __getstate__(self) -> dict:
        return {**self.__dict__, "_session": None}

    @property
    def session(self):
        """The ONNX Runtime session of `campplus.onnx` (CPU, one thread, as in the reference frontend)."""
        if self._session is None:
            ort = import_voice_dependency("onnxruntime")
            options = ort.SessionOptions()
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            options.intra_op_num_threads = 1
            self._session = ort.InferenceSession(
                str(self.campplus_path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        return self._session

    def speaker_vector_16k(self, waveform_16k: Any) -> torch.Tensor:
        """CAM++ vector [1, 192] of a 16 kHz waveform in [-1, 1] (no clip rules; see `speaker_vector`)."""
        features = speaker_features(waveform_16k).numpy()[None]
        session = self.session
        output = session.run(None, {session.get_inputs()[0].name: features.astype(np.float32)})[0]
        return torch.from_numpy(np.asarray(output, dtype=np.float32)).reshape(1, -1)

    def speaker_vector(self, audio: Any, sampling_rate: int | None = None, trim: bool = False) -> torch.Tensor:
        """CAM++ vector [1, 192] of a clip (any `load_audio` input), after the clip rules of `load_clip`."""
        clip_16k, _ = load_clip(audio, sampling_rate, trim=trim, target_sampling_rate=self.sampling_rate)
        return self.speaker_vector_16k(clip_16k)

    def clone(
        self,
        audio: Any,
        name: str | None = None,
        sampling_rate: int | None = None,
        trim: bool = False,
        source: str | None = None,
    ) -> FunAudioChatVoice:
        """A voice from a reference clip: speaker vector, prompt codes and prompt mel (clip rules: `load_clip`).
        `source` (default: the file name of a path) is recorded in the voice."""
        clip_16k, clip_24k = load_clip(audio, sampling_rate, trim=trim, target_sampling_rate=self.sampling_rate)
        if source is None:
            source = os.path.basename(os.fspath(audio)) if isinstance(audio, (str, os.PathLike)) else "audio clip"
        return self.voice_from_clip(clip_16k, clip_24k, name=name, source=source)

    def voice_from_clip(
        self,
        clip_16k: np.ndarray,
        clip_24k: np.ndarray,
        name: str | None = None,
        source: str | None = None,
        speaker_embedding: torch.Tensor | None = None,
    ) -> FunAudioChatVoice:
        """A voice from a checked clip at 16 kHz and at the decoder's rate (`load_clip`); `speaker_embedding` replaces
        the clip's own CAM++ vector (e.g. a mean over many clips)."""
        codes = self.speech_tokenizer(clip_16k, sampling_rate=SPEAKER_SAMPLING_RATE)
        mel = prompt_mel(
            clip_24k,
            sampling_rate=self.sampling_rate,
            mel_bins=self.mel_bins,
            hop_length=self.hop_length,
            n_fft=4 * self.hop_length,
        )
        if speaker_embedding is None:
            speaker_embedding = self.speaker_vector_16k(clip_16k)
        return FunAudioChatVoice(speaker_embedding, codes, mel, name=name, source=source)

    def similarity(self, audio: Any, reference: Any, sampling_rate: int | None = None) -> float:
        """Speaker similarity (cosine of CAM++ vectors) between a clip and a reference (a clip, a voice or a vector).
        The clip may be at any rate (`sampling_rate` for a bare waveform, e.g. 24000 for a reply)."""
        vector = self.speaker_vector(audio, sampling_rate=sampling_rate, trim=True)
        if not isinstance(reference, (FunAudioChatVoice, torch.Tensor)):
            reference = self.speaker_vector(reference, trim=True)
        return speaker_similarity(vector, reference)


def speaker_similarity(first: FunAudioChatVoice | torch.Tensor, second: FunAudioChatVoice | torch.Tensor) -> float:
    """Cosine similarity of two speaker vectors (tensors [192] / [1, 192] or voices), in [-1, 1].

    Example:
        >>> round(speaker_similarity(torch.ones(192), 2 * torch.ones(1, 192)), 6)
        1.0
    """
    vectors = [
        (item.speaker_embedding if isinstance(item, FunAudioChatVoice) else torch.as_tensor(item)).reshape(-1).double()
        for item in (first, second)
    ]
    if vectors[0].shape != vectors[1].shape:
        raise ValueError(f"Speaker vectors differ in size: {vectors[0].numel()} vs {vectors[1].numel()}.")
    return float(torch.nn.functional.cosine_similarity(vectors[0], vectors[1], dim=0))


__all__ = [
    "CAMPPLUS_FILE",
    "DEFAULT_FRONTEND_REPO",
    "SPEECH_TOKENIZER_FILES",
    "VoiceFrontend",
    "resolve_frontend_files",
    "speaker_similarity",
]
