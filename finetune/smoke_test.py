"""CPU smoke fine-tune, end to end, on the tiny random checkpoint (about a minute on 2 cores).

1. builds a 12-row spoken-dialogue dataset from the repository's audio files (`datasets` `Audio` columns, files at
   16–44.1 kHz), with assistant audio turned into codes by a randomly initialised speech tokenizer;
2. trains a LoRA adapter on the LLM (`finetune/recipes/smoke_tiny.yaml`) and prints the losses per step;
3. saves the adapter, reloads it with `PeftModel.from_pretrained`, generates a spoken reply;
4. merges it (`merge_and_unload`), checks that the merged model gives the adapter model's logits and greedy
   tokens, saves the merged checkpoint (official key names) and reloads it.

With `--quantize nf4` (QLoRA, bitsandbytes 4-bit, which runs on a CPU) the backbone trains in 4 bits; step 3 reloads
the adapter on a 4-bit base (same logits as the trained model) and on the float32 base, and step 4 is skipped
(merging re-quantizes the 4-bit weights).

Usage:
    python finetune/smoke_test.py --output-dir /tmp/fac-smoke [--steps 20] [--quantize nf4]
"""

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import torch
from safetensors import safe_open
from transformers import AutoModelForMultimodalLM

import transformers_fac  # noqa: F401  (registers the model with the Auto classes)
from transformers_fac.quantization import quantization_config
from transformers_fac.training import FunAudioChatDataCollator, loss_history, merge_lora
from transformers_fac.training.recipe import load_recipe, train_from_recipe

try:  # run as `python finetune/smoke_test.py` (script folder on sys.path) or imported as `finetune.smoke_test`
    from finetune.build_smoke_data import build_smoke_dataset
    from finetune.train_lora import resolve_paths
except ImportError:
    from build_smoke_data import build_smoke_dataset
    from train_lora import resolve_paths

HERE = Path(__file__).resolve().parent
RECIPE = HERE / "recipes" / "smoke_tiny.yaml"


def speech_greedy(model, inputs: dict, max_new_tokens: int):
    output = model.generate(
        **inputs,
        generation_mode="audio",
        do_sample=False,
        repetition_penalty=1.0,
        max_new_tokens=max_new_tokens,
        return_dict_in_generate=True,
    )
    return output.sequences, output.speech_ids


