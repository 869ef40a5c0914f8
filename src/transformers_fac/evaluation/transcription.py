"""Transcripts and error rates: a transformers ASR pipeline (Whisper-large-v3 by default, as the report), Whisper's
text normalisers (`whisper_normalizer`) and `jiwer` underneath.

English is compared word by word after Whisper's English normaliser (WER); Chinese (and other languages written
without spaces: `CHARACTER_LANGUAGES`) character by character after the basic normaliser (CER), as seed-tts-eval and
UltraEval-Audio do. Both rates are always returned; `error_rate` names the one the language is judged by.
"""

import re
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np

from ..optional_imports import import_extra

DEFAULT_ASR_MODEL = "openai/whisper-large-v3"
CHARACTER_LANGUAGES = ("zh", "ja", "ko", "yue", "th")


@lru_cache(maxsize=2)
def _normalizer(language: str):
    if language == "en":
        english = import_extra("whisper_normalizer.english", "eval", "WER", package="whisper-normalizer")
        return english.EnglishTextNormalizer()
    basic = import_extra("whisper_normalizer.basic", "eval", "WER", package="whisper-normalizer")
    return basic.BasicTextNormalizer()


def normalize_transcript(text: str, language: str = "en") -> str:
    """Whisper's normaliser for `language` (English: spelling, numbers, contractions; others: the basic one), then,
    for `CHARACTER_LANGUAGES`, one space between characters (so that jiwer's word rate is a character rate).

    Example:
        >>> normalize_transcript("Mr. Smith's 2 cats!")  # doctest: +SKIP
        'mister smith is 2 cats'
    """
    text = _normalizer(language)(text)
    if language in CHARACTER_LANGUAGES:
        text = " ".join(char for char in text if not char.isspace())
    return re.sub(r"\s+", " ", text).strip()


def error_rates(references: Sequence[str], hypotheses: Sequence[str], language: str = "en") -> dict[str, Any]:
    """Corpus WER and CER (jiwer) of `hypotheses` against `references` after `normalize_transcript`, `per_item`
    WER (None for left-out items), and `error_rate`: CER for `CHARACTER_LANGUAGES`, WER otherwise. Items whose
    normalised reference is empty are left out (counted in `skipped`).

    Example:
        >>> error_rates(["Hello world."], ["hello word"])["wer"]  # doctest: +SKIP
        0.5
    """
    jiwer = import_extra("jiwer", "eval", "WER")
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses.")
    pairs = [
        (normalize_transcript(r, language), normalize_transcript(h, language)) for r, h in zip(references, hypotheses)
    ]
    kept = [(reference, hypothesis) for reference, hypothesis in pairs if reference]
    result: dict[str, Any] = {"items": len(kept), "skipped": len(pairs) - len(kept)}
    if not kept:
        nothing = {"wer": float("nan"), "cer": float("nan"), "error_rate": float("nan")}
        return {**result, **nothing, "per_item": [None] * len(pairs)}
    refs, hyps = [pair[0] for pair in kept], [pair[1] for pair in kept]
    result["wer"] = float(jiwer.wer(refs, hyps))
    if language in CHARACTER_LANGUAGES:  # spaces only separate characters here: leave them out of the CER
        result["cer"] = float(jiwer.cer([r.replace(" ", "") for r in refs], [h.replace(" ", "") for h in hyps]))
    else:
        result["cer"] = float(jiwer.cer(refs, hyps))
    result["error_rate"] = result["cer"] if language in CHARACTER_LANGUAGES else result["wer"]
    result["per_item"] = [float(jiwer.wer(r, h)) if r else None for r, h in pairs]
    return result


class Transcriber:
    """Transcribes 16 kHz waveforms with a transformers `automatic-speech-recognition` pipeline.

    Args:
        model: a Hub id or local folder of an ASR model (default Whisper-large-v3).
        language: forces Whisper's language (e.g. "en", "zh"); None lets it detect.
        device / dtype: where and how the ASR model runs (default: CUDA in bfloat16 when available).
        batch_size: clips per forward pass.

    Example:
        >>> transcribe = Transcriber("openai/whisper-large-v3", language="en")  # doctest: +SKIP
        >>> transcribe([waveform_16k])  # doctest: +SKIP
        ['Hello there.']
    """

    def __init__(
        self,
        model: str = DEFAULT_ASR_MODEL,
        language: str | None = None,
        device: str | None = None,
        dtype: Any = None,
        batch_size: int = 8,
        max_new_tokens: int | None = None,
    ):
        import torch
        from transformers import pipeline

        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = dtype or (torch.bfloat16 if device.startswith("cuda") else torch.float32)
        try:
            self.pipe = pipeline("automatic-speech-recognition", model=model, device=device, dtype=dtype)
        except OSError as error:
            raise RuntimeError(
                f"The ASR model {model!r} could not be loaded ({(str(error).splitlines() or [''])[0][:160]}); "
                "pass a local folder or connect to the Hub once."
            ) from error
        self.model = model
        self.language = language
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens

    def __call__(self, waveforms_16k: Sequence[np.ndarray]) -> list[str]:
        if not waveforms_16k:
            return []
        generate_kwargs: dict[str, Any] = {}
        if self.language is not None and getattr(self.pipe.model.config, "model_type", "") == "whisper":
            generate_kwargs.update(language=self.language, task="transcribe")
        if self.max_new_tokens is not None:
            generate_kwargs["max_new_tokens"] = self.max_new_tokens
        inputs = [{"raw": np.asarray(clip, dtype=np.float32), "sampling_rate": 16000} for clip in waveforms_16k]
        options = {"generate_kwargs": generate_kwargs} if generate_kwargs else {}
        outputs = self.pipe(inputs, batch_size=self.batch_size, **options)
        return [output["text"].strip() for output in outputs]


__all__ = [
    "CHARACTER_LANGUAGES",
    "DEFAULT_ASR_MODEL",
    "Transcriber",
    "error_rates",
    "normalize_transcript",
]
