"""`resolve_voice`: the one place where a `voice` argument (a stock voice name, a speaker embedding, a
`FunAudioChatVoice`, a saved voice's path) becomes a [`FunAudioChatVoice`].

Example:
    >>> import torch
    >>> resolve_voice(torch.ones(192), stock_voices=dict, embedding_dim=192).speaker_embedding.shape
    torch.Size([1, 192])
"""

import os
from collections.abc import Callable
from pathlib import Path

import torch

from ..voice.voice_file import FunAudioChatVoice, is_voice_path

DEFAULT_VOICE = "中文女"
"""The stock voice of `voice=None` (unless a default voice was saved with the checkpoint or adapter)."""

VoiceLike = str | os.PathLike | torch.Tensor | FunAudioChatVoice | None
"""What a `voice` argument takes: a stock voice name, a saved voice's path, a speaker embedding [D] / [1, D], a
`FunAudioChatVoice`, or None (the default voice)."""


def _looks_like_path(voice: str | os.PathLike) -> bool:
    text = os.fspath(voice)
    return isinstance(voice, os.PathLike) or os.sep in text or "/" in text or text.endswith(".safetensors")


def resolve_voice(
    voice: VoiceLike,
    stock_voices: Callable[[], dict[str, torch.Tensor]],
    embedding_dim: int,
    default: FunAudioChatVoice | None = None,
) -> FunAudioChatVoice:
    """Any accepted voice -> a `FunAudioChatVoice` (not yet checked against a decoder's sizes).

    None -> `default` (or the stock `中文女`); a `FunAudioChatVoice` as is; a voice directory / `.safetensors` file
    (`FunAudioChatVoice.save`) -> loaded; a name -> the default voice of that name or a stock voice (`stock_voices()`
    loads the official speaker file on first use); a speaker embedding [D] / [1, D] -> a vector-only voice.
    """
    if voice is None:
        if default is not None:
            return default
        voice = DEFAULT_VOICE
    if isinstance(voice, FunAudioChatVoice):
        return voice
    if isinstance(voice, torch.Tensor):
        shape = tuple(voice.shape)
        if voice.numel() != embedding_dim or voice.dim() > 2 or (voice.dim() == 2 and shape[0] != 1):
            raise ValueError(
                f"A speaker embedding must have shape [{embedding_dim}] or [1, {embedding_dim}], got {shape}."
            )
        return FunAudioChatVoice(voice)
    if not isinstance(voice, (str, os.PathLike)):
        raise ValueError(
            "voice must be a voice name, a FunAudioChatVoice, a voice directory or file, or a speaker embedding "
            f"tensor, got {type(voice).__name__}."
        )
    if is_voice_path(voice):
        return FunAudioChatVoice.load(voice)
    if Path(voice).exists():
        raise ValueError(
            f"{os.fspath(voice)!r} is not a saved voice (a voice directory holds voice.safetensors). To speak in the "
            f"voice of an audio clip, clone it first: voice = token2wav.clone_voice({os.fspath(voice)!r})."
        )
    if _looks_like_path(voice):
        raise FileNotFoundError(f"Voice {os.fspath(voice)!r} not found (no such directory or file).")
    if default is not None and voice == default.name:
        return default
    voices = stock_voices()
    if voice not in voices:
        names = ", ".join(repr(name) for name in voices)
        raise ValueError(
            f"Unknown voice {voice!r}; valid voices: {names}, a voice directory or file, a FunAudioChatVoice, "
            f"or a speaker embedding tensor of {embedding_dim}."
        )
    return FunAudioChatVoice(voices[voice], name=voice, source="stock voice (new_spk2info.pt)")


__all__ = ["DEFAULT_VOICE", "VoiceLike", "resolve_voice"]
