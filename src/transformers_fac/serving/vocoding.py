"""Streaming token-to-waveform decoding for every spoken row of a batch.

Each row has its own bounded streaming decoder (`model.token2wav.stream_decoder(speaker)`); codes are buffered by
`push` and turned into audio by `step`, once per batch of decoding steps, so that the work of all rows is done
together.
"""

from collections.abc import Hashable
from typing import Any

import numpy as np


class StreamVocoder:
    """The streaming decoders of the spoken rows of one batch, keyed by row.

    Example:

    ```python
    >>> vocoder = StreamVocoder(model.token2wav)
    >>> vocoder.open(0, speaker="中文女")
    >>> vocoder.push(0, [12, 4051, 77, 6562])  # ids >= 6561 (BOS/EOS/pad) are dropped
    >>> audio = vocoder.step()  # {row: float32 samples} for the rows that completed a chunk
    >>> tail = vocoder.finish(0)
    ```
    """

    def __init__(self, token2wav: Any):
        self.token2wav = token2wav
        self.sampling_rate = token2wav.config.sampling_rate
        self.vocab_size = token2wav.config.vocab_size
        self._decoders: dict[Hashable, Any] = {}
        self._pending: dict[Hashable, list[int]] = {}

    def open(self, key: Hashable, speaker: Any) -> None:
        """Starts the stream of a row (an unknown voice raises here)."""
        self._decoders[key] = self.token2wav.stream_decoder(speaker)
        self._pending[key] = []

    def push(self, key: Hashable, codes: list[int]) -> int:
        """Buffers a row's new codes; returns how many of them are vocoder codes."""
        valid = [code for code in codes if 0 <= code < self.vocab_size]
        self._pending[key].extend(valid)
        return len(valid)

    def step(self) -> dict[Hashable, np.ndarray]:
        """Decodes the buffered codes of every row; returns the new audio of the rows that produced some."""
        audio = {}
        for key, codes in self._pending.items():
            if codes:
                self._pending[key] = []
                samples = _samples(self._decoders[key].push(codes))
                if samples.size:
                    audio[key] = samples
        return audio

    def finish(self, key: Hashable) -> np.ndarray:
        """Decodes everything left of a row and closes its stream."""
        decoder = self._decoders.pop(key)
        codes = self._pending.pop(key)
        pieces = [_samples(decoder.push(codes))] if codes else []
        if decoder.codes_received:
            pieces.append(_samples(decoder.finish()))
        return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)

    def drop(self, key: Hashable) -> None:
        """Forgets a row (cancelled or failed) without decoding the rest."""
        self._decoders.pop(key, None)
        self._pending.pop(key, None)


def _samples(waveform) -> np.ndarray:
    return waveform.detach().reshape(-1).float().cpu().numpy()


__all__ = ["StreamVocoder"]
