"""What the reply engine takes and gives: a reply request, the events of its reply, and the handle a caller holds.

The engine's thread emits events into the handle; the caller reads them with `for event in reply` (threads) or
`async for event in reply` (asyncio; the handle is then bound to the caller's event loop). `cancel()` frees the
request's batch row at the next decoding step; `stop()` ends the reply there too but still delivers the audio of what
was said.

The events are the package's one kind of reply event, whatever the path (server, Space, live mode, `stream_reply`):
`TextDelta` and `AudioDelta` (each has `text` and `audio`, one of them empty, so a consumer may read either), then
`ReplyDone` (with its finish reason) or `ReplyFailed`.
"""

import asyncio
import dataclasses
import itertools
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

_ids = itertools.count()


@dataclass
class ReplyRequest:
    """One reply to generate.

    Args:
        prompt: the rendered chat prompt (audio slots as `<|audio_bos|><|AUDIO|><|audio_eos|>`).
        audios: one 16 kHz mono float32 waveform per audio slot of `prompt`, in order.
        spoken: answer with text and speech (`generation_mode="audio"`) or text only.
        voice: the voice (anything the decoder's `voice` accepts).
        max_new_tokens: the longest reply in LLM steps.
        temperature / top_p: sampling; `temperature=0` is greedy; None keeps the checkpoint's settings.
        seed: makes a sampled reply reproducible: it draws from a random generator of its own, so its neighbours
            in the batch change nothing.
        inputs: the processor outputs of this prompt alone, when the caller has them already (then `prompt` and
            `audios` are not processed again).
        exact: stream the audio with the official web-demo schedule (whole-history recomputation; decoded alone)
            instead of bounded cost per chunk.
        generate_kwargs: more `generate` settings of this reply (`top_k`, `repetition_penalty`,
            `stopping_criteria`, ...), applied to this row only.
    """

    prompt: str = ""
    audios: list[np.ndarray] = field(default_factory=list)
    spoken: bool = True
    voice: Any = None
    max_new_tokens: int = 60
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    inputs: Any = None
    exact: bool = False
    generate_kwargs: dict = field(default_factory=dict)


@dataclass
class TextDelta:
    """New reply text (special tokens removed)."""

    text: str
    audio: ClassVar[None] = None


@dataclass
class AudioDelta:
    """New reply audio: float32 samples at `sampling_rate` (24 kHz)."""

    audio: np.ndarray
    sampling_rate: int
    text: ClassVar[str] = ""


@dataclass
class ReplyDone:
    """The reply is complete.

    Args:
        text: the whole reply text (special tokens removed).
        raw_text: the reply with its special tokens (e.g. `<tool_call>` tags), end-of-turn tokens removed.
        finish_reason: `"stop"` (the model ended its turn), `"length"` (`max_new_tokens` reached) or `"cancelled"`.
        prompt_tokens / prompt_audio_tokens: prompt length, and how many of its tokens are audio slots.
        completion_tokens: LLM steps of the reply (one text token each).
        speech_codes: 25 Hz speech codes of the reply (five per LLM step while speaking).
        audio_samples: samples of reply audio emitted.
        token_ids: the reply's text ids (as `generate` returns them after the prompt).
        speech_ids: the reply's speech groups, 5 codes per speaking step (BOS / EOS groups included), as `generate`'s
            `speech_ids` of this request alone.
    """

    text: str
    raw_text: str
    finish_reason: str
    prompt_tokens: int
    prompt_audio_tokens: int
    completion_tokens: int
    speech_codes: int = 0
    audio_samples: int = 0
    token_ids: list[int] = field(default_factory=list)
    speech_ids: list[int] = field(default_factory=list)

    def with_audio(self, audio_samples: int) -> "ReplyDone":
        """This event with the number of audio samples emitted."""
        return dataclasses.replace(self, audio_samples=audio_samples)


@dataclass
class ReplyFailed:
    """The reply failed; `message` says why (nothing of the request's input is in it)."""

    message: str


ReplyEvent = TextDelta | AudioDelta | ReplyDone | ReplyFailed
FINAL_EVENTS = (ReplyDone, ReplyFailed)


