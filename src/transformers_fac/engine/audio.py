"""The engine's audio: the spoken rows' speech codes become 24 kHz audio while the next steps decode.

The engine's thread hands over what happens to each spoken reply at each step (`open`, its `text`, its `push`ed
codes, the `step` marker, `finish`, `drop`).

- **A reply's first chunk is decoded by the engine's thread**, at the step that completes its codes, before the next
  step: the wait for an answer to start is what a voice assistant is judged by, and a first chunk decoded by the audio
  thread would first wait for whatever that thread is decoding (on a 2-core CPU that wait was most of a first audio's
  time under load: a steady chunk of several streams takes 0.1-0.2 s). The running rows wait for that decode, once
  per reply; they are far ahead of their listeners. Then the reply's stream (`StreamBatch.detach`) and its waiting text
  go to the audio thread (`adopt`), which decodes the rest; a reply that ends or is dropped before its first chunk
  goes there (or away) as it stands.
- **The audio thread** (`fac-audio`, owned by the worker: started with it, joined by `close`) takes everything handed
  over so far, then decodes one batch of due chunks (`token2wav.stream_batch()`), and again. **Most urgent first**: a
  chunk's deadline is when its listener runs out of audio (the reply's first audio plus the audio emitted so far; for
  the first chunk of a reply that ended before it, the reply's arrival minus `FIRST_CHUNK_HEAD_START`). The batch is
  the chunk with the earliest deadline and every due chunk of the same shapes (they share its flow and vocoder calls),
  so a reply whose listener is about to run dry comes before one with seconds buffered.
- **A starting reply goes first, also before its first chunk is due.** While some reply is opened and its first chunk
  not decoded yet, the due chunks wait as long as every listener keeps more than `HOLD_MARGIN` (0.5 s) of audio in
  hand: the new reply's first steps and its first chunk then run without the audio thread competing for the machine
  (on a CPU the two threads share the cores and the interpreter), and the chunks that waited share calls.
- **Batches form from what is due**, not from one engine step: when the decoder falls behind, the chunks of equal
  shapes that accumulated meanwhile share one call.

A chunk's samples do not depend on when, where or with whom it is decoded (to float rounding), so this changes only
the timing. Events keep one order on every run, the order of the engine's steps: a step's text, then the audio its
codes completed (text waits only for the audio of earlier codes); `ReplyDone` after the rest of the audio.
"""

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from .decoder_process import DecoderProcess, DecoderProcessError
from .replies import AudioDelta, Reply, ReplyFailed, TextDelta

logger = logging.getLogger("transformers_fac.engine")

_STOP = object()
_FINAL = "final"  # the batch shape of the final steps of finished replies
_MID_STEP_WAIT = 0.02  # seconds to wait for the rest of a step whose marker has not come yet
FIRST_CHUNK_HEAD_START = 1.0  # seconds a reply's first chunk counts as having waited beyond its arrival
HOLD_MARGIN = 0.5  # seconds of audio a playing reply keeps in hand while later chunks wait for a starting reply


@dataclass
class _Stream:
    """A spoken reply's audio: what it emitted and what waits."""

    reply: Reply
    samples: int = 0
    codes: int = 0  # decoder codes received
    first_audio: float | None = None  # `time.monotonic()` of its first chunk
    texts: deque = field(default_factory=deque)  # (codes received before it, text) not emitted yet
    done: Callable[[int], Any] | None = None  # set when its codes are complete: makes its `ReplyDone`


