"""`FunAudioChatVoice`: a speaker vector and an optional prompt (speech codes + mel), saved as safetensors + JSON.

A voice holds what the CosyVoice3 flow is conditioned on:

- `speaker_embedding` [1, D] float32: the CAM++ speaker vector (D = 192; only its direction matters, the flow
  L2-normalises it);
- `prompt_codes` [1, L] int64 and `prompt_mel` [1, 2L, 80] float32: a reference clip's 25 Hz speech codes and its
  50 Hz mel, prepended to the codes to speak (zero-shot cloning). Both are empty ([1, 0] / [1, 0, 80]) for a
  vector-only voice such as the stock `中文女` / `中文男`.

The constructor applies the reference frontend's alignment: with P codes and T mel frames, `L = min(T // 2, P)`, the
first L codes and the first 2L frames are kept.

On disk a voice is either a directory (`voice.safetensors` + a readable `voice.json`) or a single `.safetensors`
file whose metadata holds the same JSON. Nothing is pickled.

Example:
    >>> import torch
    >>> voice = FunAudioChatVoice(torch.ones(192), prompt_codes=list(range(10)), prompt_mel=torch.zeros(17, 80))
    >>> voice.prompt_codes.shape, voice.prompt_mel.shape  # 17 frames allow 8 codes
    (torch.Size([1, 8]), torch.Size([1, 16, 80]))
"""

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

TOKEN_MEL_RATIO = 2
"""Prompt mel frames (50 Hz) per prompt code (25 Hz) for the 24 kHz CosyVoice3 decoder."""

CODE_RATE = 25
"""Speech codes per second."""

MEL_BINS = 80
"""Mel bins of an empty prompt mel."""

VOICE_FORMAT = "transformers_fac.voice"
VOICE_FORMAT_VERSION = 1
VOICE_WEIGHTS = "voice.safetensors"
VOICE_CONFIG = "voice.json"


