"""The batching engine: requests that arrive together are generated as one batch, each row streaming on its own.

One scheduler thread owns the model. It takes the oldest waiting request, lets compatible requests (same reply mode
and sampling settings) join it for up to `max_wait_ms` or until `max_batch_size` rows, and generates them as one
left-padded batch (rows end independently). Text deltas and speech-code groups are fanned out per row; the codes of
all spoken rows are vocoded together (`StreamVocoder`). A cancelled request stops its row at the next step (a per-row
stopping criterion); a request that fails fails alone; a full queue is refused with a retry delay.

Example:

```python
>>> engine = BatchingEngine(model, processor, max_batch_size=8)
>>> engine.start()
>>> reply = engine.submit(ReplyRequest(prompt, [waveform], speaker="中文女"))
>>> for event in reply:
...     print(event)
>>> engine.close()
```
"""

import logging
import math
import threading
import time
from collections import deque
from typing import Any

import torch
from transformers import StoppingCriteriaList

from ..streaming import BackgroundGeneration, FunAudioChatIteratorStreamer
from .batch_run import BatchRow, BatchRun, EngineStats, RowStops
from .collate import collate
from .replies import Reply, ReplyDone, ReplyFailed, ReplyRequest
from .vocoding import StreamVocoder

logger = logging.getLogger("transformers_fac.serving")


class RequestError(ValueError):
    """A request the model cannot take (bad audio, too long a prompt, unknown voice, ...); `code` names the kind."""

    def __init__(self, message: str, code: str | None = None):
        super().__init__(message)
        self.code = code


class QueueFull(RuntimeError):
    """The engine's queue is full; retry after `retry_after` seconds."""

    def __init__(self, retry_after: int):
        super().__init__(f"The request queue is full; retry in about {retry_after} s.")
        self.retry_after = retry_after


class EngineClosed(RuntimeError):
    """The engine is draining or stopped and takes no new requests."""


def failure_message(error: Exception) -> str:
    """What a client is told when generating its reply failed: the error's first line, shortened."""
    detail = (str(error).splitlines() or [type(error).__name__])[0][:200]
    return f"The model failed while generating this reply ({type(error).__name__}: {detail})."


