"""Per-call bookkeeping of a causal stack decoded step by step (the LLM, and the speech head's transformer).

A [`DecodingSequence`] holds the key/value cache of one `generate` call, the padding mask of everything fed so far and
each row's next position id, and turns "`count` new inputs, these of them valid" into the `attention_mask` and
`position_ids` of the next forward call. Two kinds:

- [`GrowingSequence`] (the eager path, the reference): a `DynamicCache`; the mask grows by concatenation and stays
  None while no row is padded, as `generate` does it.
- [`StaticSequence`] (`cache_implementation="static"`): a `StaticCache` and a mask buffer of fixed size, written in
  place at the cache's fill level, so that a compiled step sees the same shapes and addresses at every step. Positions
  past the fill level are masked (and causal anyway).

Both give the same position ids: per row, the number of valid inputs before (left padding shifts nothing).
"""

import torch
from transformers import Cache, DynamicCache, PreTrainedConfig, StaticCache

# Static caches are sized in buckets (powers of two, at least this), so that prompts of similar length share one
# compiled step.
MIN_STATIC_CACHE_LENGTH = 128


def static_cache_length(needed: int) -> int:
    """The bucketed capacity of a static cache that must hold `needed` positions: the next power of two, at least
    `MIN_STATIC_CACHE_LENGTH`.

    Example:
        >>> static_cache_length(100), static_cache_length(300)
        (128, 512)
    """
    return max(MIN_STATIC_CACHE_LENGTH, 1 << max(needed - 1, 0).bit_length())


class DecodingSequence:
    """A cache, the padding mask of its inputs and each row's next position id (see the module docstring)."""

    cache: Cache
    next_position: torch.Tensor  # [B]
    mask: torch.Tensor | None

    def advance(self, valid: torch.Tensor | None, count: int) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Registers `count` new inputs (`valid` [B, count] marks non-padding, None: all valid) and returns the
        `attention_mask` and `position_ids` [B, count] of the forward call that feeds them."""
        raise NotImplementedError

    def _positions(self, valid: torch.Tensor) -> torch.Tensor:
        """Per row: the next position for each valid input (padding gets the position of the input before it)."""
        return (self.next_position[:, None] + valid.cumsum(-1) - 1).clamp(min=0)


class GrowingSequence(DecodingSequence):
    """A `DynamicCache` and a mask that grows with it (None while nothing is padded)."""

    def __init__(self, cache: Cache, next_position: torch.Tensor, mask: torch.Tensor | None = None):
        self.cache, self.next_position, self.mask = cache, next_position, mask

    @classmethod
    def empty(cls, config: PreTrainedConfig, batch_size: int, device: torch.device) -> "GrowingSequence":
        return cls(DynamicCache(config=config), torch.zeros(batch_size, dtype=torch.long, device=device))

    def advance(self, valid: torch.Tensor | None, count: int) -> tuple[torch.Tensor | None, torch.Tensor]:
        batch, device = self.next_position.shape[0], self.next_position.device
        if valid is None:
            valid = torch.ones(batch, count, dtype=torch.long, device=device)
            if self.mask is not None:
                self.mask = torch.cat([self.mask, valid], dim=1)
        else:
            previous = self.mask
            if previous is None:
                previous = torch.ones(batch, self.cache.get_seq_length(), dtype=torch.long, device=device)
            valid = valid.long()
            self.mask = torch.cat([previous, valid], dim=1)
        positions = self._positions(valid)
        self.next_position = self.next_position + valid.sum(-1)
        return self.mask, positions


class StaticSequence(DecodingSequence):
    """A `StaticCache` of `capacity` positions and a mask buffer of the same length, updated in place."""

    def __init__(
        self,
        cache: StaticCache,
        capacity: int,
        batch_size: int,
        device: torch.device,
        prompt_mask: torch.Tensor | None = None,
        prompt_length: int = 0,
    ):
        """`prompt_length` inputs are already in `cache` (`prompt_mask` [B, prompt_length] marks the valid ones)."""
        self.cache, self.capacity = cache, capacity
        self.mask = torch.zeros(batch_size, capacity, dtype=torch.long, device=device)
        if prompt_length:
            self.mask[:, :prompt_length] = 1 if prompt_mask is None else prompt_mask.long()
        self.next_position = self.mask.sum(-1)
        # Fixed addresses: updated in place by the compiled step (CUDA graphs replay on the same memory).
        torch._dynamo.mark_static_address(self.mask)
        torch._dynamo.mark_static_address(self.next_position)

    @classmethod
    def empty(cls, config: PreTrainedConfig, capacity: int, batch_size: int, device: torch.device) -> "StaticSequence":
        return cls(StaticCache(config=config, max_cache_len=capacity), capacity, batch_size, device)

    def advance(self, valid: torch.Tensor | None, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        batch, device = self.next_position.shape[0], self.next_position.device
        valid = torch.ones(batch, count, dtype=torch.long, device=device) if valid is None else valid.long()
        offset = self.cache.get_seq_length()  # a 0-d tensor once the cache holds something (no host sync)
        self.mask.index_copy_(1, torch.arange(count, device=device) + offset, valid)
        positions = self._positions(valid)
        self.next_position.add_(valid.sum(-1))
        return self.mask, positions


__all__ = [
    "MIN_STATIC_CACHE_LENGTH",
    "DecodingSequence",
    "GrowingSequence",
    "StaticSequence",
    "static_cache_length",
]
