"""Streamers for Fun-Audio-Chat generation: text ids and 25 Hz speech-code groups, step by step.

`generate` calls `put(prompt_ids)` once, then per step `put(text_ids [B])` and, in audio mode,
`put_speech(codes [B, 5], speaking [B])` for the rows that spoke at that step, and finally `end()`.
Any transformers streamer (e.g. `TextStreamer`) also works: it simply never sees the speech.
"""

import atexit
import threading
import time
import weakref
from dataclasses import dataclass
from queue import Queue
from typing import Any

import torch
from transformers import StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer


class FunAudioChatStreamer(BaseStreamer):
    """Base class: splits `put` into `on_prompt` and `on_text`, and receives speech groups in `on_speech`.

    Subclass it and override the three hooks (all receive CPU tensors) and `end`.
    """

    def __init__(self):
        self._prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self._prompt_seen:
            self._prompt_seen = True
            self.on_prompt(value)
        else:
            self.on_text(value.reshape(-1))

    def put_speech(self, codes: torch.Tensor, speaking: torch.Tensor) -> None:
        self.on_speech(codes, speaking)

    def on_prompt(self, prompt_ids: torch.Tensor) -> None:
        """The prompt ids [B, S], once, before the first step."""

    def on_text(self, text_ids: torch.Tensor) -> None:
        """One new text id per row [B]."""

    def on_speech(self, codes: torch.Tensor, speaking: torch.Tensor) -> None:
        """One new group of 5 speech codes per row [B, 5]; `speaking` [B] marks the rows whose group is real."""

    def end(self) -> None:
        """Generation finished."""


@dataclass
class StreamChunk:
    """One item of [`FunAudioChatIteratorStreamer`]: a text step or a speech-code step.

    Args:
        text: per row, the newly decoded text (may be empty while a multi-byte character is incomplete), or None.
        text_ids: per row, the new text id (text steps), or None.
        speech_codes: per row, the 5 new codes (empty list for rows not speaking), or None.
    """

    text: list[str] | None = None
    text_ids: list[int] | None = None
    speech_codes: list[list[int]] | None = None


class TextDeltas:
    """The printable text a row adds at each step (decoding its ids so far; an incomplete multi-byte character is
    held back until it completes or the reply ends).

    Example:
        >>> deltas = TextDeltas(processor.tokenizer)  # doctest: +SKIP
        >>> deltas.add(token_id), deltas.rest()  # doctest: +SKIP
    """

    def __init__(self, tokenizer, skip_special_tokens: bool = True):
        self.tokenizer, self.skip_special_tokens = tokenizer, skip_special_tokens
        self.ids: list[int] = []
        self.printed = 0

    def add(self, token: int | None) -> str:
        """The new text once `token` (None: nothing) is added."""
        if token is not None:
            self.ids.append(token)
        return self._delta(final=False)

    def rest(self) -> str:
        """What is still held back, at the end of the reply."""
        return self._delta(final=True)

    def _delta(self, final: bool) -> str:
        text = self.tokenizer.decode(self.ids, skip_special_tokens=self.skip_special_tokens)
        if text.endswith("\ufffd") and not final:
            return ""
        delta = text[self.printed :]
        self.printed = len(text)
        return delta


class FunAudioChatIteratorStreamer(FunAudioChatStreamer):
    """Iterate over text deltas and speech-code groups while `generate` runs in another thread.

    Example:

    ```python
    >>> from threading import Thread
    >>> streamer = FunAudioChatIteratorStreamer(processor.tokenizer)
    >>> Thread(target=model.generate, kwargs={**inputs, "generation_mode": "audio", "streamer": streamer}).start()
    >>> for chunk in streamer:
    ...     if chunk.text: print(chunk.text[0], end="")
    ...     if chunk.speech_codes: token2wav_stream.push(chunk.speech_codes[0])
    ```
    """

    def __init__(self, tokenizer, skip_special_tokens: bool = True, timeout: float | None = None):
        super().__init__()
        self.tokenizer = tokenizer
        self.skip_special_tokens = skip_special_tokens
        self.timeout = timeout
        self.queue: Queue = Queue()
        self._stop = object()
        self._rows: list[TextDeltas] = []

    def on_prompt(self, prompt_ids: torch.Tensor) -> None:
        self._rows = [TextDeltas(self.tokenizer, self.skip_special_tokens) for _ in range(prompt_ids.shape[0])]

    def on_text(self, text_ids: torch.Tensor) -> None:
        ids = text_ids.tolist()
        deltas = [row.add(token) for row, token in zip(self._rows, ids)]
        self.queue.put(StreamChunk(text=deltas, text_ids=ids), timeout=self.timeout)

    def on_speech(self, codes: torch.Tensor, speaking: torch.Tensor) -> None:
        groups = [row.tolist() if flag else [] for row, flag in zip(codes, speaking.tolist())]
        self.queue.put(StreamChunk(speech_codes=groups), timeout=self.timeout)

    def end(self) -> None:
        rest = [row.rest() for row in self._rows]
        if any(rest):
            self.queue.put(StreamChunk(text=rest), timeout=self.timeout)
        self.queue.put(self._stop, timeout=self.timeout)

    def __iter__(self):
        return self

    def __next__(self) -> StreamChunk:
        item = self.queue.get(timeout=self.timeout)
        if item is self._stop:
            raise StopIteration
        return item


