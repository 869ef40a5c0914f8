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
4. hands the spoken rows' new codes to the audio thread (`engine.audio`), which turns them into audio while the next
   steps decode, all streams together (`token2wav.stream_batch()`);
5. finishes the rows that ended (end of turn, token limit): their rows leave the batch; the rest of their audio, then
   `ReplyDone`, follow from the audio thread;
6. runs one batched `decode_step` for the rows left.

Rows with different settings share every step: reply mode (a text row feeds the speech head like the others, but
its codes are never used, and it never fuses speech into its LLM input), voice (each spoken row has its own stream
decoder), sampling, seed and token limit. The speech head runs while some spoken row still speaks. Eager caches only
(`DynamicCache`); a model whose generation config asks for static caches is decoded eagerly here.

Exactness: a greedy row gives the token ids and speech codes of the same request generated alone (`model.generate`),
whatever joins, leaves or is cancelled meanwhile: each row's prefill is a batch of one, left padding shifts no
position id, and every per-row choice uses only that row's logits and history. A seeded sampled row draws only from
its own generator, so its reply does not depend on its neighbours either.

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

from ..decoding_cache import GrowingSequence
from ..decoding_step import DecodingState, decode_step
from ..generation_fun_audio_chat import append_speech
from ..speech_sampling import choose
from ..streaming import TextDeltas, close_at_exit
from .audio import AudioWorker
from .batch import join, select
from .errors import EngineClosed, QueueFull, RequestError, failure_message
from .replies import Reply, ReplyDone, ReplyFailed, ReplyRequest, TextDelta
from .rows import EngineStats, Row, seeded_generator

logger = logging.getLogger("transformers_fac.engine")


