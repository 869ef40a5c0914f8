"""Generating benchmark replies in batches through the package's reply engine.

This is the evaluation's only contact with the reply engine (`transformers_fac.engine.ReplyEngine`: `submit(ReplyRequest)
-> Reply`, whose events are `TextDelta`, `AudioDelta`, then `ReplyDone` or `ReplyFailed`): the jobs of a batch are
submitted together and decoded per step, a short reply's row going to the next job at once.

Example:

```python
>>> with ReplyGenerator(model, processor, batch_size=8, max_new_tokens=256) as generator:
...     replies = generator.generate([ReplyJob(prompt, waveform_16k, spoken=True)])
>>> replies[0].text, replies[0].sampling_rate
```
"""

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class ReplyJob:
    """One prompt to answer: the rendered chat prompt, the 16 kHz audio of its one audio slot, and the reply mode."""

    prompt: str
    audio: np.ndarray
    spoken: bool


@dataclass
class GeneratedReply:
    """A finished reply: its text (special tokens removed), the raw text (with `<tool_call>` tags), why it ended,
    the 24 kHz audio of a spoken reply, or the error that stopped it."""

    text: str = ""
    raw_text: str = ""
    finish_reason: str = ""
    audio: np.ndarray | None = None
    sampling_rate: int | None = None
    error: str | None = None


class ReplyGenerator:
    """Owns a reply engine for the duration of a `with` block and generates jobs in batches of `batch_size`.

    Args:
        model / processor: the loaded model (with its decoder for spoken replies) and processor.
        batch_size: replies generated together.
        max_new_tokens: the longest reply (LLM steps).
        voice: the voice of spoken replies (a stock name, a saved voice, ...; None: the decoder's default).
        temperature: None keeps the checkpoint's sampling; 0 is greedy.
    """

    def __init__(
        self,
        model: Any,
        processor: Any,
        batch_size: int = 8,
        max_new_tokens: int = 512,
        voice: Any = None,
        temperature: float | None = None,
    ):
        from ..engine import ReplyEngine

        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.voice = voice
        self.temperature = temperature
        self.engine = ReplyEngine(model, processor, max_batch_size=batch_size, max_queue=max(64, 2 * batch_size))

    def __enter__(self) -> "ReplyGenerator":
        self.engine.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        """Cancels what is still running and stops the engine's thread."""
        self.engine.close(timeout=5)

    def generate(self, jobs: list[ReplyJob]) -> list[GeneratedReply]:
        """The replies of `jobs` in order; a job the engine refuses or fails gets a reply with `error` set."""
        from ..engine import ReplyRequest, RequestError

        handles: list[Any] = []
        for job in jobs:
            request = ReplyRequest(
                prompt=job.prompt,
                audios=[job.audio],
                spoken=job.spoken,
                voice=self.voice if job.spoken else None,
                max_new_tokens=self.max_new_tokens,
                temperature=self.temperature,
            )
            try:
                handles.append(self.engine.submit(request))
            except RequestError as error:
                handles.append(GeneratedReply(error=str(error)))
        try:
            return [self._collect(handle) for handle in handles]
        except BaseException:  # interrupted: free every row of the batch now
            for handle in handles:
                if not isinstance(handle, GeneratedReply):
                    handle.cancel()
            raise

    @staticmethod
    def _collect(handle: Any) -> GeneratedReply:
        from ..engine import AudioDelta, ReplyDone, ReplyFailed

        if isinstance(handle, GeneratedReply):
            return handle
        chunks, reply = [], GeneratedReply()
        for event in handle:
            if isinstance(event, AudioDelta):
                chunks.append(np.asarray(event.audio, dtype=np.float32).reshape(-1))
                reply.sampling_rate = event.sampling_rate
            elif isinstance(event, ReplyDone):
                reply.text, reply.raw_text, reply.finish_reason = event.text, event.raw_text, event.finish_reason
            elif isinstance(event, ReplyFailed):
                reply.error = event.message
        if chunks:
            reply.audio = np.concatenate(chunks)
        return reply


__all__ = ["GeneratedReply", "ReplyGenerator", "ReplyJob"]
