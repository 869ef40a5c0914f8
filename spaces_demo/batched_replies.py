"""Replies through the server's batching engine: users who ask at the same time share one generate batch.

Without it the Space answers one user at a time (its `concurrency` is 1), so every user's reply, and a user's
barge-in, waits behind everyone else's replies. With it, `Engine.speak` hands each turn to one shared
`BatchingEngine` (the one `fac-serve` uses), which generates the turns that arrive together as one batch and streams
each back on its own; stopping a reply (stop button, barge-in, closed page) frees its batch row at the next step.
Not used on ZeroGPU, where each reply runs in a GPU worker process of its own.
"""

from collections.abc import Iterator

from transformers_fac.audio_streaming import ReplyChunk
from transformers_fac.serving import AudioDelta, BatchingEngine, ReplyFailed, ReplyRequest, TextDelta


class BatchedReplies:
    """The Space's shared batching engine; `speak` has the signature of `Engine.speak`.

    Example:

    ```python
    >>> replies = BatchedReplies(model, processor, max_batch_size=8)
    >>> for chunk in replies.speak(inputs, spoken=True, voice="中文女", max_new_tokens=600):
    ...     print(chunk.text or len(chunk.audio))
    >>> replies.close()
    ```
    """

    def __init__(self, model, processor, max_batch_size: int, max_wait_ms: float = 50.0):
        self.engine = BatchingEngine(model, processor, max_batch_size=max_batch_size, max_wait_ms=max_wait_ms)
        self.engine.start()

    def speak(self, inputs, spoken: bool, voice: str | None, max_new_tokens: int) -> Iterator[ReplyChunk]:
        """Streams one reply to processor outputs (CPU tensors, batch of 1); closing the generator stops it."""
        request = ReplyRequest(inputs=inputs, spoken=spoken, speaker=voice, max_new_tokens=max_new_tokens)
        reply = self.engine.submit(request)
        try:
            for event in reply:
                if isinstance(event, TextDelta):
                    yield ReplyChunk(text=event.text)
                elif isinstance(event, AudioDelta):
                    yield ReplyChunk(audio=event.samples, sampling_rate=event.sampling_rate)
                elif isinstance(event, ReplyFailed):
                    raise RuntimeError(event.message)
        finally:
            reply.cancel()  # a stopped reply frees its batch row (no effect once it is done)

    def write(self, inputs, max_new_tokens: int) -> str:
        """A whole text reply with its special tokens (tool-call tags), end-of-turn tokens removed."""
        reply = self.engine.submit(ReplyRequest(inputs=inputs, spoken=False, max_new_tokens=max_new_tokens))
        for event in reply:
            if isinstance(event, ReplyFailed):
                raise RuntimeError(event.message)
        return event.raw_text.strip()

    def close(self, timeout: float | None = 30.0) -> None:
        """Lets the replies in progress finish (at most `timeout` s) and stops the engine's thread."""
        self.engine.close(timeout)
