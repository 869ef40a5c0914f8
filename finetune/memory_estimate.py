"""ESTIMATED (not measured) GPU memory of LoRA fine-tuning Fun-Audio-Chat-8B, from the checkpoint's shapes.

The parameter counts are exact (the model is built on the `meta` device from `hub_configs/Fun-Audio-Chat-8B`, and
the LoRA parameters are those of the modules `lora_target_modules` selects); the activation terms are a model of
what a bf16 training step with gradient checkpointing keeps (stated in `estimate`), not a measurement.

With `--quantize nf4` (QLoRA, `recipes/s2s_qlora.yaml`) the backbone's linear layers count at their quantized size
(bytes per weight as `benchmarks/bench_quantization.py` measures them) and the weights that stay unquantized at float32
(peft's k-bit preparation upcasts them for bitsandbytes; torchao schemes keep them bf16); the table then shows the
estimate beside the bf16 one.

Usage:
    python finetune/memory_estimate.py [--seq 2048] [--rank 16] [--target llm] [--quantize nf4]
"""

import argparse
import re
from pathlib import Path

import torch
from transformers import AutoConfig

import transformers_fac  # noqa: F401  (registers the config)
from transformers_fac import FunAudioChatForConditionalGeneration
from transformers_fac.training.lora import lora_target_modules

CONFIG = Path(__file__).resolve().parents[1] / "hub_configs" / "Fun-Audio-Chat-8B"
GiB = 1024**3
GPUS = (("24 GB (RTX 4090, L4, A10)", 23.6), ("40 GB (A100-40GB)", 39.4), ("48 GB (L40S, RTX 6000 Ada)", 44.9),
        ("80 GB (A100/H100-80GB)", 79.1), ("141 GB (H200)", 139.8))  # fmt: skip
"""(name, usable GiB as `torch.cuda.mem_get_info` reports on an idle card, approximately)."""
OVERHEAD_GIB = 2.0
"""CUDA context, cuBLAS/attention workspaces and allocator fragmentation (a rule of thumb)."""
QUANTIZED_BYTES = {"int8": 1.001, "fp8": 1.001, "nf4": 0.516, "int4": 0.531}
"""Bytes per quantized backbone weight, scales included (`benchmarks/bench_quantization.py`)."""
UPCAST_BY_KBIT_PREPARATION = {"nf4"}
"""Schemes whose unquantized weights peft's `prepare_model_for_kbit_training` turns to float32 (bitsandbytes)."""


def parameter_counts(config_dir: Path, rank: int, target: str) -> dict[str, int]:
    config = AutoConfig.from_pretrained(config_dir)
    with torch.device("meta"):
        model = FunAudioChatForConditionalGeneration(config)
    pattern = lora_target_modules(target)
    lora = sum(
        rank * (module.in_features + module.out_features)
        for name, module in model.named_modules()
        if re.fullmatch(pattern, name)
    )
    backbone = lora_target_modules("llm")  # the 7 projections of every LLM layer: what quantization converts
    linears = sum(module.weight.numel() for name, module in model.named_modules() if re.fullmatch(backbone, name))
    total = sum(p.numel() for p in model.parameters())
    return {"total": total, "lora": lora, "backbone": linears, "config": config}


def weight_bytes(counts: dict, quantize: str | None) -> tuple[str, float]:
    """The weights' term: its name and bytes (bf16, or the backbone quantized and the rest bf16 / float32)."""
    if quantize is None:
        return "weights (bf16)", counts["total"] * 2
    if quantize not in QUANTIZED_BYTES:
        raise ValueError(f"quantize must be one of {sorted(QUANTIZED_BYTES)}, got {quantize!r}.")
    rest = 4 if quantize in UPCAST_BY_KBIT_PREPARATION else 2
    name = f"weights ({quantize} backbone, the rest {'float32' if rest == 4 else 'bf16'})"
    return name, counts["backbone"] * QUANTIZED_BYTES[quantize] + (counts["total"] - counts["backbone"]) * rest


