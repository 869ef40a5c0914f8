"""Evaluation: speech-quality metrics as `evaluate` modules, the paper's benchmarks, their scoring, and `fac-eval`.

- `load_metric(name)`: one of the metric modules shipped with the package (`dnsmos`, `utmos`, `asr_wer`,
  `speaker_similarity`), an `evaluate.EvaluationModule` loaded from its local folder (no download of the script).
- `run_evaluation(...)` / `score_predictions(...)`: what `fac-eval run` / `fac-eval score` do (`evaluation.runner`).
- `BENCHMARKS`: the supported benchmarks, their subsets, sources, prompts, scoring and the paper's numbers.

Everything here imports `evaluate`, `datasets`, `speechmos`, `jiwer`... only when used (the `eval` extra).

Example:
    >>> from transformers_fac.evaluation import load_metric
    >>> dnsmos = load_metric("dnsmos")  # doctest: +SKIP
    >>> dnsmos.compute(predictions=[waveform], sampling_rate=24000)["ovrl_mos"]  # doctest: +SKIP
"""

from pathlib import Path
from typing import Any

METRICS_DIR = Path(__file__).resolve().parent / "metrics"
"""The folder of the metric modules (one folder per metric: the module script and its model card)."""

METRIC_NAMES = ("dnsmos", "utmos", "asr_wer", "speaker_similarity")


def metric_path(name: str) -> Path:
    """The folder of a metric module, for `evaluate.load(str(metric_path(name)))`.

    Example:
        >>> metric_path("dnsmos").name
        'dnsmos'
    """
    if name not in METRIC_NAMES:
        raise ValueError(f"Unknown metric {name!r}; the package ships {', '.join(METRIC_NAMES)}.")
    return METRICS_DIR / name


def load_metric(name: str, **kwargs: Any):
    """Loads a metric module of the package with `evaluate.load` from its local folder (works offline).

    Example:
        >>> metric = load_metric("dnsmos")  # doctest: +SKIP
    """
    from ..optional_imports import import_extra

    evaluate = import_extra("evaluate", "eval", "The evaluation metrics")
    return evaluate.load(str(metric_path(name)), **kwargs)


def __getattr__(name: str) -> Any:
    if name in ("run_evaluation", "score_predictions"):
        from . import runner

        return getattr(runner, name)
    if name == "BENCHMARKS":
        from .benchmarks import BENCHMARKS

        return BENCHMARKS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["BENCHMARKS", "METRIC_NAMES", "load_metric", "metric_path", "run_evaluation", "score_predictions"]
