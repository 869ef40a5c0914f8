"""A `DynamicCache` that appends into preallocated buffers instead of concatenating at every step.

`DynamicLayer.update` copies the whole key/value history (`torch.cat`) at each decoding step, which costs O(n²)
memory traffic over a generation. The speech head makes this matter: it runs 5 sub-steps per LLM step over a cache
that starts with every upsampled prompt position. [`GrowingCache`] writes the new states into a buffer whose
capacity grows geometrically (×1.5, so at most a third of it is unused) and returns views of its filled part: the
same values in the same layout, so attention results are bitwise identical.
"""

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

GROWTH = 1.5
MIN_CAPACITY = 64


class GrowingLayer(DynamicLayer):
    """A full-attention cache layer whose `keys`/`values` are views of the first positions of larger buffers."""

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        super().lazy_initialization(key_states, value_states)
        self._key_buffer = self._value_buffer = None

    def _cached_length(self) -> int:
        return self.keys.shape[-2] if self.keys.dim() >= 2 else 0

    def _owns_history(self) -> bool:
        """False when the buffer must be rebuilt: something else replaced `keys` (reorder, batch selection,
        offloading...), or it was made under `torch.inference_mode` and can no longer be written in place."""
        buffer = self._key_buffer
        if buffer is None or self.keys.dim() < 2 or self.keys.data_ptr() != buffer.data_ptr():
            return False
        return torch.is_inference_mode_enabled() or not buffer.is_inference()

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        start = self._cached_length()
        end = start + key_states.shape[-2]
        if not self._owns_history() or end > self._key_buffer.shape[-2]:
            capacity = max(int(end * GROWTH), MIN_CAPACITY)
            self._key_buffer = self._grown(self.keys, key_states, start, capacity)
            self._value_buffer = self._grown(self.values, value_states, start, capacity)
        self._key_buffer[..., start:end, :] = key_states
        self._value_buffer[..., start:end, :] = value_states
        self.keys = self._key_buffer[..., :end, :]
        self.values = self._value_buffer[..., :end, :]
        return self.keys, self.values

    @staticmethod
    def _grown(history: torch.Tensor, new_states: torch.Tensor, length: int, capacity: int) -> torch.Tensor:
        buffer = new_states.new_empty(*new_states.shape[:-2], capacity, new_states.shape[-1])
        if length:
            buffer[..., :length, :] = history
        return buffer


class GrowingCache(DynamicCache):
    """A [`DynamicCache`] whose full-attention layers are [`GrowingLayer`]s (sliding-window layers are unchanged)."""

    def __init__(self, config=None, **kwargs):
        super().__init__(config=config, **kwargs)
        if config is None:
            self.layer_class_to_replicate = GrowingLayer
        else:
            self.layers = [GrowingLayer() if type(layer) is DynamicLayer else layer for layer in self.layers]


__all__ = ["GrowingCache", "GrowingLayer"]
