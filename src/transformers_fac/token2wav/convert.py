"""`fac-convert-cosyvoice`: convert a CosyVoice3 release (`cosyvoice3.yaml`, `flow.pt`, `hift.pt`) into a transformers
checkpoint (`config.json` + `model.safetensors`) of [`FunAudioChatToken2Wav`], or back with `--to-cosyvoice`.

    fac-convert-cosyvoice FunAudioLLM/Fun-CosyVoice3-0.5B-2512 ./fun-audio-chat-token2wav
    fac-convert-cosyvoice ./fun-audio-chat-token2wav ./cosyvoice-layout --to-cosyvoice
"""

import argparse
from pathlib import Path

import torch

from .cosyvoice_loading import DEFAULT_COSYVOICE_REPO, save_cosyvoice_dir

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fac-convert-cosyvoice", description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help=f"CosyVoice3 directory or hub id (e.g. {DEFAULT_COSYVOICE_REPO})")
    parser.add_argument("output", help="directory to write")
    parser.add_argument("--revision", default=None, help="hub revision of the source")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32", help="weights dtype (f0 stays float32)")
    parser.add_argument(
        "--to-cosyvoice",
        action="store_true",
        help="read a transformers checkpoint and write the CosyVoice3 layout instead",
    )
    parser.add_argument(
        "--weight-norm-style",
        choices=["parametrizations", "weight_g"],
        default="parametrizations",
        help="HiFT weight-norm key names when writing the CosyVoice3 layout",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of `fac-convert-cosyvoice`."""
    from .modeling_token2wav import FunAudioChatToken2Wav

    args = build_parser().parse_args(argv)
    if args.to_cosyvoice:
        model = FunAudioChatToken2Wav.from_pretrained(args.source, revision=args.revision)
        out = save_cosyvoice_dir(model, args.output, weight_norm_style=args.weight_norm_style)
        print(f"Wrote the CosyVoice3 layout of {args.source} to {out}")
        return 0
    model = FunAudioChatToken2Wav.from_cosyvoice(args.source, revision=args.revision, dtype=DTYPES[args.dtype])
    model.save_pretrained(args.output)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"Wrote {Path(args.output)} ({n_params / 1e6:.1f} M parameters, {args.dtype})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
