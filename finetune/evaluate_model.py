"""Evaluate a LoRA fine-tune before vs after on the held-out rows of its recipe, and print a report table.

Metrics: text loss and perplexity, speech loss and speech-code accuracy (teacher forcing, on the learned speech
codes); and, on the replies it generates, the speech metrics of `fac-eval` (`transformers_fac.evaluation`): DNSMOS
of the spoken replies (offline), with `--asr-model` the ASR-WER / CER (%) of each spoken reply against its own text
(Whisper's normalisers), and with `--reference-voice` (a clip of the target speaker or a saved voice; for a
custom-voice adapter) the speaker similarity: the mean cosine of CAM++ speaker vectors between the spoken replies and
it. Spoken replies need a speech decoder (the checkpoint's, or `--token2wav`). Replies are spoken in `--voice`
(default: the stock voice before, the voice saved next to the adapter after).

Usage:
    python finetune/evaluate_model.py --config finetune/recipes/s2s_lora.yaml --adapter runs/s2s-lora/adapter \\
        [--rows 100] [--asr-model openai/whisper-large-v3 --token2wav FunAudioLLM/Fun-CosyVoice3-0.5B-2512] \\
        [--reference-voice me.wav] [--output report.json]
"""

import argparse
import json
import logging
from pathlib import Path

import torch
from transformers import AutoModelForMultimodalLM, AutoProcessor

import transformers_fac  # noqa: F401  (registers the model with the Auto classes)
from transformers_fac.evaluation.reply_metrics import spoken_reply_metrics
from transformers_fac.evaluation.transcription import Transcriber
from transformers_fac.token2wav_loading import saved_voice
from transformers_fac.training import FunAudioChatDataCollator, evaluate_model, generate_replies, report_table
from transformers_fac.training.recipe import load_recipe, prepare_recipe_data

try:  # run as a script (its folder on sys.path) or imported as `finetune.evaluate_model`
    from finetune.train_lora import resolve_paths
except ImportError:
    from train_lora import resolve_paths

METRICS = (
    "rows",
    "text_loss",
    "perplexity",
    "speech_loss",
    "speech_code_accuracy",
    "spoken_replies",
    "asr_wer",
    "asr_cer",
    "dnsmos_ovrl",
    "dnsmos_sig",
    "dnsmos_bak",
    "speaker_similarity",
)


def load_model(base: str, adapter: str | None, token2wav: str | None, dtype: str, device: str):
    extra = {"token2wav": token2wav} if token2wav else {}
    model = AutoModelForMultimodalLM.from_pretrained(base, dtype=dtype, **extra)
    if adapter:
        from peft import PeftModel

        voice = saved_voice(adapter)
        if voice is not None and model.token2wav is not None:  # the adapter's voice speaks its replies
            model.token2wav.set_default_voice(voice)
        model = PeftModel.from_pretrained(model, adapter)
    return model.to(device).eval()


def reply_metrics(model, collator, examples, args, mode: str, transcriber) -> dict:
    """The generated replies' texts and the speech metrics of the spoken ones (see the module docstring)."""
    voice = {"voice": args.voice} if args.voice and mode == "audio" else {}
    replies = generate_replies(model, collator, examples, mode, args.max_new_tokens, **voice)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    frontend = base.token2wav.voice_frontend if args.reference_voice and base.token2wav is not None else None
    metrics = spoken_reply_metrics(replies, transcriber, args.language, args.reference_voice, frontend)
    return {"samples": [reply["text"] for reply in replies], **metrics}


def run_evaluation(args: argparse.Namespace) -> dict:
    recipe = resolve_paths(load_recipe(args.config, args.overrides))
    base = args.model or recipe["model"]["name_or_path"]
    processor = AutoProcessor.from_pretrained(base)
    _, held_out = prepare_recipe_data(recipe, processor)
    if held_out is None:
        raise SystemExit("The recipe has no held-out rows: set data.eval_size (a fraction or a row count).")
    examples = [held_out[index] for index in range(min(args.rows, len(held_out)))]
    collator = FunAudioChatDataCollator(processor)
    transcriber = Transcriber(args.asr_model, language=args.language, device=args.device) if args.asr_model else None
    mode = "text" if recipe["data"].get("prepare", {}).get("task", "s2s") != "s2s" else "audio"
    results = {}
    for name, adapter in (("before", None), ("after", args.adapter)):
        if name == "after" and not adapter:
            continue
        model = load_model(base, adapter, args.token2wav, args.dtype, args.device)
        results[name] = evaluate_model(model, collator, examples, generate=False)
        if args.max_new_tokens > 0:
            results[name].update(reply_metrics(model, collator, examples, args, mode, transcriber))
        del model
    print(report_table(results, METRICS))
    for name, result in results.items():
        for index, sample in enumerate(result.get("samples", [])[:3]):
            print(f"{name} sample {index}: {sample!r}")
    if args.output:
        Path(args.output).write_text(json.dumps(results, indent=2, ensure_ascii=False, default=str))
    return results


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Before/after evaluation of a Fun-Audio-Chat LoRA fine-tune.")
    parser.add_argument("--config", required=True, help="the recipe the adapter was trained with")
    parser.add_argument("--adapter", help="adapter folder (omit to evaluate the base model only)")
    parser.add_argument("--model", help="base checkpoint (default: the recipe's model.name_or_path)")
    parser.add_argument("--rows", type=int, default=100, help="held-out rows to evaluate")
    parser.add_argument("--max-new-tokens", type=int, default=256, help="0 = no generation")
    parser.add_argument(
        "--asr-model", help="ASR model for the ASR-WER of spoken replies (e.g. openai/whisper-large-v3)"
    )
    parser.add_argument("--language", default="en", help="language of the replies, for ASR and WER (en, zh, ...)")
    parser.add_argument("--token2wav", help="speech decoder the model loads to produce audio")
    parser.add_argument("--voice", help="voice of the replies (name or saved voice; default: see the docstring)")
    parser.add_argument("--reference-voice", help="clip or saved voice of the target speaker: speaker similarity")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--output", help="write the results as JSON")
    parser.add_argument("overrides", nargs="*", help="recipe overrides section.key=value")
    return parser


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.WARNING)
    run_evaluation(build_parser().parse_args(argv))


if __name__ == "__main__":
    main()
