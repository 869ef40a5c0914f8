"""`fac-chat --voice clip.wav|voice_dir [--save-voice DIR]`: reply in a cloned or saved voice.

fac-chat question.wav -o reply.wav --voice me.wav --save-voice voices/me   # clone from a clip, keep it
fac-chat question.wav -o reply.wav --voice voices/me                       # reuse the saved voice

The hooks in `cli.py`: `add_voice_arguments(parser)`, `check_voice_arguments(parser, args)` and
`speaker_from_args(decoder, args)` (the speaker every reply uses).
"""

import argparse
import sys
from pathlib import Path
from typing import Any


def add_voice_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--voice",
        default=None,
        metavar="PATH",
        help="speak in this voice: a reference clip (1-30 s of speech, cloned) or a saved voice directory/file",
    )
    parser.add_argument("--save-voice", default=None, metavar="DIR", help="save the --voice voice to DIR for reuse")


def check_voice_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Reject contradictory voice options (exits through `parser.error`)."""
    if args.voice is None and args.save_voice is not None:
        parser.error("--save-voice saves the voice given with --voice")
    if args.voice is not None and args.speaker is not None:
        parser.error("give either --voice or --speaker, not both")
    if args.voice is not None and args.text_only:
        parser.error("--voice chooses the voice of spoken replies; it cannot be used with --text-only")
    if args.voice is not None and not Path(args.voice).exists():
        parser.error(f"--voice: no such file or directory: {args.voice}")


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


__all__ = ["add_voice_arguments", "check_voice_arguments", "speaker_from_args"]