class CancelCriteria(StoppingCriteria):
    """Stops rows once they are cancelled: every row after `cancel()`, one row after `cancel(row)`.

    `generate` checks it at every decoding step, so a cancelled row stops at the next step. Thread-safe: call `cancel`
    from any thread. `event` may be shared with other code (e.g. a stop button's switch).

    Example:

    ```python
    >>> criteria = CancelCriteria()
    >>> Thread(target=model.generate, kwargs={**inputs, "stopping_criteria": [criteria], "streamer": streamer}).start()
    >>> criteria.cancel()  # the generation ends after the step in progress
    ```
    """

    def __init__(self, event: threading.Event | None = None):
        self.event = event if event is not None else threading.Event()
        self._rows: set[int] = set()

    def cancel(self, row: int | None = None) -> None:
        """Cancels one batch row, or every row when `row` is None."""
        if row is None:
            self.event.set()
        else:
            self._rows.add(row)

    @property
    def cancelled(self) -> bool:
        """Whether every row is cancelled."""
        return self.event.is_set()

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor | None = None, **kwargs) -> torch.Tensor:
        stop = torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool)
        for row in list(self._rows):
            if row < stop.shape[0]:
                stop[row] = True
        return stop.to(input_ids.device)


_RUNNING: "weakref.WeakSet" = weakref.WeakSet()
"""Owners of worker threads that may still run (`close()` stops and joins them); closed at interpreter exit."""


def join_through_interrupts(thread: threading.Thread, timeout: float | None = None) -> None:
    """`thread.join(timeout)` that a Ctrl-C (or any signal handler that raises) cannot cut short.

    A second Ctrl-C while a stopped reply's worker finishes its decoding step would otherwise abandon the join, and a
    worker still inside the model when the interpreter shuts down aborts the process. The interrupt is re-raised once
    the thread has ended (or the timeout has passed).
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    interrupted: BaseException | None = None
    while thread.is_alive():
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            break
        try:
            thread.join(remaining)
        except KeyboardInterrupt as error:
            interrupted = error
    if interrupted is not None:
        raise interrupted


def close_at_exit(owner) -> None:
    """Registers an object whose `close()` stops and joins its worker thread, to be closed at interpreter exit if its
    user never closed it (a thread left running into interpreter shutdown aborts the process). Weakly referenced."""
    _RUNNING.add(owner)


class BackgroundGeneration:
    """Runs `model.generate(streamer=streamer, **generate_kwargs)` in a worker thread (named `fac-generate`) while the
    caller iterates the streamer, and owns that thread.

    `cancel()` stops generating at the next decoding step (a [`CancelCriteria`] is added to the stopping criteria);
    `close()` cancels and joins the worker; leaving a `with` block closes. An error in `generate` ends the stream and
    is re-raised by `result()` in the caller's thread. A generation still running when the interpreter exits is
    cancelled and joined then (never left to run into interpreter shutdown). The model keeps no state of a cancelled
    call: the next `generate` runs as on a fresh model.

    Example:

    ```python
    >>> streamer = FunAudioChatIteratorStreamer(processor.tokenizer)
    >>> with BackgroundGeneration(model, streamer, **inputs, generation_mode="audio") as generation:
    ...     for chunk in streamer:
    ...         print(*chunk.text or "", end="")
    ...         if user_pressed_stop():
    ...             break  # leaving the block cancels and joins the worker
    ...     else:
    ...         output = generation.result()
    ```
    """

    def __init__(self, model, streamer: BaseStreamer, stopping_criteria=None, **generate_kwargs):
        self.cancel_criteria = CancelCriteria()
        criteria = StoppingCriteriaList([*(stopping_criteria or []), self.cancel_criteria])
        self._output: Any = None
        self._error: BaseException | None = None
        self.ended_at: float | None = None  # `time.perf_counter()` when `generate` returned or failed
        self._thread = threading.Thread(
            target=self._run,
            args=(model, streamer, {**generate_kwargs, "stopping_criteria": criteria}),
            daemon=True,  # never blocks interpreter exit; `_stop_all_at_exit` cancels and joins it instead
            name="fac-generate",
        )
        close_at_exit(self)
        self._thread.start()

    def _run(self, model, streamer: BaseStreamer, generate_kwargs: dict) -> None:
        try:
            self._output = model.generate(**generate_kwargs, streamer=streamer)
        except BaseException as error:  # noqa: BLE001 - re-raised in the caller's thread by `result`
            self._error = error
            streamer.end()
        finally:
            self.ended_at = time.perf_counter()

    def cancel(self) -> None:
        """Stops generating at the next decoding step (returns at once; thread-safe). `result()` is then partial."""
        self.cancel_criteria.cancel()

    @property
    def cancelled(self) -> bool:
        return self.cancel_criteria.cancelled

    @property
    def running(self) -> bool:
        """Whether the worker thread is still alive."""
        return self._thread.is_alive()

    def close(self, timeout: float | None = None) -> None:
        """Cancels (if still running) and waits for the worker to end. Safe to call more than once, from any thread
        (from the worker itself, e.g. a garbage collection that runs there, it only cancels)."""
        if self._thread.is_alive():
            self.cancel()
            if threading.current_thread() is not self._thread:
                join_through_interrupts(self._thread, timeout)

    def result(self) -> Any:
        """Waits for `generate` to return and gives its output (or raises its error). A Ctrl-C here propagates (then
        leaving the `with` block cancels and joins the worker)."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._output

    def __enter__(self) -> "BackgroundGeneration":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


@atexit.register
def _stop_all_at_exit() -> None:
    """A stream abandoned without being closed (e.g. an uncaught error at module level keeps it referenced) would
    otherwise keep generating while the interpreter shuts down, which aborts the process."""
    for owner in list(_RUNNING):
        try:
            owner.close()
        except KeyboardInterrupt:  # a Ctrl-C during the join: the join went on to the end (join_through_interrupts)
            pass


__all__ = [
    "BackgroundGeneration",
    "CancelCriteria",
    "FunAudioChatIteratorStreamer",
    "FunAudioChatStreamer",
    "StreamChunk",
    "TextDeltas",
    "close_at_exit",
    "join_through_interrupts",
]
