"""`fac-eval run` and `fac-eval score` as functions: generate a benchmark's replies in batches (resuming where a run
stopped), score them, and write `predictions.jsonl`, `results.json` and `results.md`.

Example:
    >>> from transformers_fac.evaluation import run_evaluation
    >>> results = run_evaluation("tiny", "custom", "out", data_dir="my_questions", limit=3)  # doctest: +SKIP
    >>> results["subsets"]["custom"]["speech"]["dnsmos"]["ovrl_mos"]  # doctest: +SKIP
"""

import logging
import re
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from .benchmark_data import Item, load_items
from .benchmarks import Benchmark, Subset, get_benchmark
from .predictions import PredictionWriter, done_keys, read_predictions, rewrite_predictions
from .report import build_results, write_results
from .subset_scoring import ScoringSettings, score_subset

logger = logging.getLogger("transformers_fac.evaluation")

PREDICTIONS_FILE = "predictions.jsonl"


def _subsets(benchmark: Benchmark, subset: str | None, data_dir: str | None) -> list[Subset]:
    if subset is not None:
        return [benchmark.subset(subset)]
    if data_dir is not None and benchmark.layout == "hub" and len(benchmark.subsets) > 1:
        raise ValueError(f"--data-dir holds one subset of {benchmark.name}: say which with --subset.")
    return list(benchmark.subsets)


def _system_prompt(benchmark: Benchmark, item: Item) -> str:
    from ..prompts import SPOKEN_S2M_PROMPT, function_calling_prompt, reply_system_prompt

    if benchmark.mode == "fc":
        return function_calling_prompt(item.tools or [])
    if benchmark.spoken_persona:
        return SPOKEN_S2M_PROMPT
    return reply_system_prompt("audio" if benchmark.mode == "s2m" else "text")


def _file_name(item_id: str) -> str:
    return re.sub(r"[^\w.-]", "_", item_id)[:120] or "item"


def _generate(
    benchmark: Benchmark,
    pending: list[tuple[Subset, Item]],
    output_dir: Path,
    writer: PredictionWriter,
    model_options: dict[str, Any],
    batch_size: int,
    max_new_tokens: int,
    voice: Any,
    temperature: float | None,
) -> float:
    """Generates the replies of `pending` in batches through the reply engine, writing each record as it is done;
    returns the seconds spent generating (the model's loading left out)."""
    import soundfile as sf
    from tqdm.auto import tqdm

    from ..audio_io import AudioInputError, load_audio
    from ..conversation import FunAudioChatConversation
    from .model_loading import load_model
    from .replies import GeneratedReply, ReplyGenerator, ReplyJob

    model, processor = load_model(**model_options)
    spoken = benchmark.mode == "s2m"
    if spoken and model.token2wav is None:
        raise ValueError(f"{benchmark.name} needs spoken replies, but the model has no speech decoder (token2wav).")
    if spoken and voice is not None:
        try:
            model.token2wav.resolve_voice(voice)
        except (KeyError, ValueError, TypeError, OSError) as error:
            raise ValueError(f"--voice {voice}: {error}") from error
    progress = tqdm(total=len(pending), desc=f"fac-eval {benchmark.name}", unit="reply")
    started = time.monotonic()
    with ReplyGenerator(model, processor, batch_size, max_new_tokens, voice, temperature) as generator, progress:
        for start in range(0, len(pending), batch_size):
            batch = pending[start : start + batch_size]
            jobs, replies = [], {}
            for index, (_, item) in enumerate(batch):
                try:
                    audio = load_audio(item.audio, name=f"item {item.id}")
                except (AudioInputError, OSError) as error:
                    replies[index] = GeneratedReply(error=f"unreadable audio: {error}")
                    continue
                chat = FunAudioChatConversation(system_prompt=_system_prompt(benchmark, item))
                chat.add_user_audio(audio, item.instruction)
                jobs.append((index, ReplyJob(chat.prompt(processor), audio, spoken)))
            for (index, _), reply in zip(jobs, generator.generate([job for _, job in jobs])):
                replies[index] = reply
            for index, (subset, item) in enumerate(batch):
                reply = replies[index]
                audio_path = None
                if reply.audio is not None and reply.audio.size:
                    audio_path = Path("audio") / subset.name / f"{_file_name(item.id)}.wav"
                    (output_dir / audio_path).parent.mkdir(parents=True, exist_ok=True)
                    sf.write(output_dir / audio_path, reply.audio, reply.sampling_rate)
                writer.write(
                    {
                        "benchmark": benchmark.name,
                        "subset": subset.name,
                        "id": item.id,
                        "text": reply.text,
                        "raw_text": reply.raw_text,
                        "finish_reason": reply.finish_reason,
                        "error": reply.error,
                        "audio": audio_path.as_posix() if audio_path else None,
                        "fields": item.fields,
                    }
                )
                progress.update(1)
    return time.monotonic() - started


def _frontend_source(model: str) -> str | None:
    """Where the CAM++ model of speaker similarity comes from: the checkpoint's decoder folder when it has one
    (the tiny checkpoint's stand-in), else the CosyVoice3 repository (None)."""
    from ..tiny import tiny_checkpoint
    from ..voice.frontend import CAMPPLUS_FILE

    folder = (tiny_checkpoint() if model == "tiny" else Path(model)) / "token2wav"
    return str(folder) if (folder / CAMPPLUS_FILE).is_file() else None


