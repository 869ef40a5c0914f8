"""The reply engine: one thread owns the model and schedules per decoding step (continuous batching).

Every step the engine

1. drops the rows whose request was cancelled (a cancelled or disconnected caller frees its row at once);
2. admits queued requests, oldest first, while rows are free (`max_batch_size`) and the step's prefill budget
   (`max_prefill_tokens`, at least one request) lasts: each newcomer is prefilled alone (`model.start_reply`, the
   prefill `generate` runs, with the speech head's first group) and joins the running batch (`engine.batch`);
3. chooses every row's text token with the row's own settings (its logits processors and stopping criteria as
   `generate` builds them from the request: greedy, temperature / top-p, max tokens; a seeded row draws from its own
   `torch.Generator`), appends the spoken rows' speech groups (`append_speech`, shared with `generate`'s loop) and
   emits the text deltas;
4. hands the spoken rows' new codes to the audio (`engine.audio`): a reply's first chunk is decoded right away, on
   the engine's thread (the running rows are well ahead of their listeners), the rest by the audio thread while the
   next steps decode, all streams together (`token2wav.stream_batch()`);
5. finishes the rows that ended (end of turn, token limit): their rows leave the batch; the rest of their audio, then
   `ReplyDone`, follow from the audio thread;
6. runs one batched `decode_step` for the rows left.

Rows with different settings share every step: reply mode (a text row feeds the speech head like the others, but
its codes are never used, and it never fuses speech into its LLM input), voice (each spoken row has its own stream
decoder), sampling, seed and token limit.

Two running batches: `EagerBatch` (the default: dynamic caches, the rows concatenated, the speech head only while
some row speaks) and, with `cache_implementation="static"` (given, or the model's generation config's, as
`fac-serve --compile` sets it), `SlotBatch` (`engine.slots`: `max_batch_size` fixed slots on static caches of
`max_length` positions, one `torch.compile`d step, CUDA graphs on CUDA; rows joining and leaving replay the same
graph). A static engine refuses requests whose prompt plus `max_new_tokens` exceed a slot; a model without a speech
head is always decoded eagerly.

Exactness: a greedy row gives the token ids and speech codes of the same request generated alone (`model.generate`),
whatever joins, leaves or is cancelled meanwhile: each row's prefill is a batch of one, left padding shifts no
position id, and every per-row choice uses only that row's logits and history (in the compiled batch: up to the
float rounding of compiled kernels, as `generate(cache_implementation="static")`). A seeded sampled row draws only
from its own generator (its text tokens, and in the compiled batch the noise of its speech codes too), so its reply
does not depend on its neighbours either; the compiled batch samples speech codes by the exponential race on that
noise, the eager one with `torch.multinomial`, so the two give different (equally distributed) sampled replies.

Example:

```python
>>> engine = ReplyEngine(model, processor, max_batch_size=8).start()
>>> reply = engine.submit(ReplyRequest(prompt, [waveform], voice="中文女"))
>>> for event in reply:
...     print(event)
>>> engine.close()
```
"""

import logging
import math
import threading
import time
import weakref
from collections import deque
from typing import Any

import torch
from transformers import CompileConfig

from ..generation_fun_audio_chat import append_speech
from ..speech_sampling import choose
from ..streaming import TextDeltas, close_at_exit
from .audio import AudioWorker
from .batch import EagerBatch, RunningBatch
from .errors import EngineClosed, QueueFull, RequestError, failure_message
from .replies import Reply, ReplyDone, ReplyFailed, ReplyRequest, TextDelta
from .rows import EngineStats, Row, seeded_generator
from .slots import SlotBatch

logger = logging.getLogger("transformers_fac.engine")


class _CancelAtExit:
    """Closes an engine that is still running when the interpreter exits, cancelling its replies (a thread left
    running into interpreter shutdown aborts the process)."""

    def __init__(self, engine: "ReplyEngine"):
        self._engine = weakref.ref(engine)
        close_at_exit(self)

    def close(self) -> None:
        engine = self._engine()
        if engine is not None:
            engine.close(timeout=0)