class _RowChoosers:
    """The speech head's code chooser for the whole batch: each spoken row's own chooser on its own logits (text rows
    get code 0, never used)."""

    def __init__(self, rows: list[Row]):
        self.rows = rows

    def __call__(self, logits: torch.Tensor, group: list[torch.Tensor]) -> torch.Tensor:
        codes = []
        for index, row in enumerate(self.rows):
            chooser = row.start.state.chooser
            if chooser is None or not row.head_running:
                codes.append(torch.zeros(1, dtype=torch.long, device=logits.device))
            else:
                codes.append(chooser(logits[index : index + 1], [code[index : index + 1] for code in group]))
        return torch.cat(codes)


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
        self._rows: list[Row] = []
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
        self._reset_batch()

    # ------------------------------------------------------------------------------------------------ owner API
    def start(self) -> "ReplyEngine":
        """Starts the scheduler thread (once)."""
        if self._thread is None:
            if self.model.token2wav is not None:
                self._audio = AudioWorker(self.model.token2wav, self._audio_failed)
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

    @property
    def queued(self) -> int:
        """Requests waiting for a row."""
        return len(self._pending)

    @property
    def running(self) -> int:
        """Rows decoding now."""
        return len(self._rows)

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
                self._fail_running(failure_message(error))
            self.stats.batch_seconds += time.monotonic() - started

    def _step(self) -> None:
        self._leave([index for index, row in enumerate(self._rows) if row.reply.cancelled])
        stopped = [index for index, row in enumerate(self._rows) if row.reply.stopped]
        if stopped:
            for index in stopped:
                self._rows[index].ending = "stop"
            self._finish([self._rows[index] for index in stopped])
            self._leave(stopped, finished=True)
        self._admit()
        if not self._rows:
            return
        self.stats.batches += 1
        self.stats.largest_batch = max(self.stats.largest_batch, len(self._rows))
        tokens = self._choose()
        ending = [index for index, row in enumerate(self._rows) if row.ending is not None]
        if ending:
            self._finish([self._rows[index] for index in ending])
            keep = [index for index in range(len(self._rows)) if index not in set(ending)]
            tokens = tokens[keep]
            self._leave(ending, finished=True)
        if self._rows:
            self._decode(tokens)

    # ------------------------------------------------------------------------------------------------ joining
    def _reset_batch(self) -> None:
        self._llm: GrowingSequence | None = None
        self._head = None  # SpeechHeadState of all rows
        self._logits = self._group = self._speaking = self._appended_last = self._last_group = None
        self.stats.running = 0

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
        """Appends a prefilled row to the batch (caches left-padded, per-row tensors concatenated)."""
        model, start = self.model, row.start
        config = model.config
        audio_config = config.audio_config
        device = start.logits.device
        pad_group = torch.full((1, audio_config.group_size), audio_config.pad_token_id, device=device)
        head = start.state.head
        if head is None and getattr(model, "has_speech_head", False):
            empty = GrowingSequence.empty(model.audio_invert_tower.crq_transformer.config, 1, device)
            head = model.audio_invert_tower.start_state(empty, torch.empty(0, dtype=model.dtype, device=device))
        speaking = start.input_ids[:, -1] == config.text_config.audio_bos_index
        group = start.step_group if start.step_group is not None else pad_group
        if self._llm is None:
            self._llm, self._head = start.state.llm, head
            self._logits, self._group, self._speaking = start.logits, group, speaking
            self._appended_last = torch.zeros(1, dtype=torch.bool, device=device)
            self._last_group = pad_group
        else:
            self._llm = join(self._llm, start.state.llm, config.get_text_config(decoder=True))
            if head is not None:
                head_config = model.audio_invert_tower.crq_transformer.config
                self._head.sequence = join(self._head.sequence, head.sequence, head_config)
                self._head.last_code_embedding = torch.cat(
                    [self._head.last_code_embedding, head.last_code_embedding.to(self._head.last_code_embedding)]
                )
            self._logits = torch.cat([self._logits, start.logits.to(self._logits.dtype)])
            self._group = torch.cat([self._group, group])
            self._speaking = torch.cat([self._speaking, speaking])
            self._appended_last = torch.cat([self._appended_last, torch.zeros_like(speaking)])
            self._last_group = torch.cat([self._last_group, pad_group])
        self._rows.append(row)
        row.reply.joined_step = self.stats.batches + 1  # the step about to run
        self.stats.rows += 1
        self.stats.running = len(self._rows)

    def _leave(self, indices: list[int], finished: bool = False) -> None:
        """Removes rows from the batch (cancelled ones are told so)."""
        if not indices:
            return
        for index in indices:
            row = self._rows[index]
            row.reply.left_step = self.stats.batches + 1  # the first step without it
            if not finished:
                self._drop_audio(row)
                self.stats.cancelled += 1
                row.reply.emit(row.done_event("cancelled", self._raw_text(row.tokens)))
        keep_list = [index for index in range(len(self._rows)) if index not in set(indices)]
        self._rows = [self._rows[index] for index in keep_list]
        if not self._rows:
            self._reset_batch()
            return
        keep = torch.tensor(keep_list, device=self._logits.device)
        self._llm = select(self._llm, keep, self.model.config.get_text_config(decoder=True))
        if self._head is not None:
            head_config = self.model.audio_invert_tower.crq_transformer.config
            self._head.sequence = select(self._head.sequence, keep, head_config)
            self._head.last_code_embedding = self._head.last_code_embedding[keep]
        self._logits, self._group = self._logits[keep], self._group[keep]
        self._speaking, self._appended_last = self._speaking[keep], self._appended_last[keep]
        self._last_group = self._last_group[keep]
        self.stats.running = len(self._rows)

    # ------------------------------------------------------------------------------------------------ one step
    def _choose(self) -> torch.Tensor:
        """Every row's token and speech group of this step; emits text, pushes codes, marks the rows that end.
        Returns the step's text tokens [B] (the LLM inputs of the next step)."""
        config, rows = self.model.config, self._rows
        logits = self._logits.to(copy=True, dtype=torch.float32)
        tokens, stops = [], []
        for index, row in enumerate(rows):
            scores = row.start.logits_processor(row.ids, logits[index : index + 1])
            token = choose(scores, row.start.generation_config.do_sample, row.generator)
            if row.first_step and row.spoken:
                token = torch.full_like(token, config.text_config.audio_bos_index)  # `force_audio_bos`
            row.first_step = False
            row.ids = torch.cat([row.ids, token[:, None]], dim=-1)
            stops.append(bool(row.start.stopping_criteria(row.ids, None).any()))
            tokens.append(token)
        chosen = torch.cat(tokens)
        ready = torch.tensor([row.head_running for row in rows], device=chosen.device)
        group = self._group if bool(ready.any()) else None
        kept, finished, appended, tokens_out, self._speaking = append_speech(
            config, group, self._last_group, self._speaking, ready, chosen
        )
        self._last_group = torch.where(kept[:, None], appended, self._last_group)
        self._appended_last = kept
        host = torch.cat([chosen[:, None], tokens_out[:, None], kept[:, None], finished[:, None], appended], 1)
        for index, (row, values, stop) in enumerate(zip(rows, host.tolist(), stops)):
            chosen_id, token, row_kept, row_finished, codes = values[0], values[1], values[2], values[3], values[4:]
            row.ids[0, -1] = token
            row.tokens.append(token)
            self._emit_text(row, row.text.add(token))
            if row_kept:
                row.speech.extend(codes)
                row.start.state.chooser.commit(appended[index : index + 1], kept[index : index + 1])
                row.speech_codes += self._audio.push(row.reply, codes)
            if row_finished:
                row.speech_ended = True
            if stop:
                row.ending = "stop" if chosen_id in self._eos_ids else "length"
        if any(row.spoken for row in rows):
            self._audio.step()
        self._speaking = self._speaking | (tokens_out == config.text_config.audio_bos_index)
        return tokens_out

    def _emit_text(self, row: Row, delta: str) -> None:
        """A spoken row's text goes through the audio thread (its events keep their order), a text row's directly."""
        if not delta:
            return
        if row.spoken:
            self._audio.text(row.reply, delta)
        else:
            row.reply.emit(TextDelta(delta))

    def _decode(self, tokens: torch.Tensor) -> None:
        rows = self._rows
        state = DecodingState(self._llm, self._head, _RowChoosers(rows) if self._head is not None else None)
        run_head = any(row.head_running for row in rows)
        fuse = self._speaking & self._appended_last
        logits, group = decode_step(self.model, state, tokens, self._last_group, fuse, run_head)
        self._logits = logits
        if group is not None:
            self._group = group

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
        """The audio thread failed this reply: its row leaves at the next step (called from the audio thread)."""
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
        self._rows = []
        self._reset_batch()


__all__ = ["ReplyEngine"]