class BatchingEngine:
    """Generates the replies of submitted requests in batches (see the module docstring).

    Args:
        model: a loaded `FunAudioChatForConditionalGeneration` (with its decoder for spoken replies).
        processor: its `FunAudioChatProcessor`.
        max_batch_size: the most requests generated together.
        max_wait_ms: how long the oldest waiting request waits for others to join its batch.
        max_queue: the most requests waiting; `submit` raises `QueueFull` beyond.
        max_prompt_tokens: the longest prompt accepted (never more than the model's positions minus the reply).
    """

    def __init__(
        self,
        model: Any,
        processor: Any,
        max_batch_size: int = 8,
        max_wait_ms: float = 20.0,
        max_queue: int = 64,
        max_prompt_tokens: int | None = None,
    ):
        self.model = model
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000
        self.max_queue = max_queue
        self.max_prompt_tokens = max_prompt_tokens
        self.stats = EngineStats()
        self._pending: deque[Reply] = deque()
        self._running: list[Reply] = []
        self._cond = threading.Condition()
        self._closing = False
        self._thread: threading.Thread | None = None
        config = model.generation_config
        eos = config.eos_token_id
        self._eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        self._pad_id = config.pad_token_id
        self._audio_token_id = self.tokenizer.convert_tokens_to_ids(processor.audio_token)
        self._speech_pad_id = processor.speech_tokenizer.pad_token_id

    # ------------------------------------------------------------------------------------------------ owner API
    def start(self) -> "BatchingEngine":
        """Starts the scheduler thread (once)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._serve, name="fac-batcher", daemon=True)
            self._thread.start()
        return self

    def close(self, timeout: float | None = None) -> bool:
        """Takes no new requests, finishes the waiting and running ones, and stops the thread. After `timeout`
        seconds the rest is cancelled. Returns True when everything finished in time."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread is None:
            return True
        self._thread.join(timeout)
        finished = not self._thread.is_alive()
        if not finished:
            with self._cond:
                for reply in [*self._pending, *self._running]:
                    reply.cancel()
            self._thread.join()
        return finished

    @property
    def queued(self) -> int:
        return len(self._pending)

    def retry_after(self) -> int:
        """Seconds a refused client should wait: about one batch's time."""
        recent = self.stats.batch_seconds / self.stats.batches if self.stats.batches else 1.0
        return max(1, math.ceil(recent))

    # ------------------------------------------------------------------------------------------------ requests
    def prepare(self, request: ReplyRequest) -> Any:
        """Processes one request alone (checks its audio and prompt length); raises `RequestError` when the model
        cannot take it."""
        if request.spoken and self.model.token2wav is None:
            raise RequestError(
                "This server has no speech decoder: ask for a text reply (modalities ['text']).", code="no_audio"
            )
        if request.max_new_tokens < 1:
            raise RequestError(
                f"max_new_tokens must be at least 1, got {request.max_new_tokens}.", code="invalid_input"
            )
        if request.inputs is None and not request.prompt:
            raise RequestError("A request needs a prompt (or the processor outputs of one).", code="invalid_input")
        try:
            inputs = request.inputs
            if inputs is None:
                inputs = self.processor(text=request.prompt, audio=request.audios or None, return_tensors="pt")
        except ValueError as error:
            raise RequestError(str(error), code="invalid_input") from error
        prompt_tokens = inputs["input_ids"].shape[1]
        positions = self.model.config.get_text_config(decoder=True).max_position_embeddings
        limit = positions - request.max_new_tokens
        if self.max_prompt_tokens is not None:
            limit = min(limit, self.max_prompt_tokens)
        if prompt_tokens > limit:
            raise RequestError(
                f"The prompt is {prompt_tokens} tokens long (audio counts 5 tokens per second); this server takes "
                f"at most {limit}. Send shorter audio or fewer turns.",
                code="context_length_exceeded",
            )
        if request.spoken and request.speaker is not None:
            try:
                self.model.token2wav.speaker_embedding(request.speaker)
            except (KeyError, ValueError, TypeError) as error:
                raise RequestError(f"Unknown voice: {error}", code="unknown_voice") from error
        return inputs

    def submit(self, request: ReplyRequest, loop=None) -> Reply:
        """Queues a request and returns its handle (events are delivered into `loop` when given).

        Raises `RequestError` (bad request), `QueueFull` or `EngineClosed`.
        """
        self._check_open()
        reply = Reply(request, loop)
        reply.inputs = self.prepare(request)
        with self._cond:
            self._check_open()
            reply.arrived = time.monotonic()  # the batching wait counts from here, after the processing
            self._pending.append(reply)
            self._cond.notify_all()
        return reply

    def _check_open(self) -> None:
        if self._closing:
            raise EngineClosed("The server is shutting down and takes no new requests.")
        if len(self._pending) >= self.max_queue:
            self.stats.rejected += 1
            raise QueueFull(self.retry_after())

    def _key(self, request: ReplyRequest, reply_id: int) -> tuple:
        """Requests with the same key can share a batch (a seeded request is alone, to be reproducible)."""
        sampling = self._sampling(request)
        alone = reply_id if request.seed is not None else None
        return (request.spoken, tuple(sorted(sampling.items())), alone)

    def _sampling(self, request: ReplyRequest) -> dict:
        if request.temperature == 0:
            return {"do_sample": False}
        if request.temperature is None and request.top_p is None:
            return {"do_sample": bool(self.model.generation_config.do_sample)}
        settings = {"do_sample": True, "temperature": request.temperature, "top_p": request.top_p}
        return {key: value for key, value in settings.items() if value is not None}

    # ------------------------------------------------------------------------------------------------ scheduler
    def _serve(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            started = time.monotonic()
            with self._cond:
                self._running = batch
                self.stats.running = len(batch)
            try:
                self._run(batch)
            except Exception as error:  # noqa: BLE001 - a failing batch fails its requests; the engine keeps serving
                logger.exception("A generation batch failed")
                self._fail(batch, failure_message(error))
            finally:
                with self._cond:
                    self._running = []
                    self.stats.running = 0
                self.stats.batch_seconds += time.monotonic() - started

    def _next_batch(self) -> list[Reply] | None:
        with self._cond:
            while True:
                while not self._pending:
                    if self._closing:
                        return None
                    self._cond.wait()
                first = self._pending[0]
                key = self._key(first.request, first.id)
                deadline = first.arrived + self.max_wait
                while True:
                    batch = [r for r in self._pending if self._key(r.request, r.id) == key][: self.max_batch_size]
                    remaining = deadline - time.monotonic()
                    if len(batch) >= self.max_batch_size or self._closing or remaining <= 0:
                        break
                    self._cond.wait(remaining)
                for reply in batch:
                    self._pending.remove(reply)
                if batch:
                    return batch

    # ------------------------------------------------------------------------------------------------ one batch
    def _run(self, batch: list[Reply]) -> None:
        live = []
        for reply in batch:
            if reply.cancelled:
                self.stats.cancelled += 1
                reply.emit(ReplyDone("", "", "cancelled", reply.inputs["input_ids"].shape[1], 0, completion_tokens=0))
            else:
                live.append(reply)
        if not live:
            return
        request = live[0].request
        inputs = collate([reply.inputs for reply in live], self._pad_id, self._speech_pad_id)
        inputs = {key: value.to(self.model.device) for key, value in inputs.items()}
        if "input_features" in inputs:
            inputs["input_features"] = inputs["input_features"].to(self.model.dtype)
        prompt_width = inputs["input_ids"].shape[1]
        rows = [
            BatchRow(
                reply=reply,
                index=index,
                limit=reply.request.max_new_tokens,
                prompt_tokens=int(reply.inputs["attention_mask"].sum()),
                prompt_audio_tokens=int((reply.inputs["input_ids"] == self._audio_token_id).sum()),
                spoken=reply.request.spoken,
            )
            for index, reply in enumerate(live)
        ]
        self.stats.batches += 1
        self.stats.rows += len(rows)
        self.stats.largest_batch = max(self.stats.largest_batch, len(rows))

        vocoder = StreamVocoder(self.model.token2wav) if request.spoken else None
        run = BatchRun(rows, self.tokenizer, vocoder, self.stats, self._eos_ids, self._pad_id)
        for row in rows:
            if vocoder is not None:
                try:
                    vocoder.open(row.index, row.reply.request.speaker)
                except Exception as error:  # noqa: BLE001 - this row fails, the others go on
                    run.fail_row(row, f"The voice could not be loaded: {error}")

        kwargs = dict(self._sampling(request), max_new_tokens=max(row.limit for row in rows))
        if request.spoken:
            kwargs.update(generation_mode="audio", return_audio=False)
        else:
            kwargs.update(generation_mode="text")
        if request.seed is not None:
            torch.manual_seed(request.seed)
        streamer = FunAudioChatIteratorStreamer(self.tokenizer)
        with BackgroundGeneration(  # leaving the block (also on an error here) cancels and joins the worker
            self.model,
            streamer,
            **inputs,
            **kwargs,
            return_dict_in_generate=True,
            stopping_criteria=StoppingCriteriaList([RowStops(rows, prompt_width)]),
        ) as generation:
            steps = run.fan_out(streamer)
            try:
                generation.result()
            except Exception:
                if steps == 0 and len(rows) > 1:  # failed before any output: find the failing request by itself
                    logger.warning(
                        "A batch of %d failed before its first step; retrying its requests alone", len(rows)
                    )
                    for row in rows:
                        if not row.done:
                            self._run_alone(row.reply)
                    return
                raise
        run.finish()

    def _run_alone(self, reply: Reply) -> None:
        try:
            self._run([reply])
        except Exception as error:  # noqa: BLE001 - this request fails, the others go on
            logger.exception("A request failed")
            self._fail([reply], failure_message(error))

    def _fail(self, batch: list[Reply], message: str) -> None:
        for reply in batch:
            if not reply.finished:
                reply.cancel()
                self.stats.failed += 1
                reply.emit(ReplyFailed(message))


__all__ = ["BatchingEngine", "EngineClosed", "QueueFull", "RequestError", "failure_message"]