class ReplyEngine:
    """Generates the replies of submitted requests, batched per decoding step (see the module docstring).

    Args:
        model: a loaded `FunAudioChatForConditionalGeneration` (with its decoder for spoken replies).
        processor: its `FunAudioChatProcessor`.
        max_batch_size: the most rows decoded together.
        max_queue: the most requests waiting; `submit` raises `QueueFull` beyond.
        max_prompt_tokens: the longest prompt accepted (never more than the model's positions minus the reply).
        max_prefill_tokens: prompt tokens prefilled per step at most (the running rows wait for at most this much
            prefill; one request is always admitted when a row is free).
        thread_name: the name of the engine's thread.
        cache_implementation: `"static"` decodes `max_batch_size` fixed slots with the compiled step
            (`engine.slots`); None (eager, dynamic caches) or anything else: the eager batch. Default: the model's
            generation config's.
        compile_config: how the static step compiles (as `generate` takes it; default: whole graph, CUDA graphs on
            CUDA).
        max_length: static slots only: the positions of a slot (prompt plus reply; bucketed to a power of two).
        decoder_process: on a CPU, decode the spoken replies' audio after their first chunk in a child process
            (`engine.decoder_process`; `start` takes a few seconds more), so that it does not compete with the
            engine's thread for the interpreter's lock. The program's main module must be importable without side
            effects (an `if __name__ == "__main__":` guard), as for any spawned process.
    """

    def __init__(
        self,
        model: Any,
        processor: Any,
        max_batch_size: int = 8,
        max_queue: int = 64,
        max_prompt_tokens: int | None = None,
        max_prefill_tokens: int = 4096,
        thread_name: str = "fac-engine",
        cache_implementation: str | None = None,
        compile_config: CompileConfig | None = None,
        max_length: int = 2048,
        decoder_process: bool = False,
    ):
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1, got {max_batch_size}.")
        self.model = model
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.max_batch_size = max_batch_size
        self.max_queue = max_queue
        self.max_prompt_tokens = max_prompt_tokens
        self.max_prefill_tokens = max_prefill_tokens
        self.stats = EngineStats()
        self._pending: deque[Reply] = deque()
        self._cond = threading.Condition()
        self._closing = False
        self._thread: threading.Thread | None = None
        self._thread_name = thread_name
        config = model.generation_config
        eos = config.eos_token_id
        self._eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        self._pad_id = config.pad_token_id
        self._audio_token_id = self.tokenizer.convert_tokens_to_ids(processor.audio_token)
        self._audio: AudioWorker | None = None
        self._decoder_process = decoder_process
        if cache_implementation is None:
            cache_implementation = model.generation_config.cache_implementation
        self._batch: RunningBatch
        if cache_implementation == "static" and getattr(model, "has_speech_head", False):
            positions = model.config.get_text_config(decoder=True).max_position_embeddings
            self._batch = SlotBatch(model, max_batch_size, min(max_length, positions), compile_config)
        else:
            self._batch = EagerBatch(model)

    # ------------------------------------------------------------------------------------------------ owner API
    def start(self) -> "ReplyEngine":
        """Starts the scheduler thread (once)."""
        if self._thread is None:
            if self.model.token2wav is not None:
                self._audio = AudioWorker(self.model.token2wav, self._audio_failed, process=self._decoder_process)
            self._thread = threading.Thread(target=self._serve, name=self._thread_name, daemon=True)
            self._exit_guard = _CancelAtExit(self)  # an engine left running at interpreter exit is stopped then
            self._thread.start()
        return self

    def close(self, timeout: float | None = None) -> bool:
        """Takes no new requests, finishes the waiting and running ones, and stops the thread. After `timeout`
        seconds the rest is cancelled. Returns True when everything finished in time. Safe to call more than once;
        from the engine's own thread (e.g. a garbage collection there) it only asks the thread to stop."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread is None or self._thread is threading.current_thread():
            return True
        self._thread.join(timeout)
        finished = not self._thread.is_alive()
        if not finished:
            with self._cond:
                for reply in [*self._pending, *[row.reply for row in self._rows]]:
                    reply.cancel()
            self._thread.join()
        return finished

    def warm_up(self) -> None:
        """Runs one short reply through a started engine, so that the compiled step (static slots) is compiled before
        the first request (a spoken reply where the model speaks)."""
        messages = [{"role": "user", "content": "hi"}]
        prompt = self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        spoken = self.model.token2wav is not None and getattr(self.model, "has_speech_head", False)
        for _ in self.submit(ReplyRequest(prompt, spoken=spoken, max_new_tokens=3, temperature=0)):
            pass

    @property
    def queued(self) -> int:
        """Requests waiting for a row."""
        return len(self._pending)

    @property
    def running(self) -> int:
        """Rows decoding now."""
        return len(self._rows)

    @property
    def compiled(self) -> bool:
        """Whether the engine decodes fixed slots with the compiled step."""
        return isinstance(self._batch, SlotBatch)

    @property
    def batch(self) -> RunningBatch:
        """The running batch (`EagerBatch` or `SlotBatch`), for monitoring; only the engine's thread changes it."""
        return self._batch

    @property
    def _rows(self) -> list[Row]:
        return self._batch.rows

    def retry_after(self) -> int:
        """Seconds a refused client should wait: about the time the queue ahead takes to get rows."""
        step = self.stats.batch_seconds / self.stats.batches if self.stats.batches else 0.1
        waiting = (len(self._pending) + 1) / self.max_batch_size
        return max(1, math.ceil(step * 60 * waiting))

    # ------------------------------------------------------------------------------------------------ requests
    def prepare(self, request: ReplyRequest) -> Any:
        """Processes one request alone (checks its audio, voice and prompt length); raises `RequestError` when the
        model cannot take it."""
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
        if isinstance(self._batch, SlotBatch):
            limit = min(limit, self._batch.capacity - request.max_new_tokens)
        if prompt_tokens > limit:
            raise RequestError(
                f"The prompt is {prompt_tokens} tokens long (audio counts 5 tokens per second); this server takes "
                f"at most {limit}. Send shorter audio or fewer turns.",
                code="context_length_exceeded",
            )
        if request.spoken and request.voice is not None:
            try:
                self.model.token2wav.speaker_embedding(request.voice)
            except (KeyError, ValueError, TypeError) as error:
                raise RequestError(f"Unknown voice: {error}", code="unknown_voice") from error
        return inputs

    def submit(self, request: ReplyRequest, loop=None, stop_event: threading.Event | None = None) -> Reply:
        """Queues a request and returns its handle (events are delivered into `loop` when given; setting
        `stop_event` is the handle's `stop()`).

        Raises `RequestError` (bad request), `QueueFull` or `EngineClosed`.
        """
        self._check_open()
        reply = Reply(request, loop, stop_event)
        reply.inputs = self.prepare(request)
        with self._cond:
            self._check_open()
            reply.arrived = time.monotonic()
            self._pending.append(reply)
            self._cond.notify_all()
        return reply

    def _check_open(self) -> None:
        if self._closing:
            raise EngineClosed("The server is shutting down and takes no new requests.")
        if len(self._pending) >= self.max_queue:
            self.stats.rejected += 1
            raise QueueFull(self.retry_after())

    def _settings(self, request: ReplyRequest) -> dict:
        """`generate` arguments of a request (its sampling: None keeps the checkpoint's)."""
        settings = {**request.generate_kwargs, "max_new_tokens": request.max_new_tokens}
        if request.temperature == 0:
            settings["do_sample"] = False
        elif request.temperature is not None or request.top_p is not None:
            settings["do_sample"] = True
            settings.update({k: v for k, v in (("temperature", request.temperature), ("top_p", request.top_p)) if v})
        return settings

    # ------------------------------------------------------------------------------------------------ scheduler
    def _serve(self) -> None:
        try:
            self._loop()
        finally:
            if self._audio is not None:
                self._audio.close()  # after the audio of every finished reply

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._rows:
                    if self._closing:
                        return
                    self._cond.wait()
            started = time.monotonic()
            try:
                with torch.inference_mode():
                    self._step()
            except Exception as error:  # noqa: BLE001 - a failing step fails its rows; the engine keeps serving
                logger.exception("A decoding step failed")
                with torch.inference_mode():
                    self._fail_running(failure_message(error))
            self.stats.batch_seconds += time.monotonic() - started

    def _step(self) -> None:
        self._leave([row for row in self._rows if row.reply.cancelled])
        stopped = [row for row in self._rows if row.reply.stopped]
        if stopped:
            for row in stopped:
                row.ending = "stop"
            self._finish(stopped)
            self._leave(stopped, finished=True)
        self._admit()
        if not self._rows:
            return
        self.stats.batches += 1
        self.stats.largest_batch = max(self.stats.largest_batch, len(self._rows))
        self._choose()
        ending = [row for row in self._rows if row.ending is not None]
        if ending:
            self._finish(ending)
            self._leave(ending, finished=True)
        if self._rows:
            self._batch.decode()

    # ------------------------------------------------------------------------------------------------ joining
    def _admit(self) -> None:
        budget = self.max_prefill_tokens
        admitted = 0
        while len(self._rows) < self.max_batch_size:
            with self._cond:
                if not self._pending:
                    return
                tokens = self._pending[0].inputs["input_ids"].shape[1]
                if admitted and tokens > budget:
                    return
                reply = self._pending.popleft()
            if reply.cancelled or reply.stopped:
                self.stats.cancelled += 1
                reply.emit(ReplyDone("", "", "cancelled", reply.inputs["input_ids"].shape[1], 0, completion_tokens=0))
                continue
            budget -= tokens
            admitted += 1
            try:
                row = self._prefill(reply)
            except Exception as error:  # noqa: BLE001 - this request fails, the others go on
                logger.exception("A request failed at its prefill")
                self.stats.failed += 1
                reply.cancel()
                reply.emit(ReplyFailed(failure_message(error)))
                continue
            self._join(row)

    def _prefill(self, reply: Reply) -> Row:
        request, model = reply.request, self.model
        inputs = {key: value.to(model.device) for key, value in reply.inputs.items()}
        if "input_features" in inputs:
            inputs["input_features"] = inputs["input_features"].to(model.dtype)
        spoken = request.spoken and getattr(model, "has_speech_head", False)
        mode = "audio" if spoken else "text"
        start = model.start_reply(**inputs, generation_mode=mode, cache_implementation=None, **self._settings(request))
        generator = seeded_generator(request.seed, model.device)
        if start.state.chooser is not None:
            start.state.chooser.generator = generator
        if spoken:
            self._audio.open(reply, request.voice, request.exact)
        prompt = reply.inputs["input_ids"]
        return Row(
            reply=reply,
            start=start,
            spoken=spoken,
            text=TextDeltas(self.tokenizer),
            generator=generator,
            prompt_tokens=int(reply.inputs["attention_mask"].sum()),
            prompt_audio_tokens=int((prompt == self._audio_token_id).sum()),
        )

    def _join(self, row: Row) -> None:
        self._batch.join(row)
        row.reply.joined_step = self.stats.batches + 1  # the step about to run
        self.stats.rows += 1
        self.stats.running = len(self._rows)

    def _leave(self, rows: list[Row], finished: bool = False) -> None:
        """Removes rows from the batch (cancelled ones are told so)."""
        if not rows:
            return
        for row in rows:
            row.reply.left_step = self.stats.batches + 1  # the first step without it
            if not finished:
                self._drop_audio(row)
                self.stats.cancelled += 1
                row.reply.emit(row.done_event("cancelled", self._raw_text(row.tokens)))
        self._batch.leave(rows)
        self.stats.running = len(self._rows)

    # ------------------------------------------------------------------------------------------------ one step
    def _choose(self) -> None:
        """Every row's token and speech group of this step; emits text, pushes codes, marks the rows that end."""
        config, rows, batch = self.model.config, self._rows, self._batch
        logits = batch.logits.to(copy=True, dtype=torch.float32)
        device = logits.device
        chosen = torch.zeros(batch.size, dtype=torch.long, device=device)  # free slots: any token, never read
        ready = torch.zeros(batch.size, dtype=torch.bool, device=device)
        stops = []
        for row in rows:
            scores = row.start.logits_processor(row.ids, logits[row.index : row.index + 1])
            token = choose(scores, row.start.generation_config.do_sample, row.generator)
            if row.first_step and row.spoken:
                token = torch.full_like(token, config.text_config.audio_bos_index)  # `force_audio_bos`
            row.first_step = False
            row.ids = torch.cat([row.ids, token[:, None]], dim=-1)
            stops.append(bool(row.start.stopping_criteria(row.ids, None).any()))
            chosen[row.index] = token[0]
            ready[row.index] = row.head_running
        group = batch.group if any(row.head_running for row in rows) else None
        kept, finished, appended, tokens_out, batch.speaking = append_speech(
            config, group, batch.last_group, batch.speaking, ready, chosen
        )
        batch.last_group = torch.where(kept[:, None], appended, batch.last_group)
        batch.appended_last = kept
        host = torch.cat(
            [chosen[:, None], tokens_out[:, None], kept[:, None], finished[:, None], appended], 1
        ).tolist()
        kept_rows = []
        for row, stop in zip(rows, stops):
            values = host[row.index]
            chosen_id, token, row_kept, row_finished, codes = values[0], values[1], values[2], values[3], values[4:]
            row.ids[0, -1] = token
            row.tokens.append(token)
            self._emit_text(row, row.text.add(token))
            if row_kept:
                row.speech.extend(codes)
                kept_rows.append(row)
                row.speech_codes += self._audio.push(row.reply, codes)
            if row_finished:
                row.speech_ended = True
            if stop:
                row.ending = "stop" if chosen_id in self._eos_ids else "length"
        if kept_rows:
            batch.commit(kept_rows, appended, kept)
        if any(row.spoken for row in rows):
            self._audio.step()
        batch.speaking = batch.speaking | (tokens_out == config.text_config.audio_bos_index)

    def _emit_text(self, row: Row, delta: str) -> None:
        """A spoken row's text goes through the audio worker (its events keep their order), a text row's directly."""
        if not delta:
            return
        if row.spoken:
            self._audio.text(row.reply, delta)
        else:
            row.reply.emit(TextDelta(delta))

    # ------------------------------------------------------------------------------------------------ audio, ends
    def _finish(self, rows: list[Row]) -> None:
        """The rows' last text, then `ReplyDone` (for spoken rows from the audio thread, after the rest of their
        audio)."""
        spoken = []
        for row in rows:
            if row.reply.finished:
                continue
            self._emit_text(row, row.text.rest())
            self.stats.completed += 1
            done = row.done_event(row.ending, self._raw_text(row.tokens))
            if row.spoken:
                spoken.append((row.reply, done.with_audio))
            else:
                row.reply.emit(done)
        if spoken:
            self._audio.finish(spoken)

    def _raw_text(self, ids: list[int]) -> str:
        kept = [token for token in ids if token not in self._eos_ids and token != self._pad_id]
        return self.tokenizer.decode(kept, skip_special_tokens=False)

    def _drop_audio(self, row: Row) -> None:
        if row.spoken:
            self._audio.drop(row.reply)

    def _audio_failed(self, reply: Reply) -> None:
        """The audio failed this reply: its row leaves at the next step (called from the audio thread, or from this
        one for a first chunk)."""
        self.stats.failed += 1
        reply.cancel()

    def _fail_running(self, message: str) -> None:
        """A batched step failed: every running row fails (the engine starts over with an empty batch)."""
        for row in self._rows:
            if not row.reply.finished:
                self._drop_audio(row)
                row.reply.cancel()
                self.stats.failed += 1
                row.reply.emit(ReplyFailed(message))
        self._batch.leave(list(self._rows))
        self.stats.running = 0


__all__ = ["ReplyEngine"]
