"""One voice from many clips of one speaker (e.g. the spoken replies a LoRA fine-tune learns from).

Rule:
- **speaker vector** = the mean of the clips' L2-normalised CAM++ vectors, L2-normalised again (the flow only uses
  the direction; averaging over clips smooths out what a single recording adds: room, microphone, mood);
- **prompt** (codes + mel) = the best clip: among the clips lasting `min_seconds` to `max_seconds` (default 5–15 s),
  the one with the highest speech ratio (`speech_ratio`: share of 20 ms frames with speech energy, i.e. the fewest
  pauses), the longer one on a tie; when no clip is in that range, the clip closest to it (longer clips are cut to
  30 s).
Clips that break the clip rules (`load_clip`: shorter than 1 s, silent, unreadable) are skipped with a warning.

Example:
    >>> from datasets import Dataset, Audio
    >>> rows = Dataset.from_dict({"audio": ["a.wav", "b.wav"]}).cast_column("audio", Audio())
    >>> voice = voice_from_dataset(rows, model.token2wav, audio_column="audio", name="me")  # doctest: +SKIP
"""

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..audio_io import AudioInputError
from .features import SPEAKER_SAMPLING_RATE, load_clip, speech_ratio
from .frontend import VoiceFrontend
from .voice_file import FunAudioChatVoice

logger = logging.getLogger(__name__)


@dataclass
class _Candidate:
    index: int
    seconds: float
    ratio: float
    clip_16k: np.ndarray
    clip_24k: np.ndarray

    def distance(self, low: float, high: float) -> float:
        return max(0.0, low - self.seconds, self.seconds - high)

    def rank(self, low: float, high: float) -> tuple[float, float, float]:
        """Smaller is better: in range first, then the highest speech ratio, then the longest."""
        return (self.distance(low, high), -self.ratio, -self.seconds)


def voice_from_dataset(
    dataset: Iterable[Any],
    frontend: VoiceFrontend | Any,
    audio_column: str = "audio",
    name: str | None = None,
    min_seconds: float = 5.0,
    max_seconds: float = 15.0,
    max_clips: int | None = None,
) -> FunAudioChatVoice:
    """Build one voice from the clips in `dataset` (rows with an `audio_column`, or plain audio inputs) by the rule of
    the module docstring.

    Args:
        dataset: a `datasets.Dataset` (or any iterable of rows / audio inputs `load_audio` takes).
        frontend: a `VoiceFrontend`, or a decoder (anything with a `voice_frontend`).
        audio_column: the column holding the speaker's audio.
        name: the voice's name.
        min_seconds / max_seconds: the preferred prompt length.
        max_clips: use at most this many clips (the first ones).
    """
    frontend = getattr(frontend, "voice_frontend", frontend)
    if min_seconds > max_seconds:
        raise ValueError(f"min_seconds ({min_seconds}) must not exceed max_seconds ({max_seconds}).")
    vectors: list[torch.Tensor] = []
    skipped: list[str] = []
    best: _Candidate | None = None
    for index, row in enumerate(dataset):
        if max_clips is not None and index >= max_clips:
            break
        audio = row[audio_column] if isinstance(row, Mapping) else row
        try:
            clip_16k, clip_24k = load_clip(audio, trim=True, target_sampling_rate=frontend.sampling_rate)
        except AudioInputError as error:
            skipped.append(f"row {index}: {error}")
            continue
        vectors.append(torch.nn.functional.normalize(frontend.speaker_vector_16k(clip_16k), dim=1))
        candidate = _Candidate(
            index, clip_16k.shape[0] / SPEAKER_SAMPLING_RATE, speech_ratio(clip_16k), clip_16k, clip_24k
        )
        if best is None or candidate.rank(min_seconds, max_seconds) < best.rank(min_seconds, max_seconds):
            best = candidate
    if skipped:
        logger.warning("voice_from_dataset skipped %d clip(s): %s", len(skipped), "; ".join(skipped[:5]))
    if best is None:
        reasons = "; ".join(skipped[:3]) or "the dataset is empty"
        raise ValueError(f"No usable clip to build a voice from ({reasons}).")
    mean = torch.nn.functional.normalize(torch.cat(vectors).mean(dim=0, keepdim=True), dim=1)
    source = (
        f"dataset column {audio_column!r}: speaker vector over {len(vectors)} clip(s), prompt from row {best.index} "
        f"({best.seconds:.1f} s, speech ratio {best.ratio:.2f})"
    )
    return frontend.voice_from_clip(best.clip_16k, best.clip_24k, name=name, source=source, speaker_embedding=mean)


__all__ = ["voice_from_dataset"]