class Reply:
    """The handle of a submitted request: its events, `cancel()` and `stop()`.

    Example:

    ```python
    >>> reply = engine.submit(ReplyRequest(prompt, [waveform]))
    >>> for event in reply:
    ...     if isinstance(event, AudioDelta):
    ...         player.write(event.audio)
    ```
    """

    def __init__(
        self,
        request: ReplyRequest,
        loop: asyncio.AbstractEventLoop | None = None,
        stop_event: threading.Event | None = None,
    ):
        self.request = request
        self.id = next(_ids)
        self.arrived = time.monotonic()
        self.inputs: Any = None  # the processor outputs of this request alone (set by the engine)
        # Engine steps (`stats.batches` numbering): the first step this reply ran in, and the first without it.
        self.joined_step: int | None = None
        self.left_step: int | None = None
        self.ended_at: float | None = None  # `time.perf_counter()` when the final event was emitted
        self._cancelled = threading.Event()
        self._stopped = stop_event if stop_event is not None else threading.Event()
        self._loop = loop
        self._events: asyncio.Queue | queue.Queue = asyncio.Queue() if loop is not None else queue.Queue()
        self._closed = False

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    @property
    def finished(self) -> bool:
        """Whether the final event (done or failed) has been emitted."""
        return self._closed

    @property
    def stopped(self) -> bool:
        return self._stopped.is_set()

    def cancel(self) -> None:
        """Stops generating this reply at the next step (its batch row is freed); no more events arrive but the
        final `ReplyDone` (finish reason `"cancelled"`). Thread-safe."""
        self._cancelled.set()

    def stop(self) -> None:
        """Ends this reply at the next step like `cancel()`, but delivers the rest of the audio of what was said
        before `ReplyDone` (finish reason `"stop"`): a graceful stop. Thread-safe."""
        self._stopped.set()

    def emit(self, event: ReplyEvent) -> None:
        """Called by the engine's thread."""
        if self._closed:
            return
        self._closed = isinstance(event, FINAL_EVENTS)
        if self._closed:
            self.ended_at = time.perf_counter()
        if self._loop is None:
            self._events.put(event)
            return
        try:
            self._loop.call_soon_threadsafe(self._events.put_nowait, event)
        except RuntimeError:  # the caller's event loop is gone: nobody is listening any more
            self.cancel()

    def __iter__(self):
        if self._loop is not None:
            raise TypeError("This reply belongs to an event loop: use `async for event in reply`.")
        while True:
            event = self._events.get()
            yield event
            if isinstance(event, FINAL_EVENTS):
                return

    async def __aiter__(self):
        if self._loop is None:
            raise TypeError("This reply was submitted without an event loop: use `for event in reply`.")
        while True:
            event = await self._events.get()
            yield event
            if isinstance(event, FINAL_EVENTS):
                return

    def ready_events(self) -> list[ReplyEvent]:
        """The events emitted and not taken yet, without waiting (threads): a reader slower than the engine takes
        what piled up at once (see [`merge_deltas`])."""
        if self._loop is not None:
            raise TypeError("This reply belongs to an event loop: use `await reply.next_event()`.")
        events = []
        while not (events and isinstance(events[-1], FINAL_EVENTS)):
            try:
                events.append(self._events.get_nowait())
            except queue.Empty:
                break
        return events

    def next_blocking(self, timeout: float | None = None) -> ReplyEvent:
        """The next event (threads), or `TimeoutError` after `timeout` seconds."""
        if self._loop is not None:
            raise TypeError("This reply belongs to an event loop: use `await reply.next_event()`.")
        try:
            return self._events.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"No reply event within {timeout} s.") from None

    async def next_event(self, timeout: float | None = None) -> ReplyEvent:
        """The next event (asyncio), or `TimeoutError` after `timeout` seconds."""
        return await asyncio.wait_for(self._events.get(), timeout)


def merge_deltas(events: list[ReplyEvent]) -> list[ReplyEvent]:
    """Events taken together as fewer: all the text in one `TextDelta`, then all the audio in one `AudioDelta`
    (samples in order), then the final event if there is one. For a reader that pays per event (a web page's update,
    a network message) and fell behind the engine.

    Example:

    ```python
    >>> for event in merge_deltas([reply.next_blocking(), *reply.ready_events()]):
    ...     show(event)
    ```
    """
    text = "".join(event.text for event in events if isinstance(event, TextDelta))
    audio = [event for event in events if isinstance(event, AudioDelta)]
    merged: list[ReplyEvent] = [TextDelta(text)] if text else []
    if audio:
        merged.append(AudioDelta(np.concatenate([event.audio for event in audio]), audio[0].sampling_rate))
    return merged + [event for event in events if isinstance(event, FINAL_EVENTS)]


__all__ = [
    "AudioDelta",
    "FINAL_EVENTS",
    "Reply",
    "ReplyDone",
    "ReplyEvent",
    "ReplyFailed",
    "ReplyRequest",
    "TextDelta",
    "merge_deltas",
]
