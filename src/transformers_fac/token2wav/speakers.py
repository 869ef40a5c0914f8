"""Stock voices of Fun-Audio-Chat (the CAM++ x-vectors of the official speaker file `utils/new_spk2info.pt`), and
`resolve_voice`, the one place where a `speaker` argument (name, tensor, voice, voice path) becomes a voice.

The file is read from a local path, or downloaded once from the official Fun-Audio-Chat GitHub repository (pinned
commit) into the Hugging Face cache; its sha256 is checked before it is unpickled with `weights_only=True`.
"""

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from huggingface_hub import constants

from ..voice.voice_file import FunAudioChatVoice, is_voice_path

SPEAKER_FILE_SHA256 = "c6ec1c7877542e90397de80c0915c98632a168aa717cae96b0e90ace3ab9d9ed"
SPEAKER_FILE_URL = (
    "https://raw.githubusercontent.com/FunAudioLLM/Fun-Audio-Chat/"
    "8ba984b64b4880918db2807e08d795475481200c/utils/new_spk2info.pt"
)
DEFAULT_SPEAKER = "中文女"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cached_speaker_file_path() -> Path:
    """Where the downloaded speaker file is kept: `<HF cache>/transformers_fac/new_spk2info-<sha>.pt`."""
    return Path(constants.HF_HUB_CACHE) / "transformers_fac" / f"new_spk2info-{SPEAKER_FILE_SHA256[:16]}.pt"


def download_speaker_file() -> Path:
    """Download the official speaker file once (hash-checked) and return its cached path."""
    target = cached_speaker_file_path()
    if target.is_file() and _sha256(target) == SPEAKER_FILE_SHA256:
        return target
    from huggingface_hub.file_download import http_get

    target.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=target.parent, suffix=".incomplete")
    tmp_path = Path(name)
    try:  # a failed or interrupted download leaves no partial file behind
        with os.fdopen(handle, "wb") as tmp:
            http_get(SPEAKER_FILE_URL, tmp)
        actual = _sha256(tmp_path)
        if actual != SPEAKER_FILE_SHA256:
            raise ValueError(f"Downloaded {SPEAKER_FILE_URL} has sha256 {actual}, expected {SPEAKER_FILE_SHA256}.")
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)
    return target


def load_speaker_file(path: str | os.PathLike | None = None, check_hash: bool = True) -> dict[str, torch.Tensor]:
    """Read a speaker file (a dict `name -> {"embedding": [1, 192], ...}`) -> `{name: embedding [192]}`.

    With `path=None` the official file is used (downloaded once). A given file is hash-checked against the official one
    unless `check_hash=False` (for your own voices in the same format).
    """
    if path is None:
        path = download_speaker_file()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Speaker file {path} does not exist.")
    if check_hash and _sha256(path) != SPEAKER_FILE_SHA256:
        raise ValueError(
            f"{path} is not the official speaker file (sha256 mismatch); pass check_hash=False to use your own."
        )
    table = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(table, dict):
        raise ValueError(f"{path} does not hold a dict of speakers.")
    voices = {}
    for name, entry in table.items():
        embedding = entry.get("embedding") if isinstance(entry, dict) else None
        if isinstance(embedding, torch.Tensor):
            voices[name] = embedding.reshape(-1).float()
    if not voices:
        raise ValueError(f"{path} holds no speaker with an 'embedding' tensor.")
    return voices


SpeakerLike = str | os.PathLike | torch.Tensor | FunAudioChatVoice | None


def _looks_like_path(speaker: str | os.PathLike) -> bool:
    text = os.fspath(speaker)
    return isinstance(speaker, os.PathLike) or os.sep in text or "/" in text or text.endswith(".safetensors")


def resolve_voice(
    speaker: SpeakerLike,
    stock_voices: Callable[[], dict[str, torch.Tensor]],
    embedding_dim: int,
    default: FunAudioChatVoice | None = None,
) -> FunAudioChatVoice:
    """Any accepted speaker -> a `FunAudioChatVoice` (not yet checked against a decoder's sizes).

    None -> `default` (or the stock `中文女`); a `FunAudioChatVoice` as is; a voice directory / `.safetensors` file
    (`FunAudioChatVoice.save`) -> loaded; a name -> the default voice of that name or a stock voice (`stock_voices()`
    loads the official speaker file on first use); a tensor [D] / [1, D] -> a vector-only voice.
    """
    if speaker is None:
        if default is not None:
            return default
        speaker = DEFAULT_SPEAKER
    if isinstance(speaker, FunAudioChatVoice):
        return speaker
    if isinstance(speaker, torch.Tensor):
        shape = tuple(speaker.shape)
        if speaker.numel() != embedding_dim or speaker.dim() > 2 or (speaker.dim() == 2 and shape[0] != 1):
            raise ValueError(
                f"A speaker embedding must have shape [{embedding_dim}] or [1, {embedding_dim}], got {shape}."
            )
        return FunAudioChatVoice(speaker)
    if not isinstance(speaker, (str, os.PathLike)):
        raise ValueError(
            "speaker must be a voice name, a FunAudioChatVoice, a voice directory or file, or a tensor, got "
            f"{type(speaker).__name__}."
        )
    if is_voice_path(speaker):
        return FunAudioChatVoice.load(speaker)
    if Path(speaker).exists():
        raise ValueError(
            f"{os.fspath(speaker)!r} is not a saved voice (a voice directory holds voice.safetensors). To speak in the "
            f"voice of an audio clip, clone it first: voice = token2wav.clone_voice({os.fspath(speaker)!r})."
        )
    if _looks_like_path(speaker):
        raise FileNotFoundError(f"Voice {os.fspath(speaker)!r} not found (no such directory or file).")
    if default is not None and speaker == default.name:
        return default
    voices = stock_voices()
    if speaker not in voices:
        names = ", ".join(repr(name) for name in voices)
        raise ValueError(
            f"Unknown speaker {speaker!r}; valid speakers: {names}, a voice directory or file, a FunAudioChatVoice, "
            f"or a tensor of {embedding_dim}."
        )
    return FunAudioChatVoice(voices[speaker], name=speaker, source="stock voice (new_spk2info.pt)")
