"""One generation batch: the per-row decoding state, and the fan-out of each step to the rows' streams.

`BatchRun` receives what the generation streamer produces (per step: a text id for every row, a speech-code group for
every speaking row), hands each row its text deltas, feeds the rows' codes to their streaming decoders (decoded
together, `StreamVocoder`), notices when a row is over (end of turn, its own token limit, a cancel) and finishes it:
the rest of its audio, then `ReplyDone`. Rows end independently; a failing decoder fails only its rows.
"""

import logging
from dataclasses import dataclass, field

import torch
from transformers import StoppingCriteria

from ..streaming import FunAudioChatIteratorStreamer
from .replies import AudioDelta, Reply, ReplyDone, ReplyFailed, TextDelta
from .vocoding import StreamVocoder

logger = logging.getLogger("transformers_fac.serving")


@dataclass
class EngineStats:
    """Counters of an engine (read them for monitoring; the engine's thread writes them)."""

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
class BatchRow:
    """The decoding state of one request inside a batch."""

    reply: Reply
    index: int
    limit: int
    prompt_tokens: int
    prompt_audio_tokens: int
    spoken: bool
    ids: list[int] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    speech_codes: int = 0
    audio_samples: int = 0
    ending: str | None = None  # finish reason, once the row's last step is known
    done: bool = False


class RowStops(StoppingCriteria):
    """Per-row stop: the row's request was cancelled, or it reached its own `max_new_tokens` (a batch generates up to
    the largest one)."""

    def __init__(self, rows: list[BatchRow], prompt_width: int):
        self.rows = rows
        self.prompt_width = prompt_width

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor | None = None, **kwargs):
        made = input_ids.shape[1] - self.prompt_width
        flags = [row.reply.cancelled or made >= row.limit for row in self.rows]
        return torch.tensor(flags, dtype=torch.bool, device=input_ids.device)


class BatchRun:
    """The rows of one batch while it generates (see the module docstring).

    Args:
        rows: one `BatchRow` per request, in batch order.
        tokenizer: decodes the rows' raw text (`ReplyDone.raw_text`).
        vocoder: the rows' streaming decoders (None for written replies).
        stats: the engine's counters.
        eos_ids / pad_id: the ids that end a turn and that pad finished rows.
    """

    def __init__(
        self, rows: list[BatchRow], tokenizer, vocoder: StreamVocoder | None, stats: EngineStats, eos_ids: set, pad_id
    ):
        self.rows = rows
        self.tokenizer = tokenizer
        self.vocoder = vocoder
        self.stats = stats
        self.eos_ids = eos_ids
        self.pad_id = pad_id

    def fan_out(self, streamer: FunAudioChatIteratorStreamer) -> int:
        """Hands each step's text to its row and its speech codes to the vocoder; returns the number of steps."""
        rows, vocoder, steps = self.rows, self.vocoder, 0
        for chunk in streamer:
            if chunk.text_ids is not None:
                steps += 1
                self._settle()
                for row, token, delta in zip(rows, chunk.text_ids, chunk.text):
                    self._on_text(row, token, delta)
            elif chunk.text is not None:  # the held-back end of a multi-byte character, at the very end
                for row, delta in zip(rows, chunk.text):
                    if not row.done and delta:
                        row.text.append(delta)
                        row.reply.emit(TextDelta(delta))
            if chunk.speech_codes and vocoder is not None:
                for row, codes in zip(rows, chunk.speech_codes):
                    if codes and not row.done and not row.reply.cancelled:
                        row.speech_codes += vocoder.push(row.index, codes)
            if streamer.queue.empty() and vocoder is not None:
                self._vocode()
        return steps

    def finish(self) -> None:
        """Generation is over: every row still going ends (as cancelled, or at its length) and is finished."""
        for row in self.rows:
            if row.ending is None:
                row.ending = "cancelled" if row.reply.cancelled else "length"
        self._settle()

    def _on_text(self, row: BatchRow, token: int, delta: str) -> None:
        if row.done or row.ending is not None:
            return
        row.ids.append(token)
        if delta:
            row.text.append(delta)
            row.reply.emit(TextDelta(delta))
        if row.reply.cancelled:
            row.ending = "cancelled"
        elif token in self.eos_ids:
            row.ending = "stop"
        elif len(row.ids) >= row.limit:
            row.ending = "length"

    def _vocode(self) -> None:
        rows, vocoder = self.rows, self.vocoder
        try:
            audio = vocoder.step()
        except Exception:  # noqa: BLE001 - the decoder failed: the spoken rows fail, the server goes on
            logger.exception("The speech decoder failed")
            for row in rows:
                if not row.done:
                    self.fail_row(row, "The speech decoder failed while vocoding this reply.")
            return
        for row in rows:
            samples = audio.get(row.index)
            if samples is not None and not row.done and not row.reply.cancelled:
                row.audio_samples += samples.size
                row.reply.emit(AudioDelta(samples, vocoder.sampling_rate))

    def _settle(self) -> None:
        """Finishes the rows whose last step is behind them (its speech group has arrived by now); the rest of their
        audio is decoded together."""
        rows, vocoder = self.rows, self.vocoder
        ending = [row for row in rows if not row.done and row.ending is not None]
        for row in ending:
            if row.reply.cancelled or row.ending == "cancelled":
                row.ending = "cancelled"
                if vocoder is not None:
                    vocoder.drop(row.index)
                self.stats.cancelled += 1
        finishing = [row for row in ending if row.ending != "cancelled"]
        if vocoder is not None and finishing:
            try:
                tails = vocoder.finish([row.index for row in finishing])
            except Exception:  # noqa: BLE001 - these rows fail, the others go on
                logger.exception("The speech decoder failed")
                for row in finishing:
                    self.fail_row(row, "The speech decoder failed while vocoding this reply.")
                tails = {}
            for row in finishing:
                if row.done:
                    continue
                if tails[row.index].size:
                    row.audio_samples += tails[row.index].size
                    row.reply.emit(AudioDelta(tails[row.index], vocoder.sampling_rate))
        for row in ending:
            if row.done:  # failed above
                continue
            if row.ending != "cancelled":
                self.stats.completed += 1
            row.done = True
            row.reply.emit(
                ReplyDone(
                    text="".join(row.text),
                    raw_text=self._raw_text(row.ids),
                    finish_reason=row.ending,
                    prompt_tokens=row.prompt_tokens,
                    prompt_audio_tokens=row.prompt_audio_tokens,
                    completion_tokens=len(row.ids),
                    speech_codes=row.speech_codes,
                    audio_samples=row.audio_samples,
                )
            )

    def _raw_text(self, ids: list[int]) -> str:
        kept = [token for token in ids if token not in self.eos_ids and token != self.pad_id]
        return self.tokenizer.decode(kept, skip_special_tokens=False)

    def fail_row(self, row: BatchRow, message: str) -> None:
        """This row fails (the others go on); its batch row stops at the next step."""
        row.done = True
        row.reply.cancel()
        self.stats.failed += 1
        row.reply.emit(ReplyFailed(message))


__all__ = ["BatchRow", "BatchRun", "EngineStats", "RowStops"]
