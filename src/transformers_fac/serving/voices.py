"""The voices a server offers: the decoder's stock voices and saved voices given at start (`--voice-dir`)."""

from pathlib import Path
from typing import Any


def load_voices(paths: list[str], stock: list[str]) -> dict[str, Any]:
    """Voice name -> what the decoder takes as `voice`: each stock name, then every saved voice under `paths`.

    A path is a saved voice (a directory with `voice.safetensors`, or a voice `.safetensors` file) or a folder of
    them. A saved voice is named by its own `name`, else by its file or directory name.

    Example:
        >>> load_voices([], ["中文女", "中文男"])
        {'中文女': '中文女', '中文男': '中文男'}
    """
    from ..voice import FunAudioChatVoice, is_voice_path

    voices: dict[str, Any] = {name: name for name in stock}
    for path in map(Path, paths):
        found = [path] if is_voice_path(path) else []
        if not found and path.is_dir():
            found = sorted(child for child in path.iterdir() if is_voice_path(child))
        if not found:
            raise ValueError(
                f"{path}: no saved voice there (a directory with voice.safetensors, a voice .safetensors file, or a "
                "folder of them; make one with `fac-chat --save-voice` or `FunAudioChatVoice.save`)."
            )
        for voice_path in found:
            voice = FunAudioChatVoice.load(voice_path)
            name = voice.name or voice_path.name.removesuffix(".safetensors")
            if name in voices:
                raise ValueError(f"Two voices are named {name!r} ({voice_path}); rename one of them.")
            voices[name] = voice
    return voices


__all__ = ["load_voices"]
