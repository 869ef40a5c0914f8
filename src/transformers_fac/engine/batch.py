"""The running batch's decoding state, and how rows join and leave it (eager caches).

A row is prefilled alone (`model.start_reply`, a batch of one); joining appends it to the batch: every key/value
cache (the LLM's, the speech head's) is left-padded to the longest and concatenated along the batch, the padding mask
and the per-row next positions likewise. Leaving selects the remaining rows and drops the leading columns that are
padding in every row. Left padding changes no position id (each row counts its own valid inputs), so a row decodes
as it would alone. Caches are rebuilt through `DynamicCache`'s public constructor from the layers' tensors.
"""

import torch
import torch.nn.functional as F
from transformers import DynamicCache

from ..decoding_cache import GrowingSequence


def _layer_tensors(cache: DynamicCache) -> list[tuple[torch.Tensor, torch.Tensor] | None]:
    if any(layer.is_sliding for layer in cache.layers):
        raise ValueError("The reply engine joins full-attention caches only (this model has sliding-window layers).")
    return [(layer.keys, layer.values) if layer.get_seq_length() else None for layer in cache.layers]


def _pad_rows(tensor: torch.Tensor | None, rows: int, width: int, like: torch.Tensor) -> torch.Tensor:
    """[B, H, S, D] keys/values (or None: `rows` empty rows shaped like `like`) left-padded with zeros to `width`."""
    if tensor is None:
        return like.new_zeros(rows, like.shape[1], width, like.shape[3])
    return F.pad(tensor, (0, 0, width - tensor.shape[2], 0))


def _mask(sequence: GrowingSequence, length: int) -> torch.Tensor:
    if sequence.mask is not None:
        return sequence.mask
    rows = sequence.next_position.shape[0]
    return torch.ones(rows, length, dtype=torch.long, device=sequence.next_position.device)


def _simplified(mask: torch.Tensor) -> torch.Tensor | None:
    """No mask where nothing is padding (the solo path: `generate` passes none either)."""
    return None if bool(mask.all()) else mask


def join(batch: GrowingSequence, new: GrowingSequence, config) -> GrowingSequence:
    """`batch`'s rows followed by `new`'s, both caches left-padded to the longer one."""
    old_layers, new_layers = _layer_tensors(batch.cache), _layer_tensors(new.cache)
    old_rows, new_rows = batch.next_position.shape[0], new.next_position.shape[0]
    old_length, new_length = batch.cache.get_seq_length(), new.cache.get_seq_length()
    width = max(old_length, new_length)
    layers = []
    for old, fresh in zip(old_layers, new_layers):
        if old is None and fresh is None:
            layers.append((None, None))
            continue
        like = (old or fresh)[0]
        keys = torch.cat(
            [_pad_rows(old and old[0], old_rows, width, like), _pad_rows(fresh and fresh[0], new_rows, width, like)]
        )
        values = torch.cat(
            [_pad_rows(old and old[1], old_rows, width, like), _pad_rows(fresh and fresh[1], new_rows, width, like)]
        )
        layers.append((keys, values))
    mask = torch.cat(
        [
            F.pad(_mask(batch, old_length), (width - old_length, 0)),
            F.pad(_mask(new, new_length), (width - new_length, 0)),
        ]
    )
    return GrowingSequence(
        DynamicCache(ddp_cache_data=layers, config=config),
        torch.cat([batch.next_position, new.next_position]),
        _simplified(mask),
    )


def select(sequence: GrowingSequence, keep: torch.Tensor, config) -> GrowingSequence:
    """The rows `keep` [n] of `sequence`, without the leading columns that are padding in all of them."""
    length = sequence.cache.get_seq_length()
    mask = _mask(sequence, length)[keep]
    used = mask.any(dim=0).nonzero()
    start = int(used[0]) if len(used) else length
    layers = [
        (None, None) if tensors is None else (tensors[0][keep, :, start:], tensors[1][keep, :, start:])
        for tensors in _layer_tensors(sequence.cache)
    ]
    return GrowingSequence(
        DynamicCache(ddp_cache_data=layers, config=config),
        sequence.next_position[keep],
        _simplified(mask[:, start:]),
    )


__all__ = ["join", "select"]