def _score_and_report(
    benchmark: Benchmark,
    wanted: dict[str, list[str]] | None,
    predictions_path: Path,
    results_dir: Path,
    settings: ScoringSettings,
    meta: dict[str, Any],
) -> dict:
    """Scores the records of `benchmark` (only the `wanted` ids per subset when given), rewrites the predictions with
    their scores, and writes the results files into `results_dir`."""
    records = read_predictions(predictions_path)
    by_subset: dict[str, list[dict]] = defaultdict(list)
    for record in records:
        if record["benchmark"] != benchmark.name:
            continue
        if wanted is None or record["id"] in set(wanted.get(record["subset"], ())):
            by_subset[record["subset"]].append(record)
    order = [subset.name for subset in benchmark.subsets if subset.name in (wanted or by_subset)]
    summaries = {}
    for name in order:
        subset = benchmark.subset(name)
        summaries[name] = score_subset(benchmark, subset, by_subset[name], predictions_path.parent, settings)
    rewrite_predictions(predictions_path, records)
    results = build_results(benchmark, summaries, settings.unavailable, **meta)
    write_results(results_dir, results)
    return results


def run_evaluation(
    model: str,
    benchmark: str,
    output: str | Path,
    subset: str | None = None,
    limit: int | None = None,
    data_dir: str | None = None,
    adapter: str | None = None,
    voice: Any = None,
    batch_size: int = 8,
    max_new_tokens: int = 512,
    temperature: float | None = None,
    device: str | None = None,
    dtype: str | None = None,
    quantize: str | None = None,
    judge: Any = None,
    asr_model: str | None = None,
    utmos: bool = True,
) -> dict:
    """Runs `benchmark` (all subsets, or `subset`) on `model` (a checkpoint, or "tiny") and writes the three files
    into `output`; items already in `output/predictions.jsonl` are not generated again. Returns `results.json`'s
    content. `quantize` (`int8`, `int4`, `nf4`, `fp8`) loads the backbone quantized (`transformers_fac.quantization`).
    `judge` is a `judging.Judge` (None: judged subsets stay unscored); `asr_model` transcribes spoken
    replies (default Whisper-large-v3)."""
    chosen = get_benchmark(benchmark)
    subsets = _subsets(chosen, subset, data_dir)
    if batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {batch_size}.")
    output_dir = Path(output)
    output_dir.mkdir(parents=True, exist_ok=True)
    predictions_path = output_dir / PREDICTIONS_FILE
    items = {entry.name: load_items(chosen, entry, data_dir, limit) for entry in subsets}
    done = done_keys(read_predictions(predictions_path))
    pending = [
        (entry, item)
        for entry in subsets
        for item in items[entry.name]
        if (chosen.name, entry.name, item.id) not in done
    ]
    seconds = 0.0
    if pending:
        with PredictionWriter(predictions_path) as writer:
            seconds = _generate(
                chosen,
                pending,
                output_dir,
                writer,
                {"model": model, "adapter": adapter, "device": device, "dtype": dtype, "quantize": quantize},
                batch_size,
                max_new_tokens,
                voice,
                temperature,
            )
    meta = {
        "model": model,
        "adapter": adapter,
        "quantize": quantize,
        "voice": str(voice) if voice is not None else None,
        "limit": limit,
        "generated": len(pending),
        "resumed": sum(len(entries) for entries in items.values()) - len(pending),
        "generation_seconds": round(seconds, 2),
        "batch_size": batch_size,
        "max_new_tokens": max_new_tokens,
    }
    settings = ScoringSettings(judge=judge, asr_model=asr_model, asr_device=device, utmos=utmos)
    if voice is not None and chosen.mode == "s2m" and Path(str(voice)).exists():  # a saved voice or a clip
        settings.reference_voice, settings.frontend_source = str(voice), _frontend_source(model)
    wanted = {name: [item.id for item in entries] for name, entries in items.items()}
    return _score_and_report(chosen, wanted, predictions_path, output_dir, settings, meta)


def score_predictions(
    benchmark: str,
    predictions: str | Path,
    output: str | Path | None = None,
    judge: Any = None,
    asr_model: str | None = None,
    utmos: bool = True,
    device: str | None = None,
) -> dict:
    """Scores saved predictions again (e.g. with a judge this time) and writes the results files next to them (or
    into `output`)."""
    chosen = get_benchmark(benchmark)
    predictions_path = Path(predictions)
    if not predictions_path.is_file():
        raise FileNotFoundError(f"--predictions {predictions_path} does not exist.")
    records = [record for record in read_predictions(predictions_path) if record["benchmark"] == chosen.name]
    if not records:
        raise ValueError(f"{predictions_path} holds no predictions of {chosen.name}.")
    output_dir = Path(output) if output is not None else predictions_path.parent
    output_dir.mkdir(parents=True, exist_ok=True)
    settings = ScoringSettings(judge=judge, asr_model=asr_model, asr_device=device, utmos=utmos)
    meta = {"model": None, "predictions": str(predictions_path), "rescored": True}
    return _score_and_report(chosen, None, predictions_path, output_dir, settings, meta)


__all__ = ["PREDICTIONS_FILE", "run_evaluation", "score_predictions"]
