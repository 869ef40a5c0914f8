"""`fac-chat --voice NAME|clip.wav|voice_dir [--save-voice DIR]`: reply in a stock, cloned or saved voice.

fac-chat question.wav -o reply.wav --voice 中文男                           # a stock voice
fac-chat question.wav -o reply.wav --voice me.wav --save-voice voices/me   # clone from a clip, keep it
fac-chat question.wav -o reply.wav --voice voices/me                       # reuse the saved voice

The options and their usage checks are in `transformers_fac_cli.chat_arguments`; `voice_from_args(decoder, args)`
gives the voice every reply uses.
"""

import argparse
import sys
from pathlib import Path
from typing import Any


def _is_clip(voice: str) -> bool:
    """An existing file or folder that is not a saved voice: a reference clip to clone."""
    from .voice import is_voice_path

    return Path(voice).exists() and not is_voice_path(voice)


def voice_from_args(decoder, args: argparse.Namespace) -> Any:
    """The voice of spoken replies (None: the decoder's default; always None with `--text-only`, which the usage
    checks keep apart from `--voice`): the `--voice` stock or saved voice (an unknown one raises now, not after a
    reply), or the voice cloned from a `--voice` clip; saved with `--save-voice`."""
    if args.voice is None:
        return None
    if _is_clip(args.voice):
        print(f"Cloning the voice of {args.voice}...", file=sys.stderr, flush=True)
        voice = decoder.clone_voice(args.voice, name=Path(args.voice).stem)
    else:
        voice = decoder.resolve_voice(args.voice)
    if args.save_voice is not None:
        print(f"Saved the voice to {voice.save(args.save_voice)}", file=sys.stderr, flush=True)
    return voice


def check_voice_extra(voice: str) -> None:
    """Before the model loads: cloning from a clip needs the `voice` extra and the speech tokenizer (a stock or saved
    voice needs neither)."""
    from .voice import require_cloning

    if _is_clip(voice):
        require_cloning("fac-chat --voice CLIP (cloning a voice)")


__all__ = ["check_voice_extra", "voice_from_args"]
