"""Offline metrics for fine-tuned Fun-Audio-Chat models: text loss / perplexity, speech-code accuracy, WER / CER.

WER and CER use `jiwer` directly (`evaluate.load("wer")` downloads its script from the Hub, which fails offline).
"""

import dataclasses
import math
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch

from ..configuration_fun_audio_chat import FunAudioChatAudioEncoderConfig


def normalize_text(text: str) -> str:
    """Lower-case, drop punctuation and symbols, collapse spaces (for fair WER/CER between model text and ASR).

    Example:
        >>> normalize_text("Hello,  World! It's 5 PM.")
        'hello world its 5 pm'
    """
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(char for char in text if not unicodedata.category(char).startswith(("P", "S")))
    return re.sub(r"\s+", " ", text).strip()


def error_rates(references: Sequence[str], hypotheses: Sequence[str], normalize: bool = True) -> dict[str, float]:
    """Corpus WER and CER (jiwer) of `hypotheses` against `references`; empty references are left out.

    Example:
        >>> error_rates(["hello world"], ["hello word"])
        {'wer': 0.5, 'cer': 0.0909}
    """
    import jiwer

    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses.")
    pairs = [(normalize_text(r), normalize_text(h)) if normalize else (r, h) for r, h in zip(references, hypotheses)]
    pairs = [(reference, hypothesis) for reference, hypothesis in pairs if reference.strip()]
    if not pairs:
        return {"wer": float("nan"), "cer": float("nan")}
    references, hypotheses = [p[0] for p in pairs], [p[1] for p in pairs]
    return {
        "wer": round(float(jiwer.wer(references, hypotheses)), 4),
        "cer": round(float(jiwer.cer(references, hypotheses)), 4),
    }


def speech_code_hits(
    speech_logits: torch.Tensor,
    speech_labels: torch.Tensor,
    group_size: int = 5,
    codebook_limit: int | None = None,
) -> tuple[int, int]:
    """`(correct, total)` top-1 predictions of the speech head over the learned speech codes `0 <= code <
    codebook_limit` (default: the configuration's `num_speech_codes`; delay BOS, EOS and ignored positions left out). As in the loss, the outputs at flat index t
    predict the label at t + `group_size` (the hidden state of LLM position p predicts the codes of position p+1).
    """
    if codebook_limit is None:
        codebook_limit = FunAudioChatAudioEncoderConfig().num_speech_codes
    predictions = speech_logits[:, :-group_size].argmax(-1)
    targets = speech_labels[:, group_size:].to(predictions.device)
    mask = (targets >= 0) & (targets < codebook_limit)
    return int((predictions[mask] == targets[mask]).sum()), int(mask.sum())


@torch.no_grad()
def teacher_forced_metrics(model, collator, examples: Iterable[Mapping[str, Any]], batch_size: int = 1) -> dict:
    """Text loss, perplexity, speech loss and speech-code accuracy of `model` on `examples` (teacher forcing).

    Losses are averaged over batches weighted by their learned text tokens (`labels != -100`); run with
    `batch_size=1` for per-example exact token weighting.
    """
    collator = dataclasses.replace(collator, return_speech_labels=True)
    group = collator.processor.audio_group_size
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    totals = dict.fromkeys(("text", "speech", "text_weight", "speech_weight", "hits", "codes", "rows"), 0.0)
    examples = list(examples)
    for start in range(0, len(examples), batch_size):
        batch_rows = examples[start : start + batch_size]
        batch = collator(batch_rows)
        speech_labels = batch.pop("speech_labels")
        batch = {key: value.to(device) if torch.is_tensor(value) else value for key, value in batch.items()}
        output = model(**batch)
        text_weight = int((batch["labels"][:, 1:] != -100).sum())
        totals["text"] += float(output.text_loss) * text_weight
        totals["text_weight"] += text_weight
        speech_weight = int((speech_labels[:, group:] != -100).sum())
        if output.speech_loss is not None and speech_weight:  # batches without spoken replies skip the speech head
            totals["speech"] += float(output.speech_loss) * speech_weight
            totals["speech_weight"] += speech_weight
            hits, count = speech_code_hits(output.speech_logits, speech_labels, group)
            totals["hits"] += hits
            totals["codes"] += count
        totals["rows"] += len(batch_rows)
    model.train(was_training)
    text_loss = totals["text"] / max(totals["text_weight"], 1)
    return {
        "rows": int(totals["rows"]),
        "text_loss": round(text_loss, 4),
        "perplexity": round(math.exp(min(text_loss, 50.0)), 3),
        "speech_loss": _ratio(totals["speech"], totals["speech_weight"]),
        "speech_code_accuracy": _ratio(totals["hits"], totals["codes"]),
    }


def _ratio(total: float, count: float) -> float:
    return round(total / count, 4) if count else float("nan")


def speech_text_consistency(
    texts: Sequence[str],
    waveforms: Sequence[Any],
    transcribe: Callable[[Any], str],
) -> dict[str, float]:
    """WER / CER between the generated texts and ASR transcripts of the generated speech.

    `transcribe` maps one waveform item (whatever `waveforms` holds, e.g. `{"array", "sampling_rate"}`) to text,
    e.g. `lambda audio: asr_pipeline(audio)["text"]`.
    """
    transcripts = [transcribe(waveform) for waveform in waveforms]
    return {**error_rates(list(texts), transcripts), "transcripts": transcripts}


def report_table(results: Mapping[str, Mapping[str, Any]], metrics: Sequence[str] | None = None) -> str:
    """A Markdown table: one row per metric, one column per result set (e.g. `{"before": ..., "after": ...}`).

    Example:
        >>> print(report_table({"before": {"text_loss": 2.5}, "after": {"text_loss": 1.25}}))
        | metric | before | after |
        |---|---|---|
        | text_loss | 2.5 | 1.25 |
    """
    names = list(results)
    if metrics is None:
        metrics = list(dict.fromkeys(key for result in results.values() for key in result if key != "transcripts"))
    lines = ["| metric | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for metric in metrics:
        cells = [_cell(results[name].get(metric)) for name in names]
        lines.append(f"| {metric} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:g}" if isinstance(value, float) else str(value)


__all__ = [
    "error_rates",
    "normalize_text",
    "report_table",
    "speech_code_hits",
    "speech_text_consistency",
    "teacher_forced_metrics",
]
