"""The base class of the package's audio metric modules: predictions in any audio form, scored at 16 kHz.

A prediction may be a waveform (with `sampling_rate=`), a file path, a `datasets` audio value (a decoder or an
`{"array", "sampling_rate"}` dict) or anything else `transformers_fac.audio_io.load_audio` reads. `compute`, `add`
and `add_batch` turn each into a mono float32 waveform at 16 kHz before `evaluate` stores it, so `_compute` always
receives 16 kHz waveforms (the rate DNSMOS, UTMOS, CAM++ and Whisper all take).
"""

from typing import Any

import datasets
import evaluate
import numpy as np

from ..audio_io import load_audio

METRIC_SAMPLING_RATE = 16000
"""The rate every audio prediction is resampled to before scoring (Hz)."""


def audio_batch(predictions: Any, sampling_rate: float | None = None) -> list[np.ndarray]:
    """The predictions as mono float32 waveforms at 16 kHz (`sampling_rate`: the rate of bare waveforms).

    Example:
        >>> [clip.shape for clip in audio_batch([np.zeros(24000, dtype=np.float32)], sampling_rate=24000)]
        [(16000,)]
    """
    if isinstance(predictions, (str, dict)) or (isinstance(predictions, np.ndarray) and predictions.ndim == 1):
        raise TypeError("`predictions` is one clip: pass a list of clips (e.g. `predictions=[waveform]`).")
    clips = []
    for index, item in enumerate(predictions):
        clip = load_audio(
            item,
            sampling_rate=sampling_rate,
            target_sampling_rate=METRIC_SAMPLING_RATE,
            name=f"predictions[{index}]",
            validate=False,
        )
        if clip.size == 0:
            raise ValueError(f"predictions[{index}] is an empty clip: there is nothing to score.")
        clips.append(clip)
    return clips


def audio_features(reference: datasets.Value | None = None) -> datasets.Features:
    """The features of an audio metric: 16 kHz waveforms, and a reference of type `reference` when it takes one."""
    features = {"predictions": datasets.Sequence(datasets.Value("float32"))}
    if reference is not None:
        features["references"] = reference
    return datasets.Features(features)


class AudioMetric(evaluate.Metric):
    """An `evaluate.Metric` whose predictions are audio (see the module docstring). A metric module subclasses it
    with its model card (`CARD_DESCRIPTION`, `CARD_INPUTS`, `CARD_CITATION`, `CARD_URLS`), the type of its references
    (`REFERENCE`, None when it takes none) and `_compute`."""

    CARD_DESCRIPTION = ""
    CARD_INPUTS = ""
    CARD_CITATION = ""
    CARD_URLS: tuple[str, ...] = ()
    REFERENCE: datasets.Value | None = None

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=self.CARD_DESCRIPTION,
            citation=self.CARD_CITATION,
            inputs_description=self.CARD_INPUTS,
            features=audio_features(self.REFERENCE),
            reference_urls=list(self.CARD_URLS),
        )

    def compute(self, *, predictions=None, references=None, sampling_rate: float | None = None, **kwargs):
        """Scores the audio `predictions` (any form; `sampling_rate` for bare waveforms)."""
        if predictions is not None:
            predictions = audio_batch(predictions, sampling_rate)
        return super().compute(predictions=predictions, references=references, **kwargs)

    def add_batch(self, *, predictions=None, references=None, sampling_rate: float | None = None, **kwargs):
        """Adds a batch of audio predictions (any form) to score later with `compute()`."""
        if predictions is not None:
            predictions = audio_batch(predictions, sampling_rate)
        return super().add_batch(predictions=predictions, references=references, **kwargs)

    def add(self, *, prediction=None, reference=None, sampling_rate: float | None = None, **kwargs):
        """Adds one audio prediction (any form) to score later with `compute()`."""
        if prediction is not None:
            prediction = audio_batch([prediction], sampling_rate)[0]
        return super().add(prediction=prediction, reference=reference, **kwargs)


__all__ = ["METRIC_SAMPLING_RATE", "AudioMetric", "audio_batch", "audio_features"]
