"""What quantizing the backbone saves and costs (issue 22): memory at the real 8B shapes, agreement and speed on the
mid-size random model, and a real quantized load of the random-weight 8B model.

How to run
----------
    python benchmarks/bench_quantization.py                      # memory (8B, meta device) + cost + CPU speed (mid)
    python benchmarks/bench_quantization.py --sections memory    # only the accounting (seconds, no weights)
    python benchmarks/bench_quantization.py --sections load --load-dir /tmp/fac-8b-random --quantize int8
        # writes a random bf16 checkpoint of the 8B shapes (about 17 GB of disk) once, then loads it quantized in a
        # fresh process and reports its peak memory (about 12 GB of RAM for int8, 9 GB for nf4)

What is measured
----------------
- memory: the model is built on the `meta` device from `hub_configs/Fun-Audio-Chat-8B` (the decoder from
  `hub_configs/Fun-CosyVoice3-0.5B-2512`); transformers' own quantizer says which parameters a config quantizes
  (`planned_quantized_parameters`, the class's skip list applied; `+head`: with `quantize_speech_head=True`); a quantized parameter costs the bytes per weight
  that the scheme's tensors take on a real 4096 × 4096 bf16 layer quantized here (int8, fp8, nf4; int4's tinygemm
  layout needs CUDA, so its bytes are counted from the layout: 4 bits per weight plus a bf16 scale and zero per group
  of 128). Everything else stays bf16, the decoder float32 (as loaded).
- cost (mid-size preset of bench_generate.py, random float32 weights, CPU): for each scheme that runs on a CPU, over
  3 prompts (the 3 recorded questions of tests/fixtures/audio, spoken-reply system prompt), the SNR of the prefill text and speech logits against the unquantized model, and greedy
  agreement: the share of the reply's text ids and speech codes equal to the unquantized model's at the same
  position, and the first step where they part (random weights have near-tied logits, so real weights should agree
  more; their quality is measured with `fac-eval` on real data).
- speed (mid, CPU): ms per 5 Hz step of greedy spoken generation, float32 eager, bf16 eager and int8 weight-only
  compiled (`cache_implementation="static"`), interleaved, medians of `--repeats` after a warm-up each.
- load: `from_pretrained(..., quantization_config=...)` of a random 8B bf16 checkpoint (one 64 MB block of normal
  values, std 0.02, tiled over every matrix; norms 1) in a fresh process (no decoder),
  with its peak resident memory split into anonymous memory (what was materialised) and file pages (the mmapped
  checkpoint, which the kernel can drop), sampled every 50 ms, and the bytes of the loaded weights.
No timing is asserted; numbers depend on the machine (shared CPUs: read the ratios).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
CONFIG_8B = REPO / "hub_configs" / "Fun-Audio-Chat-8B"
DECODER_8B = REPO / "hub_configs" / "Fun-CosyVoice3-0.5B-2512"
TINY_FAC = REPO / "tests" / "fixtures" / "golden" / "tiny-fac"
QUESTIONS = sorted((REPO / "tests" / "fixtures" / "audio").glob("*.wav"))
GB = 1e9
PARTS = {
    "backbone linears": "language_model.model.layers.",
    "embeddings + LM head": ("language_model.model.embed_tokens", "language_model.lm_head"),
    "audio encoders": ("continuous_audio_tower", "audio_tower"),
    "speech head": "audio_invert_tower",
}


def stored_bytes(tensor: torch.Tensor) -> int:
    """Bytes a (possibly quantized) weight keeps: its inner tensors for a torchao subclass, the packed data and the
    quantization state for bitsandbytes."""
    inner = getattr(tensor, "__tensor_flatten__", None)
    if inner is not None and type(tensor) is not torch.nn.Parameter:
        return sum(stored_bytes(getattr(tensor, name)) for name in inner()[0])
    state = getattr(tensor, "quant_state", None)
    total = tensor.numel() * tensor.element_size()
    if state is not None:
        total += sum(stored_bytes(value) for value in state.as_dict(packed=False).values() if torch.is_tensor(value))
    if getattr(tensor, "SCB", None) is not None:
        total += stored_bytes(tensor.SCB)
    return total


def bytes_per_weight(name: str) -> float:
    """Bytes per quantized weight of scheme `name`, on a real 4096 x 4096 bf16 layer (int4: from its layout)."""
    if name == "bf16":
        return 2.0
    if name == "int4":  # tinygemm: 4 bits per weight, a bf16 scale and zero per group of 128 (CUDA only)
        return 0.5 + 4 / 128
    from transformers_fac.quantization import quantization_config

    layer = torch.nn.Linear(4096, 4096, bias=False, dtype=torch.bfloat16)
    config = quantization_config(name, "cpu")
    if name == "nf4":
        import bitsandbytes

        weight = bitsandbytes.nn.Params4bit(
            layer.weight.data, requires_grad=False, quant_type="nf4", compress_statistics=True
        )
        weight = weight.to("cpu")  # quantizes
    else:
        from torchao.quantization import quantize_

        quantize_(layer, config.quant_type)
        weight = layer.weight
    return stored_bytes(weight) / layer.weight.shape.numel()


def part_of(name: str) -> str:
    for part, prefixes in PARTS.items():
        if name.startswith(prefixes):
            return part
    return "norms, other"


def memory_table(schemes: list[str]) -> str:
    """Bytes per part of the 8B model for each scheme (meta-device accounting)."""
    from transformers import AutoConfig, TorchAoConfig

    from transformers_fac import FunAudioChatForConditionalGeneration, FunAudioChatToken2Wav
    from transformers_fac.quantization import planned_quantized_parameters, quantization_config, with_skip_modules
    from transformers_fac.token2wav import FunAudioChatToken2WavConfig

    config = AutoConfig.from_pretrained(CONFIG_8B)
    with torch.device("meta"):
        decoder = FunAudioChatToken2Wav(FunAudioChatToken2WavConfig.from_pretrained(DECODER_8B))
    decoder_gb = sum(p.numel() for p in decoder.parameters()) * 4 / GB
    columns = {}
    for scheme in schemes:
        name, _, head = scheme.partition("+")  # "int4+head": the speech head's transformer quantized too
        with torch.device("meta"):
            model = FunAudioChatForConditionalGeneration(config)
        numels = {key: p.numel() for key, p in model.named_parameters()}
        planned = set()
        if name != "bf16":
            if name == "int4":  # built by hand: the switch refuses int4 on a CPU, the plan needs no kernel
                from torchao.quantization import Int4WeightOnlyConfig

                quant = TorchAoConfig(Int4WeightOnlyConfig(group_size=128, int4_packing_format="tile_packed_to_4d"))
            else:
                quant = quantization_config(name, "cpu")
            skip = model.modules_not_quantized(quantize_speech_head=bool(head))
            planned = set(planned_quantized_parameters(model, with_skip_modules(quant, skip)))
        per_weight = bytes_per_weight(name)
        parts = dict.fromkeys([*PARTS, "norms, other"], 0.0)
        for key, numel in numels.items():
            parts[part_of(key)] += numel * (per_weight if key in planned else 2) / GB
        parts["decoder (float32)"] = decoder_gb
        parts["total"] = sum(parts.values())
        parts["bytes per backbone weight"] = per_weight
        columns[scheme] = parts
    rows = list(next(iter(columns.values())))
    lines = ["| GB (10^9 bytes) | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for row in rows:
        digits = 3 if row.startswith("bytes") else 2
        lines.append(f"| {row} | " + " | ".join(f"{columns[c][row]:.{digits}f}" for c in columns) + " |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------------------------
# Cost and speed on the mid-size preset
# ------------------------------------------------------------------------------------------------------------------
def mid_checkpoint(folder: Path, seed: int) -> None:
    from bench_generate import build_model, hub_config

    model = build_model(hub_config("mid"), torch.device("cpu"), torch.float32, seed)
    model.save_pretrained(folder)


def question_prompts() -> list[dict]:
    """Processor outputs of the fixture questions (3 recordings) under the spoken-reply system prompt, with the
    tokenizer of the mid preset's vocabulary."""
    from transformers import AutoProcessor

    from transformers_fac import S2M_SYSTEM_PROMPT, FunAudioChatConversation

    processor = AutoProcessor.from_pretrained(TINY_FAC)
    prompts = []
    for audio in QUESTIONS:
        chat = FunAudioChatConversation(system_prompt=S2M_SYSTEM_PROMPT)
        chat.add_user_audio(str(audio))
        prompts.append(dict(chat.model_inputs(processor)))
    return prompts


