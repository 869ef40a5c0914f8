"""The running batch of the compiled engine: a fixed number of slots on static caches, one compiled step.

Every tensor the step reads has a fixed shape ([slots, ...]) and a fixed address, so that the compiled
[`decode_step`] (static caches, `torch.compile(fullgraph=True)`, CUDA graphs on CUDA) replays the same graph at
every step, whichever rows join or leave: a request takes a free slot, a finished one frees it.

The layout: each cache (the LLM's, the speech head's) is a `StaticCache` whose layers share one write column (the
cache's fill level), advanced by every step for all slots. A row that joins is prefilled alone (eager, dynamic
cache) and copied into its slot so that its prompt ends at the current write column; the columns before it are
masked for that slot. A row's position ids are its own (each slot's next position), so where its columns lie changes
nothing it computes. Two moves keep the columns in range, both in place and outside the compiled step: when a
prompt is longer than the filled columns, everything shifts right to make room; when the write column reaches the
end, everything shifts left by the columns no running row uses any more (a row never spans the whole capacity: a
request's prompt plus `max_new_tokens` must fit, see `SlotBatch.fits`).

Free slots and text rows run through the step like the others (their results are never read): the speech head runs
at every step, for one graph. Speech codes are chosen by a [`RowSpeechSampler`]: per-slot settings, and per-slot noise
drawn before each step from the row's own random generator.
"""

import torch
from transformers import CompileConfig, StaticCache

from ..decoding_cache import StaticSequence, static_cache_length
from ..decoding_step import DecodingState, compiled_decode_step, decode_attention, decode_step
from ..modeling_speech_head import SpeechHeadState
from ..speech_sampling import RowSpeechSampler, SpeechSamplingConfig
from .batch import RunningBatch
from .rows import Row


def _static_sequence(config, capacity: int, slots: int, dtype: torch.dtype, device: torch.device) -> StaticSequence:
    heads = config.num_key_value_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    cache = StaticCache(config=config, max_cache_len=capacity)
    cache.early_initialization(slots, heads, head_dim, dtype, device)
    return StaticSequence(cache, capacity, slots, device)


def _shift(sequence: StaticSequence, level: int, columns: int) -> int:
    """Moves every slot's columns right (`columns` > 0) or left, in place; the write column (`level`) moves with them.
    Returns the new level."""
    level += columns
    if columns:
        for layer in sequence.cache.layers:
            layer.keys.copy_(layer.keys.roll(columns, dims=2))
            layer.values.copy_(layer.values.roll(columns, dims=2))
            layer.cumulative_length.fill_(level)
        sequence.mask.copy_(sequence.mask.roll(columns, dims=1))
    return level


def _place(sequence: StaticSequence, level: int, slot: int, source) -> None:
    """Copies a prefilled sequence of one row (a `GrowingSequence`, or None: nothing, position 0) into `slot`, ending
    at the write column `level`; the slot's other columns are masked."""
    sequence.mask[slot].zero_()
    sequence.next_position[slot] = 0 if source is None else source.next_position[0]
    if source is None:
        return
    length = source.cache.get_seq_length()
    for layer, row_layer in zip(sequence.cache.layers, source.cache.layers):
        layer.keys[slot, :, level - length : level] = row_layer.keys[0]
        layer.values[slot, :, level - length : level] = row_layer.values[0]
    sequence.mask[slot, level - length : level] = 1 if source.mask is None else source.mask[0]


def slot_step(model, state: DecodingState, tokens: torch.Tensor, group: torch.Tensor, fuse: torch.Tensor):
    """The slots' step: [`decode_step`] with the speech head, compiled apart from `generate`'s (its graphs do not count
    against the compiled `decode_step`'s recompile limit)."""
    return decode_step(model, state, tokens, group, fuse, True)


