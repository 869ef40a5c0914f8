"""How the 25 Hz speech codes are chosen: settings, and the two choosers the decoding loop uses.

The speech head samples each code with the text settings minus bad-words filtering, as the official model does:
repetition penalty over every code of the turn so far (the codes already chosen in the current group included), then,
when sampling, temperature, top-k, top-p and min-p.

- [`ProcessorChooser`] (the eager path, the reference) runs transformers' own logits processors over the growing
  code history.
- [`StaticSpeechSampler`] (the static, compiled path) computes the same thing with fixed shapes: the history is a
  [B, codebook] "seen" mask instead of a growing list (the penalty touches each seen code once either way), the
  settings are tensors (changing them recompiles nothing), and sampling uses the exponential race
  (`argmax(probs / Exp(1))`, distributed like `torch.multinomial`), which compiles into the graph. Greedy choices are
  the eager ones exactly; sampled ones follow the same distribution from another random stream.
"""

from dataclasses import dataclass

import torch
from torch import nn
from transformers import GenerationConfig
from transformers.generation import (
    LogitsProcessorList,
    MinPLogitsWarper,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

SPEECH_SAMPLING_KEYS = ("do_sample", "temperature", "top_k", "top_p", "min_p", "repetition_penalty")


@dataclass
class SpeechSamplingConfig:
    """How the 25 Hz speech codes are chosen. By default the text settings are reused, as the official model does."""

    do_sample: bool = False
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None

    @classmethod
    def resolve(cls, generation_config: GenerationConfig, overrides: dict) -> "SpeechSamplingConfig":
        """Per key: an explicit `speech_<key>` argument, else `speech_<key>` in the generation config, else `<key>`."""
        values = {}
        for key in SPEECH_SAMPLING_KEYS:
            value = overrides.get(key)
            if value is None:
                value = getattr(generation_config, f"speech_{key}", None)
            if value is None:
                value = getattr(generation_config, key, None)
            values[key] = value
        values["do_sample"] = bool(values["do_sample"])
        return cls(**values)

    def processors(self) -> LogitsProcessorList:
        """Repetition penalty, then (when sampling) the usual warpers, in transformers' order."""
        processors = LogitsProcessorList()
        if self.repetition_penalty is not None and self.repetition_penalty != 1.0:
            processors.append(RepetitionPenaltyLogitsProcessor(self.repetition_penalty))
        if self.do_sample:
            if self.temperature is not None and self.temperature != 1.0:
                processors.append(TemperatureLogitsWarper(self.temperature))
            if self.top_k is not None and self.top_k != 0:
                processors.append(TopKLogitsWarper(self.top_k))
            if self.top_p is not None and self.top_p < 1.0:
                processors.append(TopPLogitsWarper(self.top_p))
            if self.min_p is not None:
                processors.append(MinPLogitsWarper(self.min_p))
        return processors


def choose(scores: torch.Tensor, do_sample: bool, generator: torch.Generator | None = None) -> torch.Tensor:
    """Multinomial draw from `softmax(scores)` when sampling (from `generator`, default: torch's global one), else
    argmax: [B, V] -> [B]."""
    if do_sample:
        probs = nn.functional.softmax(scores, dim=-1)
        return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(1)
    return torch.argmax(scores, dim=-1)


class ProcessorChooser:
    """Chooses codes with transformers' logits processors over the code history (the eager path).

    `history` [B, T] holds every code appended so far; rows that did not speak at a step hold `sentinel` there (an
    id outside the logits, which the repetition penalty ignores). `generator` (settable) draws the sampled codes
    (default: torch's global random generator).
    """

    def __init__(self, config: SpeechSamplingConfig, batch_size: int, sentinel: int, device: torch.device):
        self.processors, self.do_sample, self.sentinel = config.processors(), config.do_sample, sentinel
        self.history = torch.empty(batch_size, 0, dtype=torch.long, device=device)
        self.generator: torch.Generator | None = None

    def __call__(self, logits: torch.Tensor, group: list[torch.Tensor]) -> torch.Tensor:
        """The next code [B] from its logits [B, V], `group` holding the codes already chosen in this group."""
        if self.processors:
            seen = torch.cat([self.history, *[code[:, None] for code in group]], dim=1)
            logits = self.processors(seen, logits)
        return choose(logits, self.do_sample, self.generator)

    def commit(self, appended: torch.Tensor, kept: torch.Tensor) -> None:
        """Adds the group [B, 5] appended at this step to the history of the rows in `kept` [B]."""
        self.history = torch.cat([self.history, torch.where(kept[:, None], appended, self.sentinel)], dim=1)


class StaticSpeechSampler:
    """The same choice as [`ProcessorChooser`] with fixed shapes and tensor settings (see the module docstring).

    `seen` [B, V] marks the codes each row has appended so far. Unset settings take their neutral value (penalty 1,
    temperature 1, top-k = V, top-p 1, min-p 0), which changes no score.
    """

    def __init__(self, config: SpeechSamplingConfig, batch_size: int, vocab_size: int, device: torch.device):
        def setting(value, neutral, dtype=torch.float32) -> torch.Tensor:
            return torch.tensor(neutral if value is None else value, dtype=dtype, device=device)

        self.do_sample = config.do_sample
        self.penalty = setting(config.repetition_penalty, 1.0)
        self.temperature = setting(config.temperature if config.do_sample else None, 1.0)
        top_k = config.top_k if config.top_k else vocab_size
        self.top_k = setting(min(top_k, vocab_size), vocab_size, torch.long)
        self.top_p = setting(config.top_p, 1.0)
        self.min_p = setting(config.min_p, 0.0)
        self.seen = torch.zeros(batch_size, vocab_size, dtype=torch.bool, device=device)
        torch._dynamo.mark_static_address(self.seen)  # updated in place between compiled steps

    def __call__(self, logits: torch.Tensor, group: list[torch.Tensor]) -> torch.Tensor:
        seen = self.seen
        for code in group:
            seen = seen.scatter(1, code[:, None], True)
        scores = torch.where(seen, torch.where(logits < 0, logits * self.penalty, logits / self.penalty), logits)
        if not self.do_sample:
            return torch.argmax(scores, dim=-1)
        probs = nn.functional.softmax(self.warp(scores), dim=-1)
        return torch.argmax(probs / -torch.log(torch.rand_like(probs)), dim=-1)  # exponential race

    def warp(self, scores: torch.Tensor) -> torch.Tensor:
        """Temperature, top-k, top-p and min-p as transformers' warpers apply them (with `min_tokens_to_keep=1`)."""
        filtered = -float("inf")
        scores = scores / self.temperature
        descending = torch.sort(scores, dim=-1, descending=True).values
        kth = descending.gather(-1, (self.top_k - 1).expand(scores.shape[0], 1))
        scores = scores.masked_fill(scores < kth, filtered)
        ascending, order = torch.sort(scores, dim=-1)
        cumulative = ascending.softmax(dim=-1).cumsum(dim=-1)
        drop = (cumulative <= 1 - self.top_p) & (self.top_p < 1)
        drop[..., -1] = False
        scores = scores.masked_fill(drop.scatter(1, order, drop), filtered)
        probs = scores.softmax(dim=-1)
        drop = probs < self.min_p * probs.amax(dim=-1, keepdim=True)
        drop = drop.scatter(1, probs.argmax(dim=-1, keepdim=True), False)
        return scores.masked_fill(drop, filtered)

    def commit(self, appended: torch.Tensor, kept: torch.Tensor) -> None:
        self.seen |= torch.zeros_like(self.seen).scatter_(1, appended, kept[:, None].expand_as(appended))


class RowSpeechSampler(StaticSpeechSampler):
    """[`StaticSpeechSampler`] with settings of its own per row, for a batch whose rows come from different requests
    (the reply engine's compiled slots): every setting is a [B, 1] tensor, greedy and sampled rows share the step
    (`sampling` [B]), and the exponential race draws on `noise` [B, 5, V], which the caller fills before each step
    from each row's own random generator (so a seeded row samples the same whatever its neighbours).

    Rows are set with [`~RowSpeechSampler.set_row`] when a request takes them; all buffers keep their addresses.
    """

    def __init__(self, batch_size: int, vocab_size: int, group_size: int, device: torch.device):
        super().__init__(SpeechSamplingConfig(), batch_size, vocab_size, device)
        self.vocab_size = vocab_size

        def per_row(neutral, dtype=torch.float32) -> torch.Tensor:
            tensor = torch.full((batch_size, 1), neutral, dtype=dtype, device=device)
            torch._dynamo.mark_static_address(tensor)
            return tensor

        self.penalty, self.temperature, self.top_p, self.min_p = per_row(1.0), per_row(1.0), per_row(1.0), per_row(0.0)
        self.top_k = per_row(vocab_size, torch.long)
        self.sampling = per_row(False, torch.bool)[:, 0]
        self.noise = torch.ones(batch_size, group_size, vocab_size, device=device)
        torch._dynamo.mark_static_address(self.noise)

    def set_row(self, row: int, config: SpeechSamplingConfig, seen: torch.Tensor | None = None) -> None:
        """Row `row` samples with `config` from now on; `seen` [n] are the codes it has appended so far."""

        def value(setting, neutral):
            return neutral if setting is None else setting

        self.penalty[row] = value(config.repetition_penalty, 1.0)
        self.temperature[row] = value(config.temperature if config.do_sample else None, 1.0)
        self.top_k[row] = min(config.top_k or self.vocab_size, self.vocab_size)
        self.top_p[row] = value(config.top_p, 1.0)
        self.min_p[row] = value(config.min_p, 0.0)
        self.sampling[row] = config.do_sample
        self.seen[row] = False
        if seen is not None and seen.numel():
            self.seen[row, seen[seen < self.vocab_size]] = True

    def draw(self, row: int, generator: torch.Generator | None) -> None:
        """Fills the row's noise for the next step's group (Exp(1) draws from `generator`, default: torch's)."""
        self.noise[row].exponential_(generator=generator)

    def __call__(self, logits: torch.Tensor, group: list[torch.Tensor]) -> torch.Tensor:
        seen = self.seen
        for code in group:
            seen = seen.scatter(1, code[:, None], True)
        scores = torch.where(seen, torch.where(logits < 0, logits * self.penalty, logits / self.penalty), logits)
        probs = nn.functional.softmax(self.warp(scores), dim=-1)
        sampled = torch.argmax(probs / self.noise[:, len(group)], dim=-1)  # the exponential race on the row's noise
        return torch.where(self.sampling, sampled, torch.argmax(scores, dim=-1))


__all__ = ["ProcessorChooser", "RowSpeechSampler", "SpeechSamplingConfig", "StaticSpeechSampler", "choose"]