def estimate(
    seq: int = 2048, rank: int = 16, target: str = "llm", config_dir: Path = CONFIG, quantize: str | None = None
) -> dict[str, float]:
    """GiB per GPU for one sequence of `seq` LLM tokens (a micro-batch of 1), bf16 weights (or a `quantize`d
    backbone), fp32 LoRA + AdamW, gradient checkpointing on the LLM and the speech head, SDPA/FlashAttention (no S×S
    attention matrix); activations are bf16 either way (QLoRA computes in bf16)."""
    counts = parameter_counts(config_dir, rank, target)
    weights_name, weights = weight_bytes(counts, quantize)
    text, audio = counts["config"].text_config, counts["config"].audio_config
    crq = audio.crq_transformer_config
    crq_hidden, crq_inter, crq_layers = crq["hidden_size"], crq["intermediate_size"], crq["num_hidden_layers"]
    hidden, inter, layers, vocab = text.hidden_size, text.intermediate_size, text.num_hidden_layers, text.vocab_size
    speech = seq * audio.group_size  # 25 Hz speech-head positions
    bf16 = 2
    terms = {
        weights_name: weights,
        "LoRA params + grads + AdamW (fp32)": counts["lora"] * 16,
        # checkpointed layer inputs + the activations of one layer recomputed in backward (q/k/v/o, norms, SwiGLU)
        "LLM activations": (layers * seq * hidden + seq * (12 * hidden + 5 * inter)) * bf16,
        # bf16 logits, their fp32 upcast in the loss, log-softmax and its gradient
        "text logits + loss": seq * vocab * (bf16 + 12),
        "speech head activations": (crq_layers * speech * crq_hidden + speech * (12 * crq_hidden + 5 * crq_inter))
        * bf16
        + 2 * speech * hidden * bf16,
        "speech logits + loss": speech * audio.codebook_size * (bf16 + 12),
    }
    result = {name: value / GiB for name, value in terms.items()}
    result["overhead"] = OVERHEAD_GIB
    result["total"] = sum(result.values())
    result["per extra sequence"] = (
        terms["LLM activations"] + terms["text logits + loss"] + terms["speech head activations"]
    ) / GiB + terms["speech logits + loss"] / GiB
    result["parameters (B)"] = counts["total"] / 1e9
    result["LoRA parameters (M)"] = counts["lora"] / 1e6
    return result


def table(result: dict[str, float]) -> str:
    fixed = result["total"] - result["per extra sequence"]
    lines = ["| GPU memory | fits? | largest micro-batch (sequences) |", "|---|---|---|"]
    for name, size in GPUS:
        batch = int((size - fixed) // result["per extra sequence"])
        lines.append(f"| {name} | {'yes' if batch >= 1 else 'no'} | {batch if batch >= 1 else '-'} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seq", type=int, default=2048)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--target", default="llm")
    parser.add_argument("--quantize", default=None, choices=sorted(QUANTIZED_BYTES), help="QLoRA: the backbone's bits")
    args = parser.parse_args()
    result = estimate(args.seq, args.rank, args.target)
    print(f"ESTIMATE (not measured): seq {args.seq}, LoRA r={args.rank} on {args.target}, bf16, micro-batch 1")
    if args.quantize is None:
        for name, value in result.items():
            print(f"  {name}: {value:.2f}")
        print(table(result))
        return
    quantized = estimate(args.seq, args.rank, args.target, quantize=args.quantize)
    print(side_by_side(result, quantized, args.quantize))
    print(f"\nWith the {args.quantize} backbone:")
    print(table(quantized))


def side_by_side(bf16: dict[str, float], quantized: dict[str, float], quantize: str) -> str:
    """The two estimates, term by term (the first term, the weights, is named after each estimate's precision)."""
    weights = next(iter(quantized))
    lines = [f"| GiB | bf16 LoRA | {quantize} QLoRA |", "|---|---|---|"]
    for index, (name, other) in enumerate(zip(bf16, quantized.values())):
        label = f"weights (bf16 / {weights.removeprefix('weights (')}" if index == 0 else name
        lines.append(f"| {label} | {bf16[name]:.2f} | {other:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
