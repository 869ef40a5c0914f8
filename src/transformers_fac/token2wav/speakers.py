"""The official speaker file of Fun-Audio-Chat (`utils/new_spk2info.pt`): the CAM++ x-vectors of its stock voices.

The file is read from a local path, or downloaded once from the official Fun-Audio-Chat GitHub repository (pinned
commit) into the Hugging Face cache; its sha256 is checked before it is unpickled with `weights_only=True`.
"""

import hashlib
import os
import tempfile
from pathlib import Path

import torch
from huggingface_hub import constants

SPEAKER_FILE_SHA256 = "c6ec1c7877542e90397de80c0915c98632a168aa717cae96b0e90ace3ab9d9ed"
SPEAKER_FILE_URL = (
    "https://raw.githubusercontent.com/FunAudioLLM/Fun-Audio-Chat/"
    "8ba984b64b4880918db2807e08d795475481200c/utils/new_spk2info.pt"
)


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