def snr_db(reference: torch.Tensor, other: torch.Tensor) -> float:
    return (10 * torch.log10(reference.pow(2).mean() / (reference - other).pow(2).mean())).item()


def greedy(model, inputs: dict, steps: int, **extra) -> tuple[list[int], list[int]]:
    from bench_generate import generate_kwargs, hub_config

    settings = generate_kwargs(steps, hub_config("mid"))
    out = model.generate(
        **inputs, **settings, **extra, generation_mode="audio", return_dict_in_generate=True, return_audio=False
    )
    return out.sequences[0, inputs["input_ids"].shape[1] :].tolist(), out.speech_ids[0].tolist()


def agreement(reference: list[int], other: list[int]) -> tuple[float, int | None]:
    """Share of positions with the same id, and the first position where they differ (None: never)."""
    same = [a == b for a, b in zip(reference, other)]
    share = sum(same) / max(len(reference), len(other), 1)
    first = next((index for index, equal in enumerate(same) if not equal), None)
    if first is None and len(reference) != len(other):
        first = len(same)
    return share, first


def print_cost_table(folder: Path, schemes: list[str], steps: int) -> None:
    """Prints the table a row at a time (a slow scheme on a shared CPU does not hide the others' rows)."""
    from transformers import AutoModelForMultimodalLM

    from transformers_fac.quantization import quantization_config

    prompts = question_prompts()
    reference = AutoModelForMultimodalLM.from_pretrained(folder, token2wav=None).eval()
    with torch.no_grad():
        reference_logits = [reference(**inputs) for inputs in prompts]
    reference_ids = [greedy(reference, inputs, steps) for inputs in prompts]
    print(
        "| scheme | text logit SNR dB (min) | speech logit SNR dB (min) | text ids equal | speech codes equal | "
        "first differing step (text; codes / 5) |\n|---|---|---|---|---|---|",
        flush=True,
    )
    for scheme in schemes:
        model = AutoModelForMultimodalLM.from_pretrained(
            folder, token2wav=None, quantization_config=quantization_config(scheme, "cpu")
        ).eval()
        text_snr, speech_snr, text_same, code_same, firsts = [], [], [], [], []
        for inputs, logits, (text_ids, codes) in zip(prompts, reference_logits, reference_ids):
            with torch.no_grad():
                out = model(**inputs)
            text_snr.append(snr_db(logits.text_logits, out.text_logits))
            speech_snr.append(snr_db(logits.speech_logits, out.speech_logits))
            other_text, other_codes = greedy(model, inputs, steps)
            share, first = agreement(text_ids, other_text)
            code_share, code_first = agreement(codes, other_codes)
            text_same.append(share)
            code_same.append(code_share)
            code_step = "–" if code_first is None else str(code_first // 5)
            firsts.append(f"{'–' if first is None else first}; {code_step}")
        print(
            f"| {scheme} | {statistics.mean(text_snr):.1f} ({min(text_snr):.1f}) | "
            f"{statistics.mean(speech_snr):.1f} ({min(speech_snr):.1f}) | {statistics.mean(text_same):.1%} | "
            f"{statistics.mean(code_same):.1%} | {', '.join(firsts)} |",
            flush=True,
        )


def speed_table(folder: Path, steps: int, repeats: int) -> str:
    from transformers import AutoModelForMultimodalLM

    from transformers_fac.quantization import quantization_config

    inputs = question_prompts()[0]
    variants = {
        "float32, eager": (AutoModelForMultimodalLM.from_pretrained(folder, token2wav=None), {}),
        "bf16, eager": (AutoModelForMultimodalLM.from_pretrained(folder, token2wav=None, dtype=torch.bfloat16), {}),
        "int8 weight-only, compiled": (
            AutoModelForMultimodalLM.from_pretrained(
                folder, token2wav=None, quantization_config=quantization_config("int8", "cpu")
            ),
            {"cache_implementation": "static"},
        ),
    }
    inputs_of = {
        name: {**inputs, "input_features": inputs["input_features"].to(model.dtype)}
        for name, (model, _) in variants.items()
    }

    def run(name: str) -> float:
        model, extra = variants[name]
        start = time.perf_counter()
        greedy(model.eval(), inputs_of[name], steps, **extra)
        return time.perf_counter() - start

    warm = {name: run(name) for name in variants}
    times = {name: [] for name in variants}
    for _ in range(repeats):
        for name in variants:
            times[name].append(run(name))
    base = times["float32, eager"]
    lines = ["| variant | ms per 5 Hz step | vs float32 eager | first call s |", "|---|---|---|---|"]
    for name, runs in times.items():
        ratio = statistics.median(b / r for b, r in zip(base, runs))
        lines.append(f"| {name} | {1000 * statistics.median(runs) / steps:.1f} | {ratio:.2f}× | {warm[name]:.1f} |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------------------------
# A real load of the 8B shapes
# ------------------------------------------------------------------------------------------------------------------
def write_random_8b(folder: Path, shard_bytes: int = 2 * 1024**3) -> None:
    """A random bf16 checkpoint of the 8B shapes, written shard by shard (never the whole model in memory)."""
    from safetensors.torch import save_file
    from transformers import AutoConfig

    from transformers_fac import FunAudioChatForConditionalGeneration

    if (folder / "model.safetensors.index.json").exists():
        return
    folder.mkdir(parents=True, exist_ok=True)
    config = AutoConfig.from_pretrained(CONFIG_8B)
    config.dtype = torch.bfloat16
    with torch.device("meta"):
        model = FunAudioChatForConditionalGeneration(config)
    generator = torch.Generator().manual_seed(0)
    # Random values are drawn once (64 MB) and tiled: memory is what is measured, and drawing 9.4 B numbers would
    # take most of an hour on a shared CPU.
    block = (torch.randn(2**25, generator=generator) * 0.02).to(torch.bfloat16)
    shard, size, index = {}, 0, {}

    def flush():
        nonlocal shard, size
        name = f"model-{len(set(index.values())) + 1:05d}.safetensors"
        save_file(shard, folder / name, metadata={"format": "pt"})
        index.update(dict.fromkeys(shard, name))
        shard, size = {}, 0

    for name, parameter in model.named_parameters():  # tied weights are listed once, as save_pretrained writes them
        tensor = torch.ones(parameter.shape, dtype=torch.bfloat16)
        if parameter.dim() > 1:
            flat = tensor.view(-1)
            for start in range(0, flat.numel(), block.numel()):
                piece = flat[start : start + block.numel()]
                piece.copy_(block[: piece.numel()])
        shard[name] = tensor
        size += tensor.numel() * 2
        if size >= shard_bytes:
            flush()
    if shard:
        flush()
    total = sum((folder / name).stat().st_size for name in set(index.values()))
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": index}, indent=1)
    )
    config.save_pretrained(folder)


def memory_sampler(stop: threading.Event, peaks: dict) -> None:
    while not stop.wait(0.05):
        status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
        for key in ("VmRSS", "RssAnon", "RssFile"):
            peaks[key] = max(peaks.get(key, 0), int(status[key].split()[0]) * 1024)


def load_worker(folder: str, scheme: str) -> None:
    """In a fresh process: load the checkpoint quantized, print peak memory and weight bytes as JSON."""
    from transformers import AutoModelForMultimodalLM

    import transformers_fac  # noqa: F401
    from transformers_fac.quantization import quantization_config

    stop, peaks = threading.Event(), {}
    sampler = threading.Thread(target=memory_sampler, args=(stop, peaks), daemon=True)
    sampler.start()
    start = time.perf_counter()
    try:
        model = AutoModelForMultimodalLM.from_pretrained(
            folder, dtype=torch.bfloat16, token2wav=None, quantization_config=quantization_config(scheme, "cpu")
        )
    finally:
        stop.set()
        sampler.join()
    seconds = time.perf_counter() - start
    weights = sum(stored_bytes(parameter) for parameter in model.parameters())
    print(json.dumps({"seconds": seconds, "weights": weights, **peaks}))


def print_load_table(folder: Path, schemes: list[str]) -> None:
    """Writes (or reuses) the checkpoint, then loads it once per scheme; rows are printed as they are measured."""
    started = time.perf_counter()
    write_random_8b(folder)
    checkpoint = sum(path.stat().st_size for path in folder.glob("*.safetensors"))
    print(
        f"random bf16 checkpoint: {checkpoint / GB:.2f} GB on disk (written/reused in "
        f"{time.perf_counter() - started:.0f} s)\n\n"
        "| scheme | load s | weights GB | peak RSS GB | peak anonymous GB | peak file pages GB |\n"
        "|---|---|---|---|---|---|",
        flush=True,
    )
    for scheme in schemes:
        result = subprocess.run(
            [sys.executable, __file__, "--load-worker", scheme, "--load-dir", str(folder)],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])},
        )
        if result.returncode != 0:
            print(f"| {scheme} | failed: {result.stderr.strip().splitlines()[-1]} | | | | |", flush=True)
            continue
        data = json.loads(result.stdout.strip().splitlines()[-1])
        print(
            f"| {scheme} | {data['seconds']:.0f} | {data['weights'] / GB:.2f} | {data['VmRSS'] / GB:.2f} | "
            f"{data['RssAnon'] / GB:.2f} | {data['RssFile'] / GB:.2f} |",
            flush=True,
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sections", default="memory,cost,speed", help="comma-separated: memory, cost, speed, load")
    parser.add_argument(
        "--schemes",
        default="bf16,int8,fp8,nf4,int4,nf4+head,int4+head",
        help="memory columns (+head: speech head too)",
    )
    parser.add_argument("--quantize", default="int8,nf4", help="schemes of the real load")
    parser.add_argument("--cost-schemes", default="int8,nf4,fp8", help="schemes of the cost table (CPU ones)")
    parser.add_argument("--steps", type=int, default=20, help="greedy LLM steps per reply (cost, speed)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved timed runs per speed variant")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--load-dir", default="/tmp/fac-8b-random", help="the random 8B checkpoint (load)")
    parser.add_argument("--load-worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.load_worker:
        load_worker(args.load_dir, args.load_worker)
        return
    import transformers_fac  # noqa: F401

    torch.set_flush_denormal(True)
    sections = args.sections.split(",")
    print(f"## Quantization benchmark: torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    if "memory" in sections:
        print("### Weights of Fun-Audio-Chat-8B (random weights, meta-device accounting)\n")
        print(memory_table(args.schemes.split(",")) + "\n")
    if "cost" in sections or "speed" in sections:
        with tempfile.TemporaryDirectory(prefix="fac-quant-mid-") as folder:
            mid_checkpoint(Path(folder), args.seed)
            if "cost" in sections:
                print(f"### Cost on the mid-size random model ({len(QUESTIONS)} prompts, {args.steps} steps)\n")
                print_cost_table(Path(folder), args.cost_schemes.split(","), args.steps)
            if "speed" in sections:
                print(f"### CPU speed on the mid-size random model ({args.steps} steps, spoken reply)\n")
                print(speed_table(Path(folder), args.steps, args.repeats) + "\n")
    if "load" in sections:
        print("### Real load of the random-weight 8B model on this machine (no decoder)\n")
        print_load_table(Path(args.load_dir), args.quantize.split(","))


if __name__ == "__main__":
    main()
