"""Streaming token-to-waveform decoding for every spoken row of a batch.

Each row has its own bounded streaming decoder (`model.token2wav.stream_decoder(speaker)`); `push` hands it the
row's new codes and `step` decodes what every row can, the rows' steps batched together (`stream_batch`).
"""

from collections.abc import Hashable
from typing import Any

import numpy as np

from ..token2wav.stream_batch import finish_together, step_together


class StreamVocoder:
    """The streaming decoders of the spoken rows of one batch, keyed by row.

    Example:

    ```python
    >>> vocoder = StreamVocoder(model.token2wav)
    >>> vocoder.open(0, speaker="中文女")
    >>> vocoder.push(0, [12, 4051, 77, 6562])  # ids >= 6561 (BOS/EOS/pad) are dropped
    >>> audio = vocoder.step()  # {row: float32 samples} for the rows that completed a chunk
    >>> tails = vocoder.finish([0])  # {row: the rest of its audio}
    ```
    """

    def __init__(self, token2wav: Any):
        self.token2wav = token2wav
        self.sampling_rate = token2wav.config.sampling_rate
        self.vocab_size = token2wav.config.vocab_size
        self._decoders: dict[Hashable, Any] = {}

    def open(self, key: Hashable, speaker: Any, exact: bool = False) -> None:
        """Starts the stream of a row (an unknown voice raises here); `exact`: the official web-demo schedule."""
        self._decoders[key] = self.token2wav.stream_decoder(speaker, exact=exact)

    def push(self, key: Hashable, codes: list[int]) -> int:
        """Hands a row's new codes to its stream (decoded by the next `step`); returns how many are vocoder codes."""
        valid = [code for code in codes if 0 <= code < self.vocab_size]
        self._decoders[key].add(valid)
        return len(valid)

    def step(self) -> dict[Hashable, np.ndarray]:
        """Decodes every row's complete steps; returns the new audio of the rows that produced some."""
        keys = list(self._decoders)
        chunks = step_together([self._decoders[key] for key in keys])
        audio = {key: _samples(chunk) for key, chunk in zip(keys, chunks)}
        return {key: samples for key, samples in audio.items() if samples.size}

    def finish(self, keys: list[Hashable]) -> dict[Hashable, np.ndarray]:
        """Decodes everything left of these rows (together) and closes their streams."""
        chunks = finish_together([self._decoders.pop(key) for key in keys])
        return {key: _samples(chunk) for key, chunk in zip(keys, chunks)}

    def drop(self, key: Hashable) -> None:
        """Forgets a row (cancelled or failed) without decoding the rest."""
        self._decoders.pop(key, None)


def _samples(waveform) -> np.ndarray:
    return waveform.detach().reshape(-1).float().cpu().numpy()


__all__ = ["StreamVocoder"]
