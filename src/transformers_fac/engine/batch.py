"""The running batch of the eager engine: its decoding state, and how rows join and leave it (dynamic caches).

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
from ..decoding_step import DecodingState, decode_step
from .rows import Row


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


class RunningBatch:
    """The rows decoding together and the per-row tensors the engine's step reads and writes ([B, ...], B =
    [`size`]): the logits of the next text token, the speech group computed with them, which rows are speaking,
    which appended a group at the last step, and that group. A row's place in them is `row.index`."""

    def __init__(self, model):
        self.model = model
        self.rows: list[Row] = []
        audio_config = model.config.audio_config
        self._pad_group = (audio_config.group_size, audio_config.pad_token_id)

    @property
    def size(self) -> int:
        raise NotImplementedError

    def pad_group(self, rows: int, device: torch.device) -> torch.Tensor:
        return torch.full((rows, self._pad_group[0]), self._pad_group[1], device=device)

    def join(self, row: Row) -> None:
        raise NotImplementedError

    def leave(self, rows: list[Row]) -> None:
        raise NotImplementedError

    def commit(self, rows: list[Row], appended: torch.Tensor, kept: torch.Tensor) -> None:
        """The speech groups appended this step ([B, 5]; `kept` [B] marks the rows that appended one, `rows` are
        they) join the repetition history of their rows."""
        raise NotImplementedError

    def decode(self) -> None:
        """One batched decoding step on the rows' last text tokens: new logits (and speech groups)."""
        raise NotImplementedError


class _RowChoosers:
    """The speech head's code chooser for the whole batch: each spoken row's own chooser on its own logits (text rows
    get code 0, never used)."""

    def __init__(self, rows: list[Row]):
        self.rows = rows

    def __call__(self, logits: torch.Tensor, group: list[torch.Tensor]) -> torch.Tensor:
        codes = []
        for index, row in enumerate(self.rows):
            chooser = row.start.state.chooser
            if chooser is None or not row.head_running:
                codes.append(torch.zeros(1, dtype=torch.long, device=logits.device))
            else:
                codes.append(chooser(logits[index : index + 1], [code[index : index + 1] for code in group]))
        return torch.cat(codes)


class EagerBatch(RunningBatch):
    """A batch of exactly the running rows on dynamic caches: joining concatenates a row's prefill, leaving selects
    the rest (`join` / `select`); the step runs eagerly, the speech head only while some row speaks."""

    def __init__(self, model):
        super().__init__(model)
        self._reset()

    @property
    def size(self) -> int:
        return len(self.rows)

    def _reset(self) -> None:
        self.llm: GrowingSequence | None = None
        self.head = None  # SpeechHeadState of all rows
        self.logits = self.group = self.speaking = self.appended_last = self.last_group = None

    def join(self, row: Row) -> None:
        """Appends a prefilled row (caches left-padded, per-row tensors concatenated)."""
        model, start = self.model, row.start
        config = model.config
        device = start.logits.device
        pad_group = self.pad_group(1, device)
        head = start.state.head
        if head is None and getattr(model, "has_speech_head", False):
            empty = GrowingSequence.empty(model.audio_invert_tower.crq_transformer.config, 1, device)
            head = model.audio_invert_tower.start_state(empty, torch.empty(0, dtype=model.dtype, device=device))
        speaking = start.input_ids[:, -1] == config.text_config.audio_bos_index
        group = start.step_group if start.step_group is not None else pad_group
        if self.llm is None:
            self.llm, self.head = start.state.llm, head
            self.logits, self.group, self.speaking = start.logits, group, speaking
            self.appended_last = torch.zeros(1, dtype=torch.bool, device=device)
            self.last_group = pad_group
        else:
            self.llm = join(self.llm, start.state.llm, config.get_text_config(decoder=True))
            if head is not None:
                head_config = model.audio_invert_tower.crq_transformer.config
                self.head.sequence = join(self.head.sequence, head.sequence, head_config)
                self.head.last_code_embedding = torch.cat(
                    [self.head.last_code_embedding, head.last_code_embedding.to(self.head.last_code_embedding)]
                )
            self.logits = torch.cat([self.logits, start.logits.to(self.logits.dtype)])
            self.group = torch.cat([self.group, group])
            self.speaking = torch.cat([self.speaking, speaking])
            self.appended_last = torch.cat([self.appended_last, torch.zeros_like(speaking)])
            self.last_group = torch.cat([self.last_group, pad_group])
        row.index = len(self.rows)
        self.rows.append(row)

    def leave(self, rows: list[Row]) -> None:
        gone = {id(row) for row in rows}
        keep_list = [index for index, row in enumerate(self.rows) if id(row) not in gone]
        self.rows = [self.rows[index] for index in keep_list]
        for index, row in enumerate(self.rows):
            row.index = index
        if not self.rows:
            self._reset()
            return
        keep = torch.tensor(keep_list, device=self.logits.device)
        self.llm = select(self.llm, keep, self.model.config.get_text_config(decoder=True))
        if self.head is not None:
            head_config = self.model.audio_invert_tower.crq_transformer.config
            self.head.sequence = select(self.head.sequence, keep, head_config)
            self.head.last_code_embedding = self.head.last_code_embedding[keep]
        self.logits, self.group = self.logits[keep], self.group[keep]
        self.speaking, self.appended_last = self.speaking[keep], self.appended_last[keep]
        self.last_group = self.last_group[keep]

    def commit(self, rows: list[Row], appended: torch.Tensor, kept: torch.Tensor) -> None:
        for row in rows:
            row.start.state.chooser.commit(appended[row.index : row.index + 1], kept[row.index : row.index + 1])

    def decode(self) -> None:
        tokens = torch.tensor([row.tokens[-1] for row in self.rows], device=self.logits.device)
        state = DecodingState(self.llm, self.head, _RowChoosers(self.rows) if self.head is not None else None)
        run_head = any(row.head_running for row in self.rows)
        fuse = self.speaking & self.appended_last
        logits, group = decode_step(self.model, state, tokens, self.last_group, fuse, run_head)
        self.logits = logits
        if group is not None:
            self.group = group


__all__ = ["EagerBatch", "RunningBatch", "join", "select"]
