"""Console entry points of transformers-fac that answer `--help` and usage errors at once.

Importing `transformers_fac` imports torch and transformers (seconds). `fac-chat` therefore parses and checks its
arguments here first ([`chat_arguments`]) and imports the package only to run the command.
"""

from .chat_arguments import parse_chat_arguments


def fac_chat(argv: list[str] | None = None) -> int:
    """The `fac-chat` command: usage errors and `--help` before any heavy import, then `transformers_fac.cli`."""
    args = parse_chat_arguments(argv)
    from transformers_fac.cli import run_parsed

    return run_parsed(args)


__all__ = ["fac_chat"]
