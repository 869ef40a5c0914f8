"""Scoring one subset's saved predictions: the benchmark's rule or judge on each reply, speech quality of spoken
replies, and the subset's summary (its score on the paper's scale and the counts behind it)."""

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .acebench_calls import check_acebench_calls
from .benchmarks import Benchmark, Subset
from .function_calls import check_function_calls
from .scoring import (
    choice_correct,
    contains_answer,
    ifeval_flags,
    ifeval_summary,
    is_refusal,
    mmau_choice,
)

logger = logging.getLogger("transformers_fac.evaluation")


@dataclass
class ScoringSettings:
    """What scoring may use: a judge (None: judged subsets stay unscored), the ASR model for spoken replies,
    whether to try UTMOS (it needs its weights from torch.hub), and the target voice of the replies (a saved voice or
    a clip) with the folder or repo of its CAM++ model, for speaker similarity."""

    judge: Any = None
    asr_model: str | None = None
    asr_device: str | None = None
    utmos: bool = True
    reference_voice: Any = None
    frontend_source: Any = None
    unavailable: dict[str, str] = field(default_factory=dict)


def _mean(values: list[float]) -> float | None:
    kept = [value for value in values if value is not None and not math.isnan(value)]
    return float(np.mean(kept)) if kept else None


def _reply_audio(records: list[dict], output_dir: Path) -> list[tuple[dict, np.ndarray]]:
    from ..audio_io import load_audio

    spoken = []
    for record in records:
        if record.get("audio"):
            clip = load_audio(output_dir / record["audio"], validate=False)
            if clip.size:
                spoken.append((record, clip))
    return spoken


def _speech_quality(benchmark: Benchmark, subset: Subset, records: list[dict], output_dir: Path, settings) -> dict:
    """DNSMOS of every spoken reply; for speech-to-speech benchmarks also a transcript (ASR), the ASR-WER against
    the reply's own text, and UTMOS. Writes per-reply values into `record["scores"]`; returns the means."""
    from .speech_quality import dnsmos_scores, load_utmos, utmos_scores

    spoken = _reply_audio(records, output_dir)
    if not spoken:
        return {}
    clips = [clip for _, clip in spoken]
    summary: dict[str, Any] = {"spoken_replies": len(spoken)}
    dnsmos = dnsmos_scores(clips)
    for (record, _), clip_scores in zip(spoken, dnsmos["per_clip"]):
        record["scores"]["dnsmos"] = clip_scores
    summary["dnsmos"] = {key: dnsmos[key] for key in ("ovrl_mos", "sig_mos", "bak_mos", "p808_mos")}
    if settings.reference_voice is not None and "speaker_similarity" not in settings.unavailable:
        from .voice_similarity import speaker_similarities

        try:
            similarity = speaker_similarities(clips, settings.reference_voice, settings.frontend_source)
        except (OSError, ImportError) as error:  # no CAM++ model here (offline) or no `voice` extra
            settings.unavailable["speaker_similarity"] = (str(error).splitlines() or [type(error).__name__])[0]
        else:
            for (record, _), value in zip(spoken, similarity["per_clip"]):
                record["scores"]["speaker_similarity"] = value
            summary["speaker_similarity"] = similarity["similarity"]
    if not benchmark.speech_metrics:
        return summary
    transcripts = _transcribe(clips, subset.language, settings)
    if transcripts is not None:
        from .transcription import error_rates

        for (record, _), transcript in zip(spoken, transcripts):
            record["transcript"] = transcript
        rates = error_rates([record["text"] for record, _ in spoken], transcripts, subset.language)
        summary["asr_wer"] = 100 * rates["error_rate"] if rates["items"] else None
    if settings.utmos and "utmos" not in settings.unavailable:
        try:
            utmos = utmos_scores(clips, predictor=load_utmos())
        except RuntimeError as error:
            settings.unavailable["utmos"] = str(error)
        else:
            for (record, _), clip_scores in zip(spoken, utmos["per_clip"]):
                record["scores"]["utmos"] = clip_scores["utmos"]
            summary["utmos"] = utmos["utmos"]
    return summary


