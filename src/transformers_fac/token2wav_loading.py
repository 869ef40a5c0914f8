"""Finding, loading and saving the CosyVoice3 token-to-waveform decoder that turns Fun-Audio-Chat's speech codes into
audio (the model's `token2wav` part, see `modeling_fun_audio_chat`).

A source is a [`FunAudioChatToken2Wav`] instance, a local directory (our `save_pretrained` layout with a
`config.json`, or the CosyVoice3 release layout with `cosyvoice3.yaml`, `flow.pt`, `hift.pt`), or a Hub repo id.
A relative directory name is first looked up inside the checkpoint directory, so that a checkpoint can ship its
decoder in a subfolder (`save_pretrained` writes it to `token2wav/`); a `spk2info.pt` there replaces the stock voices.
Loading reads the voices too, so that nothing is fetched later.

A local checkpoint or LoRA adapter folder may hold a voice in `voice/` (`FunAudioChatVoice.save`, e.g. written by the
`custom_voice_lora` recipe): `saved_voice` finds it when the model loads, and it becomes the decoder's default voice.
"""

import json
import os
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import hf_hub_download
from huggingface_hub.utils import tqdm

from .hub_access import hub_loading_kwargs

DEFAULT_TOKEN2WAV = "FunAudioLLM/Fun-CosyVoice3-0.5B-2512"
DECODER_HINT = (
    "Give a local decoder directory (from_pretrained(..., token2wav=DIR), fac-chat --token2wav DIR), set "
    "HF_HUB_OFFLINE=1 with it already in the cache, or load without it (token2wav=None) for written replies."
)
# Checkpoints whose decoder is known although their config.json does not name one.
KNOWN_TOKEN2WAV = {"FunAudioLLM/Fun-Audio-Chat-8B": DEFAULT_TOKEN2WAV}
# A decoder directory may ship its own voices (same format as the official speaker file) under this name.
VOICES_FILE = "spk2info.pt"
# The subfolder of a saved model that holds its decoder.
TOKEN2WAV_FOLDER = "token2wav"
# A checkpoint or adapter directory may ship the voice it speaks with by default under this name.
VOICE_DIR = "voice"


def saved_voice(checkpoint: str | os.PathLike | None, adapter_kwargs: dict | None = None) -> Path | None:
    """The voice saved next to a local adapter or checkpoint (`<folder>/voice/`), or None. When an Auto class loads
    an adapter folder, transformers passes the base checkpoint as the path and the adapter folder in
    `adapter_kwargs["_adapter_model_path"]`; the adapter's voice comes first."""
    for folder in ((adapter_kwargs or {}).get("_adapter_model_path"), checkpoint):
        if folder is not None and (Path(folder) / VOICE_DIR).is_dir():
            return Path(folder) / VOICE_DIR
    return None


def default_token2wav_source(config: Any, checkpoint: str | os.PathLike | None) -> str | None:
    """The decoder a checkpoint uses: its config's `token2wav_source`, else a known one for the official repo id."""
    if getattr(config, "token2wav_source", None):
        return config.token2wav_source
    return KNOWN_TOKEN2WAV.get(str(checkpoint)) if checkpoint is not None else None


def _local_directory(source: str, checkpoint: str | os.PathLike | None) -> Path | None:
    candidates = [Path(source)]
    if checkpoint is not None and Path(checkpoint).is_dir():
        candidates.insert(0, Path(checkpoint) / source)
    return next((path for path in candidates if path.is_dir()), None)


def _is_saved_token2wav(directory: Path) -> bool:
    config = directory / "config.json"
    return config.is_file() and json.loads(config.read_text()).get("model_type") == "funaudiochat_token2wav"


def load_token2wav(
    source: Any,
    checkpoint: str | os.PathLike | None = None,
    device: torch.device | str | None = None,
    default_voice: Any = None,
    **hub_kwargs,
):
    """Loads a token-to-waveform decoder from `source` (see the module docstring) with its voices, in float32 on
    `device`, in eval mode, showing a progress bar; `default_voice` (e.g. `saved_voice(checkpoint)`) becomes what
    `voice=None` means."""
    from .token2wav import FunAudioChatToken2Wav

    if not isinstance(source, (FunAudioChatToken2Wav, str, os.PathLike)):
        raise TypeError(
            f"token2wav must be a FunAudioChatToken2Wav, a directory or a Hub repo id, got {type(source).__name__}."
        )
    with tqdm(total=3, desc="Loading token2wav", unit="step") as progress:
        voices = None
        if isinstance(source, FunAudioChatToken2Wav):
            model = source
        else:
            source = os.fspath(source)
            directory = _local_directory(source, checkpoint)
            if directory is None:
                hub_kwargs = _hub_access(source, hub_kwargs)
            if directory is not None:
                saved = _is_saved_token2wav(directory)
                model = (
                    FunAudioChatToken2Wav.from_pretrained(directory)
                    if saved
                    else FunAudioChatToken2Wav.from_cosyvoice(directory)
                )
                if (directory / VOICES_FILE).is_file():
                    voices = directory / VOICES_FILE
            elif _hub_repo_is_saved_token2wav(source, **hub_kwargs):
                model = FunAudioChatToken2Wav.from_pretrained(source, **hub_kwargs)
            else:
                model = FunAudioChatToken2Wav.from_cosyvoice(source, **hub_kwargs)
        progress.update()
        if voices is not None:
            model.load_voices(voices, check_hash=False)
        else:
            model.voice_names  # noqa: B018 - the stock voices (the official speaker file, downloaded once)
        if default_voice is not None:
            model.set_default_voice(default_voice)
        progress.update()
        model = model.eval() if device is None else model.eval().to(device)
        progress.update()
    return model


def save_token2wav(model, directory: str | os.PathLike) -> Path:
    """Writes `model` in our `save_pretrained` layout plus its stock voices (`spk2info.pt`), as `load_token2wav`
    reads it (a default voice is saved next to the checkpoint, in `voice/`, by the model's `save_pretrained`)."""
    directory = Path(directory)
    model.save_pretrained(directory)
    voices = {name: {"embedding": embedding.reshape(1, -1).cpu()} for name, embedding in model.stock_voices.items()}
    torch.save(voices, directory / VOICES_FILE)
    return directory


def _hub_access(source: str, hub_kwargs: dict) -> dict:
    """`hub_kwargs`, made `local_files_only` when the Hub is unreachable but `source` is cached; a decoder that can be
    had neither way fails at once with what to do (see `hub_access`)."""
    if hub_kwargs.get("local_files_only"):
        return hub_kwargs
    return {**hub_kwargs, **hub_loading_kwargs(source, "the speech decoder", DECODER_HINT)}


def _hub_repo_is_saved_token2wav(repo_id: str, **hub_kwargs) -> bool:
    """True when the repo holds our `save_pretrained` layout (its config.json names our model type)."""
    try:
        path = hf_hub_download(repo_id, "config.json", **hub_kwargs)
    except Exception:  # noqa: BLE001 - a CosyVoice release has no config.json; the other loader reports real errors
        return False
    return json.loads(Path(path).read_text()).get("model_type") == "funaudiochat_token2wav"


__all__ = [
    "DEFAULT_TOKEN2WAV",
    "KNOWN_TOKEN2WAV",
    "TOKEN2WAV_FOLDER",
    "VOICE_DIR",
    "default_token2wav_source",
    "load_token2wav",
    "save_token2wav",
    "saved_voice",
]
