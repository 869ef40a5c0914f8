"""The engine's audio thread: the spoken rows' speech codes become 24 kHz audio while the next steps decode.

The engine's thread hands over, in order, what happens to each spoken reply at each step (`open`, its `text`, its
`push`ed codes, the `step` marker, `finish`, `drop`); the audio thread (`fac-audio`, owned by the engine: started with
it, joined when it stops) applies them in that order and, at each step marker, decodes the due chunks of every stream
together (`token2wav.stream_batch()`). It emits every event of a spoken reply (its text too), so that a reply's events
come in the same order on every run: a step's text, then the audio its codes completed; `ReplyDone` after the rest
of the audio.
"""

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

from .replies import AudioDelta, Reply, ReplyFailed, TextDelta

logger = logging.getLogger("transformers_fac.engine")

_STOP = object()


class AudioWorker:
    """Decodes the spoken replies' codes in a thread of its own (see the module docstring).

    Args:
        token2wav: the model's `FunAudioChatToken2Wav`.
        on_failure: called with a reply whose audio failed (the engine then drops its row).
    """

    def __init__(self, token2wav: Any, on_failure: Callable[[Reply], None]):
        self.sampling_rate = token2wav.config.sampling_rate
        self.vocab_size = token2wav.config.vocab_size
        self._streams = token2wav.stream_batch()
        self._on_failure = on_failure
        self._replies: dict[int, Reply] = {}
        self._samples: dict[int, int] = {}
        self._commands: queue.Queue = queue.Queue()
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
        """The step's codes are all handed over: decode what they complete."""
        self._commands.put(("step", None))

    def finish(self, ending: list[tuple[Reply, Callable[[int], Any]]]) -> None:
        """These replies' codes are complete: the rest of their audio (decoded together), then each one's
        `done(audio_samples)` (its `ReplyDone`)."""
        self._commands.put(("finish", None, ending))

    def drop(self, reply: Reply) -> None:
        """Forgets a reply without decoding the rest (cancelled or failed)."""
        self._commands.put(("drop", reply))

    def close(self) -> None:
        """Applies everything handed over, then stops and joins the thread."""
        if self._thread.is_alive():
            self._commands.put(_STOP)
            if threading.current_thread() is not self._thread:
                self._thread.join()

    # ------------------------------------------------------------------------------------------------ audio thread
    def _run(self) -> None:
        while True:
            command = self._commands.get()
            if command is _STOP:
                return
            kind = command[0]
            if kind == "step":
                self._step()
            elif kind == "finish":
                self._finish(command[2])
            elif kind == "text":
                if command[1].id in self._replies:
                    command[1].emit(TextDelta(command[2]))
            else:
                self._apply(command)

    def _apply(self, command: tuple) -> None:
        kind, reply = command[0], command[1]
        try:
            if kind == "open":
                self._streams.open(reply.id, command[2], exact=command[3])
                self._replies[reply.id], self._samples[reply.id] = reply, 0
            elif kind == "push" and reply.id in self._replies:
                self._streams.push(reply.id, command[2])
            elif kind == "drop":
                self._forget(reply)
        except Exception as error:  # noqa: BLE001 - this reply fails, the others go on
            logger.exception("The speech decoder failed")
            self._fail([reply], f"The speech decoder failed: {error}")

    def _step(self) -> None:
        if not self._replies:
            return
        try:
            audio = self._streams.step()
        except Exception:  # noqa: BLE001 - the decoder failed: these replies fail, the engine goes on
            logger.exception("The speech decoder failed")
            self._fail(list(self._replies.values()), "The speech decoder failed.")
            return
        for key, samples in audio.items():
            self._samples[key] += samples.size
            self._replies[key].emit(AudioDelta(samples, self.sampling_rate))

    def _finish(self, finishing: list[tuple]) -> None:
        open_ = [(reply, done) for reply, done in finishing if reply.id in self._replies]
        if not open_:
            return
        try:
            tails = self._streams.finish([reply.id for reply, _ in open_])
        except Exception:  # noqa: BLE001 - these replies fail, the others go on
            logger.exception("The speech decoder failed")
            self._fail([reply for reply, _ in open_], "The speech decoder failed.")
            return
        for reply, done in open_:
            tail = tails[reply.id]
            if tail.size:
                self._samples[reply.id] += tail.size
                reply.emit(AudioDelta(tail, self.sampling_rate))
            reply.emit(done(self._samples[reply.id]))
            self._replies.pop(reply.id)
            self._samples.pop(reply.id)

    def _forget(self, reply: Reply) -> None:
        if self._replies.pop(reply.id, None) is not None:
            self._samples.pop(reply.id)
            self._streams.drop(reply.id)

    def _fail(self, replies: list[Reply], message: str) -> None:
        for reply in replies:
            self._forget(reply)
            if not reply.finished:
                reply.emit(ReplyFailed(message))
                self._on_failure(reply)


__all__ = ["AudioWorker"]
