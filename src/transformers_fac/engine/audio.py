"""The engine's audio thread: the spoken rows' speech codes become 24 kHz audio while the next steps decode.

The engine's thread hands over, in order, what happens to each spoken reply at each step (`open`, its `text`, its
`push`ed codes, the `step` marker, `finish`, `drop`). The audio thread (`fac-audio`, owned by the engine: started with
it, joined when it stops) takes everything handed over so far, then decodes one batch of due chunks
(`token2wav.stream_batch()`), and again:

- **Most urgent first.** A chunk's deadline is when its listener runs out of audio: for a later chunk, the time of
  the reply's first audio plus the audio emitted so far; for a reply's first chunk, the reply's arrival (its listener
  has waited since then) minus a head start (`FIRST_CHUNK_HEAD_START`, 1 s: the wait for an answer to start is what
  a voice assistant is judged by, so a first chunk goes before the later chunk of a reply that has been silent for
  less than that). The batch is the chunk with the earliest deadline and every due chunk of the same shapes (they
  share its flow and vocoder calls). So a new reply's first chunk does not wait behind the later chunks of replies
  that still have audio to play, and a reply whose listener is about to run dry comes before one with seconds
  buffered. When the decoder cannot keep up for long, the replies that are late by more than the head start come
  first again: the playing replies' gaps stay bounded.
- **A starting reply goes first, also before its first chunk is due.** While a reply is opened and its first chunk
  not complete yet, the due chunks wait as long as every listener keeps more than `HOLD_MARGIN` (0.5 s) of audio in
  hand: the new reply's first decoding steps then run without the decoder competing for the machine (on a CPU the
  engine's thread and this one share the cores and the interpreter), and the chunks that waited share calls.
- **A first chunk's decode has the machine to itself** (decoder on a CPU): while the audio thread decodes a batch
  holding a reply's first chunk, the engine's thread waits before its next step (`wait_for_first_chunks`, at most
  `FIRST_CHUNK_PAUSE_LIMIT`): the steps of the running rows keep well ahead of their listeners, and the decoder then
  runs on both cores without sharing the interpreter with the engine's steps (on a 2-core CPU a lone reply's first
  audio came a third sooner, and 10-20 % sooner at 70 % load). On a GPU the two threads mainly queue work for the
  same device, so the engine does not wait there.
- **Batches form from what is due**, not from one engine step: when the decoder falls behind, the chunks of equal
  shapes that accumulated meanwhile share one call.

A chunk's samples do not depend on when or with whom it is decoded (to float rounding), so this changes only the
timing. Events keep one order on every run, the order of the engine's steps: a step's text, then the audio its codes
completed (text waits only for the audio of earlier codes); `ReplyDone` after the rest of the audio.
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

from .replies import AudioDelta, Reply, ReplyFailed, TextDelta

logger = logging.getLogger("transformers_fac.engine")

_STOP = object()
_FINAL = "final"  # the batch shape of the final steps of finished replies
_MID_STEP_WAIT = 0.02  # seconds to wait for the rest of a step whose marker has not come yet
FIRST_CHUNK_HEAD_START = 1.0  # seconds a reply's first chunk counts as having waited beyond its arrival
HOLD_MARGIN = 0.5  # seconds of audio a playing reply keeps in hand while later chunks wait for a starting reply
FIRST_CHUNK_PAUSE_LIMIT = 0.5  # longest the engine's thread waits for a first chunk's decode before its next step


@dataclass
class _Stream:
    """A spoken reply on the audio thread: what it emitted and what waits."""

    reply: Reply
    samples: int = 0
    codes: int = 0  # decoder codes received
    first_audio: float | None = None  # `time.monotonic()` of its first chunk
    texts: deque = field(default_factory=deque)  # (codes received before it, text) not emitted yet
    done: Callable[[int], Any] | None = None  # set when its codes are complete: makes its `ReplyDone`


class AudioWorker:
    """Decodes the spoken replies' codes in a thread of its own (see the module docstring).

    Args:
        token2wav: the model's `FunAudioChatToken2Wav`.
        on_failure: called with a reply whose audio failed (the engine then drops its row).
        threads: torch threads of the audio thread (None keeps torch's setting); on a CPU, the engine's thread and
            this one share the cores.
    """

    def __init__(self, token2wav: Any, on_failure: Callable[[Reply], None], threads: int | None = None):
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}.")
        self.sampling_rate = token2wav.config.sampling_rate
        self.vocab_size = token2wav.config.vocab_size
        self._threads = threads
        self._streams = token2wav.stream_batch()
        self._on_failure = on_failure
        self._replies: dict[int, _Stream] = {}
        self._commands: queue.Queue = queue.Queue()
        self._mid_step = False  # a step's commands came without its marker yet
        self._first_chunks_alone = token2wav.device.type == "cpu"  # the engine waits while a first chunk decodes
        self._no_first_chunk = threading.Event()  # cleared while a batch holding a reply's first chunk decodes
        self._no_first_chunk.set()
        self._thread = threading.Thread(target=self._run, name="fac-audio", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------------------------------------ engine side
    def open(self, reply: Reply, voice: Any, exact: bool) -> None:
        self._commands.put(("open", reply, voice, exact))

    def text(self, reply: Reply, delta: str) -> None:
        self._commands.put(("text", reply, delta))

    def push(self, reply: Reply, codes: list[int]) -> int:
        """Hands over a reply's new speech group; returns how many of its codes the decoder takes."""
        valid = [code for code in codes if 0 <= code < self.vocab_size]
        if valid:
            self._commands.put(("push", reply, valid))
        return len(valid)

    def step(self) -> None:
        """The step's codes are all handed over: what they complete may be decoded."""
        self._commands.put(("step", None))

    def finish(self, ending: list[tuple[Reply, Callable[[int], Any]]]) -> None:
        """These replies' codes are complete: the rest of their audio, then each one's `done(audio_samples)` (its
        `ReplyDone`)."""
        self._commands.put(("finish", None, ending))

    def drop(self, reply: Reply) -> None:
        """Forgets a reply without decoding the rest (cancelled or failed)."""
        self._commands.put(("drop", reply))

    def wait_for_first_chunks(self) -> None:
        """Returns once no reply's first chunk is decoding (at most `FIRST_CHUNK_PAUSE_LIMIT` seconds; at once when the
        decoder is not on a CPU): the engine's thread calls it before each step."""
        self._no_first_chunk.wait(FIRST_CHUNK_PAUSE_LIMIT)

    def close(self) -> None:
        """Decodes everything handed over, then stops and joins the thread."""
        if self._thread.is_alive():
            self._commands.put(_STOP)
            if threading.current_thread() is not self._thread:
                self._thread.join()

    # ------------------------------------------------------------------------------------------------ audio thread
    def _run(self) -> None:
        if self._threads is not None:
            torch.set_num_threads(self._threads)  # this thread's own setting
        stopping = False
        while True:
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
        self._mid_step = kind in ("open", "text", "push")
        if kind == "step":
            return
        if kind == "finish":
            for reply, done in command[2]:
                if reply.id in self._replies:
                    self._replies[reply.id].done = done
            return
        try:
            if kind == "open":
                self._streams.open(reply.id, command[2], exact=command[3])
                self._replies[reply.id] = _Stream(reply)
            elif kind == "drop":
                self._forget(reply)
            elif reply.id in self._replies:
                stream = self._replies[reply.id]
                if kind == "text":
                    stream.texts.append((stream.codes, command[2]))
                    self._emit_texts(stream)
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
        """When the reply's listener runs out of audio (a reply's first chunk: since it arrived, less the head start)."""
        stream = self._replies[key]
        if stream.first_audio is None:
            return stream.reply.arrived - FIRST_CHUNK_HEAD_START
        return stream.first_audio + stream.samples / self.sampling_rate

    def _hold(self, due: dict[int, Any]) -> float:
        """How long the due chunks can wait for a starting reply (opened, its first chunk not due yet), so that its
        first steps run without the decoder competing for the machine: until the most urgent due chunk's listener
        would have less than `HOLD_MARGIN` seconds of audio left (0: decode now)."""
        if not due or not any(
            stream.first_audio is None and stream.done is None and key not in due
            for key, stream in self._replies.items()
        ):
            return 0.0
        return min(self._deadline(key) for key in due) - HOLD_MARGIN - time.monotonic()

    def _decode(self, due: dict[int, Any]) -> None:
        """Decodes the most urgent chunk with every due chunk of the same shapes."""
        shape = due[min(due, key=self._deadline)]
        keys = [key for key, key_shape in due.items() if key_shape == shape]
        if self._first_chunks_alone and any(self._replies[key].first_audio is None for key in keys):
            self._no_first_chunk.clear()
        try:
            audio = self._streams.finish(keys) if shape == _FINAL else self._streams.step(keys, steps=1)
        except Exception:  # noqa: BLE001 - the decoder failed: these replies fail, the engine goes on
            logger.exception("The speech decoder failed")
            self._fail([self._replies[key].reply for key in keys], "The speech decoder failed.")
            return
        finally:
            self._no_first_chunk.set()
        now = time.monotonic()
        for key in keys:
            stream, samples = self._replies[key], audio.get(key)
            if shape == _FINAL:
                self._emit_texts(stream, final=True)  # all its text before its last audio
            if samples is not None and samples.size:
                stream.first_audio = now if stream.first_audio is None else stream.first_audio
                stream.samples += samples.size
                stream.reply.emit(AudioDelta(samples, self.sampling_rate))
            if shape == _FINAL:
                stream.reply.emit(stream.done(stream.samples))
                self._replies.pop(key)
            else:
                self._emit_texts(stream)

    def _emit_texts(self, stream: _Stream, final: bool = False) -> None:
        """Emits the reply's waiting text that no undecoded chunk precedes (text of a step comes after the audio
        completed by the codes before that step)."""
        if not stream.texts:
            return
        limit = None if final else self._streams.next_step_codes(stream.reply.id)
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
