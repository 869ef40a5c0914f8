"""`fac-chat --voice clip.wav|voice_dir [--save-voice DIR]`: reply in a cloned or saved voice.

fac-chat question.wav -o reply.wav --voice me.wav --save-voice voices/me   # clone from a clip, keep it
fac-chat question.wav -o reply.wav --voice voices/me                       # reuse the saved voice

The options and their usage checks are in `transformers_fac_cli.chat_arguments`; `speaker_from_args(decoder, args)`
gives the speaker every reply uses.
"""

import argparse
import sys
from pathlib import Path
from typing import Any


def speaker_from_args(decoder, args: argparse.Namespace) -> Any:
    """The speaker for `generate`: the `--voice` voice (loaded, or cloned from a clip, then saved with `--save-voice`),
    else `--speaker` (None: the decoder's default)."""
    from .voice import is_voice_path

    if args.voice is None:
        return args.speaker
    if is_voice_path(args.voice):
        voice = decoder.resolve_voice(args.voice)
    else:
        print(f"Cloning the voice of {args.voice}...", file=sys.stderr, flush=True)
        voice = decoder.clone_voice(args.voice, name=Path(args.voice).stem)
    if args.save_voice is not None:
        print(f"Saved the voice to {voice.save(args.save_voice)}", file=sys.stderr, flush=True)
    return voice


def check_voice_extra(voice: str) -> None:
    """Before the model loads: cloning from a clip needs the `voice` extra and the speech tokenizer (a saved voice
    needs nothing more)."""
    from .voice import is_voice_path, require_cloning

    if not is_voice_path(voice):
        require_cloning("fac-chat --voice CLIP (cloning a voice)")


__all__ = ["check_voice_extra", "speaker_from_args"]
