"""One reply inside the running batch: its request, its settings as `generate` prepared them, and what it produced.

A [`Row`] is made when its request is prefilled ([`Row.start`]) and lives until it leaves the batch. The engine's
thread is the only one that touches it.
"""

from dataclasses import dataclass, field
from typing import Any

import torch

from ..generation_fun_audio_chat import ReplyStart
from ..streaming import TextDeltas
from .replies import Reply, ReplyDone


@dataclass
class EngineStats:
    """Counters of an engine (read them for monitoring; the engine's thread writes them).

    `batches` counts decoding steps (each one batched step over the running rows), `rows` the replies admitted,
    `largest_batch` the most rows one step ran, `batch_seconds` the time spent stepping, `running` the rows now.
    """

    batches: int = 0
    rows: int = 0
    largest_batch: int = 0
    completed: int = 0
    cancelled: int = 0
    failed: int = 0
    rejected: int = 0
    batch_seconds: float = 0.0
    running: int = 0


@dataclass
class Row:
    """A reply in the running batch.

    Args:
        reply: the caller's handle (events go there).
        start: its prefill (settings, logits processors and stopping criteria of its request, as `generate` made
            them); `ids` grows from its prompt ids.
        spoken: whether it speaks (its speech head output is used).
        generator: the random generator of a seeded request (None: torch's global one).
    """

    reply: Reply
    start: ReplyStart
    spoken: bool
    text: TextDeltas
    generator: torch.Generator | None = None
    prompt_tokens: int = 0
    prompt_audio_tokens: int = 0
    ids: torch.Tensor = None  # [1, prompt + reply] this row's prompt and tokens so far
    tokens: list[int] = field(default_factory=list)
    speech: list[int] = field(default_factory=list)  # every appended group (BOS / EOS included)
    speech_codes: int = 0  # of them, codes the decoder takes
    speech_ended: bool = False
    first_step: bool = True
    ending: str | None = None  # finish reason once its last step is known
    index: int = -1  # its place in the running batch's tensors (set by the batch)

    def __post_init__(self):
        if self.ids is None:
            self.ids = self.start.input_ids

    @property
    def speech_overrides(self) -> dict:
        """The request's own speech sampling settings (`speech_overrides` of `generate`), if any."""
        return self.reply.request.generate_kwargs.get("speech_overrides") or {}

    @property
    def head_running(self) -> bool:
        """Whether its speech head output still counts (a spoken row until its speech ended)."""
        return self.spoken and not self.speech_ended

    def done_event(self, finish_reason: str, raw_text: str) -> ReplyDone:
        return ReplyDone(
            text=self.text.tokenizer.decode(self.text.ids, skip_special_tokens=True),
            raw_text=raw_text,
            finish_reason=finish_reason,
            prompt_tokens=self.prompt_tokens,
            prompt_audio_tokens=self.prompt_audio_tokens,
            completion_tokens=len(self.tokens),
            speech_codes=self.speech_codes,
            token_ids=list(self.tokens),
            speech_ids=list(self.speech),
        )


def seeded_generator(seed: int | None, device: Any) -> torch.Generator | None:
    """A generator of its own for a seeded request (its draws do not depend on its neighbours)."""
    if seed is None:
        return None
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    return generator


__all__ = ["EngineStats", "Row", "seeded_generator"]