def relative_difference(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max |actual - expected| relative to the scale of `expected` (its largest magnitude, at least 1)."""
    return ((actual - expected).abs().max() / expected.abs().max().clamp(min=1)).item()


def checkpoint_keys(directory: Path) -> set[str]:
    keys = set()
    for file in directory.glob("*.safetensors"):
        with safe_open(file, "pt") as handle:
            keys.update(handle.keys())
    return keys


def run_smoke(
    output_dir: str | Path, steps: int = 20, rows: int = 12, new_tokens: int = 8, quantize: str | None = None
) -> dict:
    """Run the whole smoke fine-tune; returns the measured numbers (raises `AssertionError` on a failed check).

    Runs single-threaded: the tiny model's matrices are far too small for threads to help, and on a shared CPU
    extra threads make each step 10-20x slower.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run_smoke(Path(output_dir), steps, rows, new_tokens, quantize)
    finally:
        torch.set_num_threads(threads)


def _run_smoke(output_dir: Path, steps: int, rows: int, new_tokens: int, quantize: str | None) -> dict:
    shutil.rmtree(output_dir, ignore_errors=True)
    start = time.time()
    build_smoke_dataset(output_dir / "data", rows=rows)
    recipe = resolve_paths(
        load_recipe(
            RECIPE,
            [
                f"data.load_from_disk={output_dir / 'data' / 'dataset'}",
                f"training.output_dir={output_dir / 'run'}",
                f"training.max_steps={steps}",
                f"model.quantize={quantize or 'null'}",
            ],
        )
    )
    run = train_from_recipe(recipe)  # the Trainer prints loss, text_loss and speech_loss at every step
    losses = [value for _, value in loss_history(run.trainer)]
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    print(f"loss: first 3 steps {first:.4f} -> last 3 steps {last:.4f}")
    assert last < first, "the training loss did not go down"

    base_path = recipe["model"]["name_or_path"]
    adapter_dir = Path(run.adapter_dir)
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    print(f"adapter saved: {sorted(p.name for p in adapter_dir.iterdir())}; base {config['base_model_name_or_path']}")

    from peft import PeftModel

    quantized = {"quantization_config": quantization_config(quantize, "cpu")} if quantize else {}
    base = AutoModelForMultimodalLM.from_pretrained(base_path, **quantized).eval()
    adapted = PeftModel.from_pretrained(base, adapter_dir).eval()
    collator = FunAudioChatDataCollator(run.processor)
    held_out = [run.eval_dataset[0]]
    batch = collator(held_out)
    prompt = collator.prompt_inputs(held_out)
    with torch.no_grad():
        adapter_out = adapted(**batch)
    sequences, speech = speech_greedy(adapted, prompt, new_tokens)
    reply = run.processor.decode(sequences[0, prompt["input_ids"].shape[1] :], skip_special_tokens=False)
    print(f"generated with the adapter: text {reply!r}, speech codes {speech[0].tolist()}")
    if quantize:
        return _quantized_checks(run, adapter_out, batch, losses, adapter_dir, base_path, start)

    merged = merge_lora(adapted).eval()
    with torch.no_grad():
        merged_out = merged(**batch)
    merged_sequences, merged_speech = speech_greedy(merged, prompt, new_tokens)
    text_diff = relative_difference(merged_out.text_logits, adapter_out.text_logits)
    speech_diff = relative_difference(merged_out.speech_logits, adapter_out.speech_logits)
    print(
        f"merged vs adapter: max logit difference (relative to the logit scale) text {text_diff:.1e}, speech {speech_diff:.1e}"
    )
    assert text_diff < 1e-5 and speech_diff < 1e-5, "merged logits differ from the adapter's"
    assert torch.equal(merged_sequences, sequences) and torch.equal(merged_speech, speech), "greedy tokens differ"
    print("merged vs adapter: identical greedy text and speech tokens")

    merged_dir = output_dir / "merged"
    merged.save_pretrained(merged_dir)
    run.processor.save_pretrained(merged_dir)
    assert checkpoint_keys(merged_dir) == checkpoint_keys(Path(base_path)), "merged checkpoint keys differ"
    assert json.loads((merged_dir / "config.json").read_text())["model_type"] == "funaudiochat"
    reloaded = AutoModelForMultimodalLM.from_pretrained(merged_dir).eval()
    with torch.no_grad():
        reloaded_diff = relative_difference(reloaded(**batch).text_logits, adapter_out.text_logits)
    assert reloaded_diff < 1e-5, "the reloaded merged checkpoint differs"
    seconds = time.time() - start
    print(f"merged checkpoint saved to {merged_dir} (official keys, model_type funaudiochat); total {seconds:.0f} s")
    return {
        "losses": losses,
        "adapter_dir": str(adapter_dir),
        "merged_dir": str(merged_dir),
        "text_logit_diff": text_diff,
        "speech_logit_diff": speech_diff,
        "seconds": seconds,
        "trainer": run.trainer,
        "processor": run.processor,
        "eval_dataset": run.eval_dataset,
    }


def _quantized_checks(run, adapter_out, batch, losses, adapter_dir: Path, base_path: str, start: float) -> dict:
    """QLoRA: the adapter reloaded on a quantized base gives the trained model's logits; on the float32 base it
    loads and runs too (the usual deployment: no merge into 4-bit weights)."""
    from peft import PeftModel

    with torch.no_grad():
        trained_out = run.trainer.model.eval()(**batch)
        float_out = PeftModel.from_pretrained(AutoModelForMultimodalLM.from_pretrained(base_path), adapter_dir)(
            **batch
        )
    text_diff = relative_difference(adapter_out.text_logits, trained_out.text_logits)
    speech_diff = relative_difference(adapter_out.speech_logits, trained_out.speech_logits)
    print(
        f"reloaded adapter on the quantized base vs the trained model: text {text_diff:.1e}, speech {speech_diff:.1e}"
    )
    assert text_diff < 1e-5 and speech_diff < 1e-5, "the reloaded QLoRA adapter differs from the trained model"
    float_diff = relative_difference(float_out.text_logits, trained_out.text_logits)
    print(f"the adapter on the float32 base vs on the quantized base: text {float_diff:.1e}")
    quantized_layers = [  # the quantized linear layers (their LoRA wrappers excluded)
        module
        for module in run.trainer.model.modules()
        if not hasattr(module, "base_layer") and not getattr(module, "weight", torch.ones(1)).is_floating_point()
    ]
    return {
        "losses": losses,
        "adapter_dir": str(adapter_dir),
        "quantized_layers": len(quantized_layers),
        "text_logit_diff": text_diff,
        "speech_logit_diff": speech_diff,
        "float_base_text_diff": float_diff,
        "seconds": time.time() - start,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="CPU smoke fine-tune on the tiny checkpoint.")
    parser.add_argument("--output-dir", default="/tmp/fac-smoke")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rows", type=int, default=12)
    parser.add_argument("--quantize", default=None, help="QLoRA on a quantized backbone: nf4 (runs on a CPU)")
    args = parser.parse_args()
    run_smoke(args.output_dir, steps=args.steps, rows=args.rows, quantize=args.quantize)
    print("smoke fine-tune OK")


if __name__ == "__main__":
    sys.exit(main())