def _transcribe(clips: list[np.ndarray], language: str, settings: ScoringSettings) -> list[str] | None:
    from .transcription import DEFAULT_ASR_MODEL, Transcriber

    if "asr" in settings.unavailable:
        return None
    try:
        transcriber = Transcriber(
            settings.asr_model or DEFAULT_ASR_MODEL, language=language, device=settings.asr_device
        )
    except RuntimeError as error:
        settings.unavailable["asr"] = str(error)
        return None
    return transcriber(clips)


def _references(value: Any) -> list[str]:
    """A reference answer or a list of them (a list written as JSON or as a Python literal is read as a list).

    Example:
        >>> _references("['paris', 'Paris, France']"), _references("Paris")
        (['paris', 'Paris, France'], ['Paris'])
    """
    import ast
    import json

    if isinstance(value, str) and value.strip().startswith("["):
        for parse in (json.loads, ast.literal_eval):
            try:
                value = parse(value)
                break
            except (ValueError, SyntaxError):
                continue
    return [str(item) for item in value] if isinstance(value, list) else [str(value)]


def _judged(subset: Subset, records: list[dict], texts: list[str], settings: ScoringSettings) -> dict:
    if settings.judge is None:
        return {"score": None, "note": "LLM-judged: pass --judge-model (and --judge-base-url) to score it"}
    from tqdm.auto import tqdm

    unparseable = errors = 0
    for record, text in tqdm(list(zip(records, texts)), desc=f"judging {subset.name}", leave=False):
        fields = record["fields"]
        reference = fields.get(subset.reference, "") if subset.reference else ""
        try:
            value, answer = settings.judge.score(subset.rubric, str(fields.get(subset.question, "")), text, reference)
        except Exception as error:  # noqa: BLE001 - an endpoint error costs this judgement, not the run
            errors += 1
            record["scores"].update(score=None, judge_error=str(error)[:200])
            continue
        unparseable += value is None
        record["scores"].update(score=value, judgement=answer)
    return {"unparseable": unparseable, "judge_errors": errors}


def _audio_judged(subset: Subset, records: list[dict], output_dir: Path, settings: ScoringSettings) -> dict:
    """VStyle: the judge hears each spoken reply (sent as WAV with the judging instruction) and rates it 1-5; the
    score is VStyle's weighted mean over the abilities. Unreadable judgements, endpoint errors and replies without
    audio are counted and left out."""
    if settings.judge is None:
        return {"score": None, "note": "audio-judged: pass --judge-model (an audio LLM) and --judge-base-url"}
    from tqdm.auto import tqdm

    from .vstyle import judge_prompt, parse_score, weighted_score

    unparseable = errors = unspoken = 0
    for record in tqdm(records, desc=f"judging {subset.name}", leave=False):
        fields = record["fields"]
        if not record.get("audio"):
            unspoken += 1
            record["scores"]["score"] = None
            continue
        try:
            prompt = judge_prompt(str(fields.get("ability", "")), str(fields.get(subset.question, "")))
            answer = settings.judge.ask(prompt, audio_wav=(output_dir / record["audio"]).read_bytes())
        except Exception as error:  # noqa: BLE001 - an endpoint or item error costs this judgement, not the run
            errors += 1
            record["scores"].update(score=None, judge_error=str(error)[:200])
            continue
        value = parse_score(answer)
        unparseable += value is None
        record["scores"].update(score=value, judgement=answer)
    score = weighted_score([(str(r["fields"].get("ability", "")), r["scores"].get("score")) for r in records])
    return {"score": score, "unparseable": unparseable, "judge_errors": errors, "unspoken": unspoken}