class AudioWorker:
    """Decodes the spoken replies' codes: their first chunks on the engine's thread, the rest in a thread of its own
    (see the module docstring).

    Args:
        token2wav: the model's `FunAudioChatToken2Wav`.
        on_failure: called with a reply whose audio failed (the engine then drops its row).
        threads: torch threads of the audio thread (None keeps torch's setting); on a CPU, the engine's thread and
            this one share the cores.
        process: the audio thread's streams decode in a child process ([`DecoderProcess`], CPU only; it starts in
            a few seconds): on a CPU the two threads then no longer share the interpreter's lock. If that process
            fails, its replies fail and the audio thread decodes the next ones itself.
    """

    def __init__(
        self, token2wav: Any, on_failure: Callable[[Reply], None], threads: int | None = None, process: bool = False
    ):
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}.")
        self._token2wav = token2wav
        self.sampling_rate = token2wav.config.sampling_rate
        self.vocab_size = token2wav.config.vocab_size
        self._threads = threads
        self._on_failure = on_failure
        # the engine's thread alone: the replies before their first chunk, and their streams
        self._starting: dict[int, _Stream] = {}
        self._starting_streams = token2wav.stream_batch()
        # the audio thread alone
        self._streams: Any = DecoderProcess(token2wav, threads) if process else token2wav.stream_batch()
        self._replies: dict[int, _Stream] = {}
        self._commands: queue.Queue = queue.Queue()
        self._mid_step = False  # a step's commands came without its marker yet
        self._thread = threading.Thread(target=self._run, name="fac-audio", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------------------------------------ engine side
    def open(self, reply: Reply, voice: Any, exact: bool) -> None:
        """Starts a spoken reply's stream (an unknown voice raises here)."""
        self._starting_streams.open(reply.id, voice, exact=exact)
        self._starting[reply.id] = _Stream(reply)

    def text(self, reply: Reply, delta: str) -> None:
        stream = self._starting.get(reply.id)
        if stream is None:
            self._commands.put(("text", reply, delta))
            return
        stream.texts.append((stream.codes, delta))
        self._emit_texts(self._starting_streams, stream)

    def push(self, reply: Reply, codes: list[int]) -> int:
        """Hands over a reply's new speech group; returns how many of its codes the decoder takes."""
        valid = [code for code in codes if 0 <= code < self.vocab_size]
        stream = self._starting.get(reply.id)
        if stream is not None:
            stream.codes += self._starting_streams.push(reply.id, valid)
        elif valid:
            self._commands.put(("push", reply, valid))
        return len(valid)

    def step(self) -> None:
        """The step's codes are all handed over: the first chunks they complete are decoded now, the rest may be
        decoded by the audio thread."""
        due = list(self._starting_streams.due())
        if due:
            self._first_chunks(due)
        self._commands.put(("step", None))

    def finish(self, ending: list[tuple[Reply, Callable[[int], Any]]]) -> None:
        """These replies' codes are complete: the rest of their audio, then each one's `done(audio_samples)` (its
        `ReplyDone`)."""
        for reply, _ in ending:
            if reply.id in self._starting:
                self._hand_over(reply.id)
        self._commands.put(("finish", None, ending))

    def drop(self, reply: Reply) -> None:
        """Forgets a reply without decoding the rest (cancelled or failed)."""
        if self._starting.pop(reply.id, None) is not None:
            self._starting_streams.drop(reply.id)
        else:
            self._commands.put(("drop", reply))

    def close(self) -> None:
        """Decodes everything handed over, then stops and joins the thread."""
        if self._thread.is_alive():
            self._commands.put(_STOP)
            if threading.current_thread() is not self._thread:
                self._thread.join()

    def _first_chunks(self, keys: list[int]) -> None:
        """Decodes these starting replies' first chunks (together where shapes agree), emits them, and hands the
        replies over to the audio thread."""
        try:
            audio = self._starting_streams.step(keys, steps=1)
        except Exception as error:  # noqa: BLE001 - the decoder failed: these replies fail, the engine goes on
            logger.exception("The speech decoder failed")
            for key in keys:
                self._fail_starting(self._starting[key].reply, f"The speech decoder failed: {error}")
            return
        now = time.monotonic()
        for key in keys:
            stream, samples = self._starting[key], audio.get(key)
            if samples is None:  # no audio from this step: the stream stays here
                continue
            stream.first_audio, stream.samples = now, samples.size
            stream.reply.emit(AudioDelta(samples, self.sampling_rate))
            self._emit_texts(self._starting_streams, stream)
            self._hand_over(key)

    def _hand_over(self, key: int) -> None:
        """A starting reply's stream goes to the audio thread as it stands."""
        stream = self._starting.pop(key)
        self._commands.put(("adopt", stream.reply, stream, self._starting_streams.detach(key)))

    def _fail_starting(self, reply: Reply, message: str) -> None:
        self.drop(reply)
        if not reply.finished:
            reply.emit(ReplyFailed(message))
            self._on_failure(reply)

    # ------------------------------------------------------------------------------------------------ audio thread
    def _run(self) -> None:
        if self._threads is not None:
            torch.set_num_threads(self._threads)  # this thread's own setting
        stopping = False
        try:
            while True:
                try:
                    stopping = self._take(block=not stopping and not self._due()) or stopping
                    wait_until = time.monotonic() + _MID_STEP_WAIT  # chunks completed in one step share a batch
                    while self._mid_step and not stopping and (left := wait_until - time.monotonic()) > 0:
                        stopping = self._take(block=True, timeout=left)
                    due = self._due()
                    hold = 0.0 if stopping else self._hold(due)
                    if hold > 0:
                        stopping = self._take(block=True, timeout=hold) or stopping
                    elif due:
                        self._decode(due)
                    elif stopping:
                        return
                except DecoderProcessError:
                    self._decode_here()
        finally:
            if isinstance(self._streams, DecoderProcess):
                self._streams.close()

    def _decode_here(self) -> None:
        """The decoder process failed: the replies it held fail, and this thread decodes the next ones itself."""
        logger.exception("The speech decoder process failed; the audio thread decodes from now on")
        self._streams.close()
        self._streams = self._token2wav.stream_batch()
        self._fail([stream.reply for stream in self._replies.values()], "The speech decoder failed.")

    def _take(self, block: bool, timeout: float | None = None) -> bool:
        """Applies the commands handed over (first waiting for one if `block`, at most `timeout` seconds); returns
        whether the engine asked to stop."""
        while True:
            try:
                command = self._commands.get(block=block, timeout=timeout if block else None)
            except queue.Empty:
                return False
            block = False
            if command is _STOP:
                self._mid_step = False
                return True
            self._apply(command)

    def _apply(self, command: tuple) -> None:
        kind, reply = command[0], command[1]
        self._mid_step = kind in ("adopt", "text", "push")
        if kind == "step":
            return
        if kind == "finish":
            for reply, done in command[2]:
                if reply.id in self._replies:
                    self._replies[reply.id].done = done
            return
        try:
            if kind == "adopt":
                self._streams.attach(reply.id, command[3])
                self._replies[reply.id] = command[2]
            elif kind == "drop":
                self._forget(reply)
            elif reply.id in self._replies:
                stream = self._replies[reply.id]
                if kind == "text":
                    stream.texts.append((stream.codes, command[2]))
                    self._emit_texts(self._streams, stream)
                else:  # push
                    stream.codes += self._streams.push(reply.id, command[2])
        except Exception as error:  # noqa: BLE001 - this reply fails, the others go on
            logger.exception("The speech decoder failed")
            self._fail([reply], f"The speech decoder failed: {error}")

    def _due(self) -> dict[int, Any]:
        """Each reply with a chunk to decode, with that chunk's batch shape."""
        due = self._streams.due()
        for key, stream in self._replies.items():
            if stream.done is not None and key not in due:
                due[key] = _FINAL
        return due

    def _deadline(self, key: int) -> float:
        """When the reply's listener runs out of audio (the first chunk of a reply that ended before it: since it
        arrived, less the head start)."""
        stream = self._replies[key]
        if stream.first_audio is None:
            return stream.reply.arrived - FIRST_CHUNK_HEAD_START
        return stream.first_audio + stream.samples / self.sampling_rate

    def _hold(self, due: dict[int, Any]) -> float:
        """How long the due chunks can wait for a starting reply (opened, its first chunk not decoded yet), so that its
        first steps and chunk run without the decoder competing for the machine: until the most urgent due chunk's
        listener would have less than `HOLD_MARGIN` seconds of audio left (0: decode now)."""
        if not due or not self._starting:  # (the engine's thread changes it; a stale answer only shifts a decode)
            return 0.0
        return min(self._deadline(key) for key in due) - HOLD_MARGIN - time.monotonic()

    def _decode(self, due: dict[int, Any]) -> None:
        """Decodes the most urgent chunk with every due chunk of the same shapes."""
        shape = due[min(due, key=self._deadline)]
        keys = [key for key, key_shape in due.items() if key_shape == shape]
        try:
            audio = self._streams.finish(keys) if shape == _FINAL else self._streams.step(keys, steps=1)
        except Exception:  # noqa: BLE001 - the decoder failed: these replies fail, the engine goes on
            logger.exception("The speech decoder failed")
            self._fail([self._replies[key].reply for key in keys], "The speech decoder failed.")
            return
        now = time.monotonic()
        for key in keys:
            stream, samples = self._replies[key], audio.get(key)
            if shape == _FINAL:
                self._emit_texts(self._streams, stream, final=True)  # all its text before its last audio
            if samples is not None and samples.size:
                stream.first_audio = now if stream.first_audio is None else stream.first_audio
                stream.samples += samples.size
                stream.reply.emit(AudioDelta(samples, self.sampling_rate))
            if shape == _FINAL:
                stream.reply.emit(stream.done(stream.samples))
                self._replies.pop(key)
            else:
                self._emit_texts(self._streams, stream)

    @staticmethod
    def _emit_texts(streams: Any, stream: _Stream, final: bool = False) -> None:
        """Emits the reply's waiting text that no undecoded chunk precedes (text of a step comes after the audio
        completed by the codes before that step); `streams`: the batch holding the reply's stream."""
        if not stream.texts:
            return
        limit = None if final else streams.next_step_codes(stream.reply.id)
        while stream.texts and (limit is None or stream.texts[0][0] < limit):
            stream.reply.emit(TextDelta(stream.texts.popleft()[1]))

    def _forget(self, reply: Reply) -> None:
        if self._replies.pop(reply.id, None) is not None:
            self._streams.drop(reply.id)

    def _fail(self, replies: list[Reply], message: str) -> None:
        for reply in replies:
            self._forget(reply)
            if not reply.finished:
                reply.emit(ReplyFailed(message))
                self._on_failure(reply)


__all__ = ["AudioWorker"]