class SlotBatch(RunningBatch):
    """`slots` rows decoded by one compiled step on static caches of `capacity` LLM positions (see the module
    docstring). `compile_config` as `generate` takes it (default: whole graph; CUDA graphs on CUDA)."""

    def __init__(self, model, slots: int, capacity: int, compile_config: CompileConfig | None = None):
        super().__init__(model)
        config, device, dtype = model.config, model.device, model.dtype
        self.slots, self.capacity = slots, static_cache_length(capacity)
        self._free = list(range(slots))
        self.moves_right = self.moves_left = 0  # column moves so far (see the module docstring)
        self._sampled: set[int] = set()  # slots whose speech codes are sampled
        self.llm = _static_sequence(config.get_text_config(decoder=True), self.capacity, slots, dtype, device)
        head = model.audio_invert_tower
        self.group_size = config.audio_config.group_size
        self.head = SpeechHeadState(
            _static_sequence(head.crq_transformer.config, self.group_size * self.capacity, slots, dtype, device),
            head.code_embeddings(torch.full((slots,), head.config.bos_token_id, device=device)).to(dtype),
        )
        torch._dynamo.mark_static_address(self.head.last_code_embedding)
        self.sampler = RowSpeechSampler(slots, config.audio_config.codebook_size, self.group_size, device)
        vocab = config.get_text_config(decoder=True).vocab_size
        self.logits = torch.zeros(slots, vocab, device=device)
        self.group = self.pad_group(slots, device)
        self.last_group = self.pad_group(slots, device)
        self.speaking = torch.zeros(slots, dtype=torch.bool, device=device)
        self.appended_last = torch.zeros(slots, dtype=torch.bool, device=device)
        # each sequence's write column (its caches' fill level), kept on the host: reading it back from the device
        # would cost a synchronisation per step
        self._levels = {id(self.llm): 0, id(self.head.sequence): 0}
        self._step = compiled_decode_step(compile_config, device, slot_step)
        self._cuda_graphs = device.type == "cuda"

    @property
    def size(self) -> int:
        return self.slots

    @property
    def free(self) -> int:
        return len(self._free)

    def fits(self, prompt_tokens: int, max_new_tokens: int) -> bool:
        """Whether a request's prompt and reply fit a slot."""
        return prompt_tokens + max_new_tokens <= self.capacity

    def join(self, row: Row) -> None:
        """Copies a prefilled row into a free slot (its prompt ending at the write column) and sets its settings."""
        start = row.start
        slot = self._free.pop(0)
        row.index = slot
        self._make_room(self.llm, start.state.llm.cache.get_seq_length())
        _place(self.llm, self._levels[id(self.llm)], slot, start.state.llm)
        head = start.state.head
        if head is not None:
            self._make_room(self.head.sequence, head.sequence.cache.get_seq_length())
            _place(self.head.sequence, self._levels[id(self.head.sequence)], slot, head.sequence)
            self.head.last_code_embedding[slot] = head.last_code_embedding[0]
            sampling = SpeechSamplingConfig.resolve(start.generation_config, row.speech_overrides)
            self.sampler.set_row(slot, sampling, start.state.chooser.history[0])
            if sampling.do_sample:
                self._sampled.add(slot)
        else:
            _place(self.head.sequence, self._levels[id(self.head.sequence)], slot, None)
        self.logits[slot] = start.logits[0].to(self.logits.dtype)
        speaking = start.input_ids[0, -1] == self.model.config.text_config.audio_bos_index
        self.speaking[slot] = speaking
        self.group[slot] = self._pad_group[1] if start.step_group is None else start.step_group[0]
        self.last_group[slot] = self._pad_group[1]
        self.appended_last[slot] = False
        self.rows.append(row)

    def leave(self, rows: list[Row]) -> None:
        gone = {id(row) for row in rows}
        for row in rows:
            self._free.append(row.index)
            self._sampled.discard(row.index)
            self.speaking[row.index] = False
        self._free.sort()
        self.rows = [row for row in self.rows if id(row) not in gone]
        if not self.rows:  # start again at column 0 (also after a failed step, which may have left them uneven)
            for sequence in (self.llm, self.head.sequence):
                for layer in sequence.cache.layers:
                    layer.cumulative_length.fill_(0)
                self._levels[id(sequence)] = 0

    def commit(self, rows: list[Row], appended: torch.Tensor, kept: torch.Tensor) -> None:
        self.sampler.commit(appended, kept)

    def decode(self) -> None:
        tokens = torch.zeros(self.slots, dtype=torch.long)  # free slots: any token, never read
        tokens[[row.index for row in self.rows]] = torch.tensor([row.tokens[-1] for row in self.rows])
        tokens = tokens.to(self.logits.device)
        advances = ((self.llm, 1), (self.head.sequence, self.group_size))  # columns each step writes
        for sequence, columns in advances:
            if self._levels[id(sequence)] + columns > sequence.capacity:
                self._compact(sequence)
        for row in self.rows:
            if row.head_running and row.index in self._sampled:
                self.sampler.draw(row.index, row.generator)
        state = DecodingState(self.llm, self.head, self.sampler)
        fuse = self.speaking & self.appended_last
        if self._cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()
        with decode_attention(self.model):
            logits, group = self._step(self.model, state, tokens, self.last_group, fuse)
        for sequence, columns in advances:
            self._levels[id(sequence)] += columns
        self.logits.copy_(logits)  # outputs may live in a CUDA graph's memory, which the next replay overwrites
        self.group.copy_(group)

    # ------------------------------------------------------------------------------------------------ columns
    def _make_room(self, sequence: StaticSequence, length: int) -> None:
        """Shifts the columns so that `length` of them fit before the write column."""
        level = self._levels[id(sequence)]
        if level < length:
            self._levels[id(sequence)] = _shift(sequence, level, length - level)
            self.moves_right += 1

    def _compact(self, sequence: StaticSequence) -> None:
        """Shifts left by the leading columns that no running row (of this sequence) uses."""
        used = [row.index for row in self.rows if sequence is self.llm or row.head_running]
        level = self._levels[id(sequence)]
        first = level
        if used:
            columns = sequence.mask[used, :level].any(dim=0).nonzero()
            first = int(columns[0]) if len(columns) else level
        self._levels[id(sequence)] = _shift(sequence, level, -first)
        self.moves_left += 1


__all__ = ["SlotBatch"]