def _rule(subset: Subset) -> Callable[[dict, str], dict]:
    """The per-reply rule of a rule-based subset: (record, text) -> scores (with `score` on a 0-100 scale)."""

    def choice(record: dict, text: str) -> dict:
        correct, guessed = choice_correct(text, str(record["fields"][subset.reference]), record["id"])
        return {"score": 100.0 * correct, "guessed": guessed}

    def mmau(record: dict, text: str) -> dict:
        picked = mmau_choice(text, record["fields"]["choices"])
        return {"score": 100.0 * (picked == record["fields"]["answer"]), "picked": picked}

    def match(record: dict, text: str) -> dict:
        return {"score": 100.0 * contains_answer(text, _references(record["fields"][subset.reference]))}

    def refusal(record: dict, text: str) -> dict:
        return {"score": 100.0 * is_refusal(text)}

    def function_calls(record: dict, text: str) -> dict:
        fields = record["fields"]
        result = check_function_calls(text, fields["function"], fields["ground_truth"], subset.options["parallel"])
        return {"score": 100.0 * result["correct"], "malformed": result["malformed"], "reason": result["reason"]}

    def acebench_calls(record: dict, text: str) -> dict:
        result = check_acebench_calls(text, record["fields"]["function"], record["fields"]["ground_truth"])
        return {"score": 100.0 * result["correct"], "malformed": result["malformed"], "reason": result["reason"]}

    def reference(record: dict, text: str) -> dict:
        value = record["fields"].get(subset.reference)
        if value in (None, ""):
            return {"score": None}
        return {"score": 100.0 * contains_answer(text, _references(value))}

    rules = {
        "choice": choice,
        "mmau": mmau,
        "match": match,
        "refusal": refusal,
        "function_calls": function_calls,
        "acebench_calls": acebench_calls,
        "reference": reference,
    }
    return rules[subset.scorer]


def _score_texts(
    subset: Subset, records: list[dict], texts: list[str], output_dir: Path, settings: ScoringSettings
) -> dict:
    if subset.scorer == "audio_judge":
        return _audio_judged(subset, records, output_dir, settings)
    if subset.scorer == "judge":
        summary = _judged(subset, records, texts, settings)
        if "note" in summary:
            return summary
        return {**summary, "score": _mean([record["scores"].get("score") for record in records])}
    if subset.scorer == "asr":
        from .transcription import error_rates

        rates = error_rates([str(r["fields"][subset.reference]) for r in records], texts, subset.language)
        for record, rate in zip(records, rates["per_item"]):
            record["scores"]["wer"] = rate
        if not rates["items"]:
            return {"score": None, "note": "every reference is empty"}
        return {"score": 100 * rates["error_rate"], "wer": 100 * rates["wer"], "cer": 100 * rates["cer"]}
    if subset.scorer == "ifeval":
        try:
            flags = [ifeval_flags(text, record["fields"]) for record, text in zip(records, texts)]
        except RuntimeError as error:
            return {"score": None, "note": str(error)}
        for record, item_flags in zip(records, flags):
            record["scores"].update(item_flags)
        return ifeval_summary(flags)
    rule = _rule(subset)
    for record, text in zip(records, texts):
        record["scores"].update(rule(record, text))
    summary: dict[str, Any] = {"score": _mean([record["scores"].get("score") for record in records])}
    if subset.scorer == "choice":
        summary["guessed"] = sum(record["scores"]["guessed"] for record in records)
    if subset.scorer in ("function_calls", "acebench_calls"):
        summary["malformed"] = sum(record["scores"]["malformed"] for record in records)
    return summary


def score_subset(
    benchmark: Benchmark, subset: Subset, records: list[dict], output_dir: Path, settings: ScoringSettings
) -> dict:
    """Scores `records` (this subset's predictions, updated in place with `scores`) and returns the summary."""
    for record in records:
        record["scores"] = {}
    speech = _speech_quality(benchmark, subset, records, output_dir, settings) if records else {}
    spoken = [record for record in records if record.get("audio")]
    spoken_scoring = benchmark.speech_metrics and bool(spoken) and all("transcript" in record for record in spoken)
    texts = []
    for record in records:
        if benchmark.mode == "fc":
            texts.append(record.get("raw_text") or "")
        elif spoken_scoring and record.get("audio"):
            texts.append(record["transcript"])
        else:
            texts.append(record.get("text") or "")
    summary = {
        "metric": subset.metric,
        "items": len(records),
        "failed": sum(bool(record.get("error")) for record in records),
        **(_score_texts(subset, records, texts, output_dir, settings) if records else {"score": None}),
    }
    if benchmark.speech_metrics:
        summary["scored_on"] = "transcripts of the spoken replies" if spoken_scoring else "reply text (no ASR)"
    if speech:
        summary["speech"] = speech
    return summary


__all__ = ["ScoringSettings", "score_subset"]
