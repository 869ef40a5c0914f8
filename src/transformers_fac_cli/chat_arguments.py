"""The command line of `fac-chat`: its arguments, their help and every usage check, with nothing heavier than
argparse, so that `fac-chat --help` and a usage error answer at once (the command imports torch and transformers
only to run; see `transformers_fac.cli`)."""

import argparse
import os
import sys
from pathlib import Path

DEFAULT_MODEL = "FunAudioLLM/Fun-Audio-Chat-8B"
QUANTIZATIONS = ("int8", "int4", "nf4", "fp8")
"""`--quantize` names: `transformers_fac.quantization.QUANTIZATIONS` (not imported here: it would load torch)."""
OUTPUT_FILES = """\
output files:
  The reply text goes to stdout; progress and the path of every file written go to stderr.
  One question: the spoken reply is written to -o (default: reply.wav in the current folder).
  Several questions, or --interactive: turn N is written to <name>_N<suffix>, so -o r.wav writes
  r_1.wav, r_2.wav, ... (never r.wav itself). Existing files are overwritten. --text-only writes no file.
  --live: stdout holds the conversation's events, one line each, and the turn latencies at the end;
  each answered turn's reply goes to <output-dir>/reply_<turn>.wav.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fac-chat",
        description="Ask Fun-Audio-Chat a spoken question; print its reply and write the spoken reply to a wav file.",
        epilog=OUTPUT_FILES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("audio", nargs="*", help="question audio file(s); several files are consecutive chat turns")
    parser.add_argument(
        "-o",
        "--output",
        default="reply.wav",
        help="the spoken reply's 24 kHz wav (default: %(default)s); several turns are numbered (below)",
    )
    parser.add_argument("--model", default=DEFAULT_MODEL, help="Hub id or directory, or 'tiny' for the test model")
    parser.add_argument("--token2wav", default=None, help="Hub id or directory of the CosyVoice3 decoder")
    parser.add_argument("--text-only", action="store_true", help="reply in text only (no speech)")
    parser.add_argument("--system", default=None, help="system prompt (default: the official one of the mode)")
    parser.add_argument("--device", default=None, choices=["cpu", "cuda"], help="default: cuda when available")
    parser.add_argument("--dtype", default=None, choices=["bfloat16", "float32"], help="default: bf16 on cuda")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="LLM steps (5 per second of speech)")
    parser.add_argument(
        "--quantize",
        default=None,
        choices=QUANTIZATIONS,
        help="quantize the LLM backbone's weights: int8, fp8 (torchao), nf4 (bitsandbytes), int4 (torchao, CUDA)",
    )
    parser.add_argument("--interactive", action="store_true", help="ask for an audio file at each turn")
    add_voice_arguments(parser)
    add_live_arguments(parser)
    return parser


def add_voice_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--voice",
        default=None,
        metavar="VOICE",
        help="speak in this voice: a stock voice (中文女 (default), 中文男), a reference clip (1-30 s of speech, "
        "cloned) or a saved voice directory/file",
    )
    parser.add_argument("--speaker", default=None, help=argparse.SUPPRESS)  # the deprecated name of --voice
    parser.add_argument("--save-voice", default=None, metavar="DIR", help="save the --voice voice to DIR for reuse")


def check_voice_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Reject contradictory voice options (exits through `parser.error`); `--speaker` (deprecated) becomes `--voice`.
    A `--voice` that is no existing path is a voice name, checked once the decoder's voices are loaded."""
    if args.speaker is not None:
        if args.voice is not None:
            parser.error("give either --voice or --speaker, not both (--speaker is the deprecated name of --voice)")
        print("fac-chat: --speaker is deprecated and will be removed in 0.2; use --voice", file=sys.stderr)
        args.voice = args.speaker
    if args.voice is None and args.save_voice is not None:
        parser.error("--save-voice saves the voice given with --voice")
    if args.voice is not None and args.text_only:
        parser.error("--voice chooses the voice of spoken replies; it cannot be used with --text-only")
    if args.voice is not None and not Path(args.voice).exists() and _looks_like_path(args.voice):
        parser.error(f"--voice: no such file or directory: {args.voice}")


def _looks_like_path(voice: str) -> bool:
    """A path rather than a voice name: it names a folder or has a file suffix."""
    return "/" in voice or os.sep in voice or bool(Path(voice).suffix)


def add_live_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("hands-free conversation (--live)")
    group.add_argument("--live", action="store_true", help="talk hands-free: microphone in, loudspeaker out")
    group.add_argument("--input", default=None, help="with --live: a recorded conversation to play instead of the mic")
    group.add_argument("--fast", action="store_true", help="with --input: as fast as the model goes, not real time")
    group.add_argument("--output-dir", default=".", help="with --live: where reply_<turn>.wav files go (default: .)")
    group.add_argument("--silence", type=float, default=0.6, help="seconds of silence that end your turn")
    group.add_argument(
        "--echo-cancelled", action="store_true", help="your microphone does not hear the loudspeaker (headphones, AEC)"
    )


def check_live_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Usage errors of the live options (before anything is loaded)."""
    if not args.live:
        for name in ("input", "fast"):
            if getattr(args, name):
                parser.error(f"--{name} goes with --live")
        return
    if args.audio or args.interactive:
        parser.error("--live takes no question files: use --input FILE to play a recorded conversation")
    if args.fast and not args.input:
        parser.error("--fast plays a recording faster than real time: give it with --input FILE")
    if not args.silence > 0:
        parser.error("--silence must be positive")


def parse_chat_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    """`fac-chat`'s arguments, checked (a usage error exits with status 2 and one line, as argparse does)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    check_voice_arguments(parser, args)
    check_live_arguments(parser, args)
    if not args.audio and not args.interactive and not args.live:
        parser.error("give at least one audio file, or --interactive, or --live")
    return args


__all__ = ["DEFAULT_MODEL", "build_parser", "parse_chat_arguments"]