class FunAudioChatVoice:
    """A voice for the token-to-waveform decoder (see the module docstring).

    Args:
        speaker_embedding: the speaker vector, [D] or [1, D] (D = 192 for CosyVoice3).
        prompt_codes: the reference clip's speech codes, [P] or [1, P] integers >= 0 (or a list), or None.
        prompt_mel: the reference clip's mel, [T, 80] or [1, T, 80] (decoder mel definition, 50 frames/s), or None.
        name: a display name (voice lists, file metadata).
        source: where the voice came from (e.g. the clip's file name or a dataset), kept in the file.
    """

    def __init__(
        self,
        speaker_embedding: torch.Tensor | Sequence[float],
        prompt_codes: torch.Tensor | Sequence[int] | None = None,
        prompt_mel: torch.Tensor | None = None,
        name: str | None = None,
        source: str | None = None,
    ):
        self.speaker_embedding = _embedding(speaker_embedding)
        codes, mel = _prompt_codes(prompt_codes), _prompt_mel(prompt_mel)
        if (prompt_codes is None) != (prompt_mel is None) and (codes.shape[1] or mel.shape[1]):
            raise ValueError("A voice prompt needs both prompt_codes and prompt_mel (or neither).")
        length = min(mel.shape[1] // TOKEN_MEL_RATIO, codes.shape[1])
        self.prompt_codes = codes[:, :length].contiguous()
        self.prompt_mel = mel[:, : TOKEN_MEL_RATIO * length].contiguous()
        self.name = name
        self.source = source

    # ------------------------------------------------------------------------------------------------ properties
    @property
    def has_prompt(self) -> bool:
        """Whether the voice carries a reference prompt (codes + mel), i.e. is a zero-shot clone."""
        return self.prompt_codes.shape[1] > 0

    @property
    def prompt_seconds(self) -> float:
        """Duration of the prompt (0 for a vector-only voice)."""
        return self.prompt_codes.shape[1] / CODE_RATE

    def __repr__(self) -> str:
        prompt = (
            f"{self.prompt_codes.shape[1]} prompt codes ({self.prompt_seconds:.1f} s)"
            if self.has_prompt
            else "no prompt"
        )
        return f"FunAudioChatVoice(name={self.name!r}, {prompt}, source={self.source!r})"

    def metadata(self) -> dict[str, Any]:
        """The JSON description written next to the tensors."""
        return {
            "format": VOICE_FORMAT,
            "format_version": VOICE_FORMAT_VERSION,
            "name": self.name,
            "source": self.source,
            "speaker_embedding_dim": self.speaker_embedding.shape[1],
            "prompt_codes": self.prompt_codes.shape[1],
            "prompt_seconds": self.prompt_seconds,
        }

    # ------------------------------------------------------------------------------------------------ files
    def save(self, path: str | os.PathLike) -> Path:
        """Write the voice to `path`: a directory (`voice.safetensors` + `voice.json`), or one `.safetensors` file
        when `path` ends with `.safetensors`. Returns the path written."""
        from safetensors.torch import save_file

        path = Path(path)
        tensors = {
            "speaker_embedding": self.speaker_embedding,
            "prompt_codes": self.prompt_codes,
            "prompt_mel": self.prompt_mel,
        }
        metadata = self.metadata()
        file_metadata = {"voice": json.dumps(metadata, ensure_ascii=False)}
        if path.suffix == ".safetensors":
            path.parent.mkdir(parents=True, exist_ok=True)
            save_file(tensors, path, metadata=file_metadata)
            return path
        path.mkdir(parents=True, exist_ok=True)
        save_file(tensors, path / VOICE_WEIGHTS, metadata=file_metadata)
        (path / VOICE_CONFIG).write_text(json.dumps(metadata, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "FunAudioChatVoice":
        """Read a voice saved by `save` (a voice directory or a voice `.safetensors` file)."""
        from safetensors import SafetensorError, safe_open

        path = Path(path)
        weights = path / VOICE_WEIGHTS if path.is_dir() else path
        if not weights.is_file():
            what = f"{path} has no {VOICE_WEIGHTS}" if path.is_dir() else f"voice file {path} does not exist"
            raise FileNotFoundError(f"Cannot load a voice: {what}.")
        try:
            with safe_open(weights, "pt") as handle:
                file_metadata = handle.metadata() or {}
                tensors = {key: handle.get_tensor(key) for key in handle.keys()}
        except (SafetensorError, OSError) as error:
            raise ValueError(f"{weights} is not a voice file (not a readable safetensors file: {error}).") from error
        metadata = json.loads(file_metadata.get("voice", "{}"))
        if metadata.get("format") != VOICE_FORMAT or "speaker_embedding" not in tensors:
            raise ValueError(
                f"{weights} is not a voice file (no {VOICE_FORMAT!r} metadata); save one with voice.save()."
            )
        if int(metadata.get("format_version", 0)) > VOICE_FORMAT_VERSION:
            raise ValueError(
                f"{weights} has voice format version {metadata['format_version']}; upgrade transformers-fac."
            )
        return cls(
            tensors["speaker_embedding"],
            prompt_codes=tensors.get("prompt_codes"),
            prompt_mel=tensors.get("prompt_mel"),
            name=metadata.get("name"),
            source=metadata.get("source"),
        )


def is_voice_path(path: Any) -> bool:
    """Whether `path` names a saved voice: a directory holding `voice.safetensors`, or a `.safetensors` file."""
    if not isinstance(path, (str, os.PathLike)):
        return False
    path = Path(path)
    return (path / VOICE_WEIGHTS).is_file() if path.is_dir() else path.suffix == ".safetensors" and path.is_file()


# ---------------------------------------------------------------------------------------------------- validation
def _embedding(value: Any) -> torch.Tensor:
    tensor = torch.as_tensor(value).detach().cpu() if not isinstance(value, torch.Tensor) else value.detach().cpu()
    if not torch.is_floating_point(tensor):
        raise ValueError(f"A speaker embedding must be floating point, got {tensor.dtype}.")
    if tensor.dim() == 1:
        tensor = tensor[None]
    if tensor.dim() != 2 or tensor.shape[0] != 1 or tensor.shape[1] == 0:
        raise ValueError(f"A speaker embedding must be [D] or [1, D], got {tuple(tensor.shape)}.")
    if not torch.isfinite(tensor).all():
        raise ValueError("The speaker embedding contains NaN or infinite values.")
    return tensor.float().contiguous()


def _prompt_codes(value: Any) -> torch.Tensor:
    if value is None:
        return torch.zeros(1, 0, dtype=torch.long)
    tensor = (
        value.detach().cpu() if isinstance(value, torch.Tensor) else torch.as_tensor(list(value), dtype=torch.long)
    )
    if tensor.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool:
        raise ValueError(f"prompt_codes must be integers, got {tensor.dtype}.")
    if tensor.dim() == 1:
        tensor = tensor[None]
    if tensor.dim() != 2 or tensor.shape[0] != 1:
        raise ValueError(f"prompt_codes must be [L] or [1, L], got {tuple(tensor.shape)}.")
    if tensor.numel() and int(tensor.min()) < 0:
        raise ValueError(f"prompt_codes must be >= 0, got {int(tensor.min())}.")
    return tensor.long()


def _prompt_mel(value: Any) -> torch.Tensor:
    if value is None:
        return torch.zeros(1, 0, MEL_BINS)
    tensor = value.detach().cpu() if isinstance(value, torch.Tensor) else torch.as_tensor(value)
    if not torch.is_floating_point(tensor):
        raise ValueError(f"prompt_mel must be floating point, got {tensor.dtype}.")
    if tensor.dim() == 2:
        tensor = tensor[None]
    if tensor.dim() != 3 or tensor.shape[0] != 1:
        raise ValueError(f"prompt_mel must be [T, bins] or [1, T, bins], got {tuple(tensor.shape)}.")
    if not torch.isfinite(tensor).all():
        raise ValueError("prompt_mel contains NaN or infinite values.")
    return tensor.float()


__all__ = ["CODE_RATE", "TOKEN_MEL_RATIO", "VOICE_FORMAT", "FunAudioChatVoice", "is_voice_path"]
