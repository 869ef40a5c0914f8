"""`results.json` and `results.md`: per subset the score, the counts behind it and the paper's number; the overall
score where the benchmark defines one; speech quality of spoken replies; what could not be measured and why."""

import json
import math
from pathlib import Path
from typing import Any

from .benchmarks import SPEECH_QUALITY_PAPER, Benchmark


def overall_score(benchmark: Benchmark, subsets: dict[str, dict]) -> float | None:
    """The benchmark's overall score: the mean of its subset scores (VoiceBench first puts 1-5 judge scores on a
    0-100 scale, x20), or None unless every subset has a score."""
    if benchmark.overall is None or set(subsets) != {subset.name for subset in benchmark.subsets}:
        return None
    scores = []
    for subset in benchmark.subsets:
        score = subsets[subset.name].get("score")
        if score is None or math.isnan(score):
            return None
        scores.append(score * 20 if benchmark.overall == "voicebench" and subset.metric.endswith("1-5") else score)
    return sum(scores) / len(scores)


def build_results(benchmark: Benchmark, subsets: dict[str, dict], unavailable: dict[str, str], **meta: Any) -> dict:
    """The content of `results.json`."""
    for name, summary in subsets.items():
        summary["paper"] = benchmark.subset(name).paper
    results = {"benchmark": benchmark.name, "title": benchmark.title, **meta, "subsets": subsets}
    if benchmark.overall is not None:
        results["overall"] = {"score": overall_score(benchmark, subsets), "paper": benchmark.overall_paper}
    if unavailable:
        results["unavailable"] = unavailable
    return results


def _cell(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _difference(ours: Any, paper: Any) -> str:
    if ours is None or paper is None or (isinstance(ours, float) and math.isnan(ours)):
        return "n/a"
    return f"{ours - paper:+.2f}"


def _counts(summary: dict) -> str:
    names = ("unparseable", "judge_errors", "unspoken", "guessed", "malformed", "failed")
    notes = [f"{name} {summary[name]}" for name in names if summary.get(name)]
    if summary.get("note"):
        notes.append(summary["note"])
    return "; ".join(notes)


def results_markdown(results: dict) -> str:
    """`results.md`: our numbers beside the paper's, with the difference."""
    lines = [
        f"# {results['title']}: {results.get('model', '')}",
        "",
        "| subset | metric | ours | paper | difference | items | notes |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, summary in results["subsets"].items():
        score, paper = summary.get("score"), summary.get("paper")
        row = [name, summary["metric"], _cell(score), _cell(paper), _difference(score, paper), summary["items"]]
        lines.append("| " + " | ".join(str(cell) for cell in row) + f" | {_counts(summary)} |")
    if "overall" in results:
        overall = results["overall"]
        cells = [_cell(overall["score"]), _cell(overall["paper"]), _difference(overall["score"], overall["paper"])]
        lines.append(f"| **overall** | | {' | '.join(cells)} | | |")
    speech_rows = []
    for name, summary in results["subsets"].items():
        speech = summary.get("speech", {})
        if "dnsmos" in speech:
            speech_rows.append(f"| {name} | DNSMOS OVRL | {_cell(speech['dnsmos']['ovrl_mos'])} | n/a | n/a |")
        if "speaker_similarity" in speech:
            value = _cell(speech["speaker_similarity"], 3)
            speech_rows.append(f"| {name} | speaker similarity (CAM++ cosine) | {value} | n/a | n/a |")
        for key, label in (("utmos", "UTMOS"), ("asr_wer", "ASR-WER % (vs reply text)")):
            if key in speech:
                paper = SPEECH_QUALITY_PAPER[key] if name == "llama_questions" else None
                speech_rows.append(
                    f"| {name} | {label} | {_cell(speech[key])} | {_cell(paper)} | {_difference(speech[key], paper)} |"
                )
    if speech_rows:
        lines += ["", "## Speech quality of the spoken replies", "", "| subset | metric | ours | paper | difference |"]
        lines += ["|---|---|---|---|---|", *speech_rows]
    if results.get("unavailable"):
        lines += ["", "## Not measured", ""]
        lines += [f"- {name}: {reason}" for name, reason in results["unavailable"].items()]
    return "\n".join(lines) + "\n"


def write_results(output_dir: Path, results: dict) -> None:
    """Writes `results.json` and `results.md` into `output_dir`."""
    (output_dir / "results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    (output_dir / "results.md").write_text(results_markdown(results), encoding="utf-8")


__all__ = ["build_results", "overall_score", "results_markdown", "write_results"]
