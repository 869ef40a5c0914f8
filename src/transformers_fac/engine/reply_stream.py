"""One reply that streams, for a script or a single user: `stream_reply` runs it on a private reply engine (a batch of
one) and returns a [`ReplyStream`] of the engine's own events, `TextDelta` and `AudioDelta` (each has `text` and
`audio`, one of them empty).

The stream owns its engine and the engine's thread (named `fac-generate`): closing the stream cancels the reply at the
next decoding step and joins the thread.
"""

import threading
from collections.abc import Iterator
from typing import Any

from ..deprecation import renamed_argument
from ..prompts import check_reply_mode
from ..streaming import close_at_exit
from .engine import ReplyEngine
from .replies import AudioDelta, Reply, ReplyDone, ReplyFailed, ReplyRequest, TextDelta


class ReplyStream(Iterator[TextDelta | AudioDelta]):
    """A reply being generated (what [`stream_reply`] returns): iterate it for its `TextDelta` / `AudioDelta` events;
    `done` holds the final `ReplyDone` once the iteration has ended (a failure raises `RuntimeError`).

    Stopping early is always safe and immediate: `close()`, leaving a `with` block, dropping the stream (garbage
    collection) or an exception/KeyboardInterrupt that ends the `with` block stop generating at the next decoding
    step, drop the audio not yet yielded and join the engine's thread; the model is then ready for the next call.
    `cancel()` does the same without waiting, from any thread (e.g. a stop button or a barge-in while another thread
    iterates): the iteration then ends at its next event.

    Example:

    ```python
    >>> with stream_reply(model, processor, inputs) as reply:
    ...     for event in reply:
    ...         if event.audio is not None and user_started_talking():
    ...             break  # generation stops within one decoding step
    ```
    """

    def __init__(self, engine: ReplyEngine, reply: Reply, timeout: float | None = None):
        self._engine, self.reply, self._timeout = engine, reply, timeout
        self.done: ReplyDone | None = None
        self._ended = False
        close_at_exit(self)

    def __iter__(self) -> "ReplyStream":
        return self

    def __next__(self) -> TextDelta | AudioDelta:
        if self._ended:
            raise StopIteration
        try:
            event = self.reply.next_blocking(self._timeout)
        except BaseException:  # a KeyboardInterrupt or a timeout while waiting: never leave the engine running
            self.close()
            raise
        if isinstance(event, ReplyFailed):
            self.close()
            raise RuntimeError(event.message)
        if isinstance(event, ReplyDone) or self.reply.cancelled:  # what is still queued was never heard: dropped
            self.done = event if isinstance(event, ReplyDone) else None
            self.close()
            raise StopIteration
        return event

    @property
    def cancelled(self) -> bool:
        return self.reply.cancelled

    @property
    def ended_at(self) -> float | None:
        """`time.perf_counter()` when the reply's last event was produced (None while it runs)."""
        return self.reply.ended_at

    def cancel(self) -> None:
        """Stops generating at the next decoding step and ends the iteration at its next event (returns at once)."""
        self.reply.cancel()

    def stop(self) -> None:
        """Stops generating at the next decoding step; the audio of what was said still comes (returns at once)."""
        self.reply.stop()

    def close(self) -> None:
        """Cancels (if still generating) and joins the engine's thread. Safe to call more than once, from any thread
        (from the engine's own thread it only cancels)."""
        self._ended = True
        if not self.reply.finished:
            self.reply.cancel()
        self._engine.close()

    def __enter__(self) -> "ReplyStream":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_engine", None) is not None and getattr(self, "reply", None) is not None:
            self.close()


def stream_reply(
    model,
    tokenizer,
    inputs: dict,
    voice: Any = None,
    exact: bool = False,
    interrupt: threading.Event | None = None,
    timeout: float | None = None,
    generation_mode: str = "audio",
    **generate_kwargs,
) -> ReplyStream:
    """Starts generating a reply to `inputs` (processor outputs, batch of 1); iterate the result for its events.

    Args:
        model: a [`FunAudioChatForConditionalGeneration`] with a token-to-waveform decoder attached (spoken replies).
        tokenizer: the processor (or a processor-like object with `tokenizer` and `audio_token`).
        voice: the voice of a spoken reply (a stock voice name, a [192] speaker embedding, a `FunAudioChatVoice` or a
            saved voice's path; see `generate`; `speaker=` is its deprecated name until 0.2).
        exact: stream with the official web-demo schedule (whole-history recomputation) instead of bounded cost.
        interrupt: set it to stop generating but still receive the audio of what was said (a graceful stop; closing
            the stream instead drops it).
        timeout: the longest wait for the next event, in seconds (`TimeoutError` beyond).
        generation_mode: `"audio"` (default) or `"text"`: a written reply only (text events; no decoder needed).
        generate_kwargs: more `generate` arguments (`max_new_tokens`, sampling, `stopping_criteria`, ...).

    Returns:
        A [`ReplyStream`]: iterate it; close it (or use `with`) to stop early.

    Example:

    ```python
    >>> import soundfile as sf
    >>> with sf.SoundFile("reply.wav", "w", samplerate=24000, channels=1) as wav:
    ...     for event in stream_reply(model, processor, inputs, max_new_tokens=300):
    ...         print(event.text, end="") if event.text else wav.write(event.audio)
    ```
    """
    if inputs["input_ids"].shape[0] != 1:
        raise ValueError("stream_reply streams one conversation at a time (batch size 1).")
    voice = renamed_argument(generate_kwargs, "speaker", "voice", voice, "stream_reply")
    check_reply_mode(generation_mode, voice, "generation_mode")
    spoken = generation_mode == "audio"
    if spoken and model.token2wav is None:
        raise ValueError("Streaming audio needs the CosyVoice3 decoder: from_pretrained(..., token2wav=...).")
    max_new_tokens = generate_kwargs.pop("max_new_tokens", None) or model.generation_config.max_new_tokens or 600
    request = ReplyRequest(
        inputs={key: value.cpu() for key, value in inputs.items()},
        spoken=spoken,
        voice=voice,
        max_new_tokens=max_new_tokens,
        exact=exact,
        generate_kwargs=generate_kwargs,
    )
    engine = ReplyEngine(model, tokenizer, max_batch_size=1, thread_name="fac-generate")
    reply = engine.submit(request, stop_event=interrupt)
    engine.start()
    return ReplyStream(engine, reply, timeout)


__all__ = ["ReplyStream", "stream_reply"]
