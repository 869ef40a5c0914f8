"""One reply of a live conversation: a pump thread moves the events of its [`ReplyStream`] into a queue, and the
session hands them out; the reply keeps the playback clock and knows how much of it the user has heard.

"Playing" is defined on the session's clock (seconds of input audio fed): an audio chunk handed out at clock `t`
starts playing at `max(t, end of the previous chunk)` and plays in real time. So the reply is playing while the audio
handed out is not yet covered by the audio fed since, and the user has heard what lies before the current clock.
"""

import threading
import time
from queue import Empty, Queue

from ..engine.reply_stream import ReplyStream
from ..streaming import close_at_exit, join_through_interrupts

END = object()
"""Queue marker: the stream has ended (finished, cancelled or failed)."""


class LiveReply:
    """A reply being generated for turn `turn`: owns its pump thread (`fac-live-reply`) and, through the stream, the
    generation worker. `close()` cancels and joins both."""

    def __init__(self, stream: ReplyStream, turn: int, spoken: bool, turn_ended_wall: float):
        self.stream, self.turn, self.spoken = stream, turn, spoken
        self.turn_ended_wall = turn_ended_wall  # when the end of the user's turn was decided
        self.cancelled_wall: float | None = None
        self.texts: list[tuple[str, int]] = []  # (text, reply audio samples handed out before it)
        self.audio_samples = 0
        self.sampling_rate = 24000  # until its first audio event says
        self.play_end: float | None = None
        self.first_audio_latency: float | None = None
        self.finished = False  # the whole reply was handed out
        self.cancelled = False
        self.stopped_wall: float | None = None  # when the stream had ended and its worker was joined
        self._items: Queue = Queue()
        self._thread = threading.Thread(target=self._pump, name="fac-live-reply", daemon=True)
        close_at_exit(self)
        self._thread.start()

    def _pump(self) -> None:
        try:
            for chunk in self.stream:
                self._items.put((chunk, time.perf_counter()))
        except Exception as error:  # noqa: BLE001 - a model failure becomes an `error` event
            self._items.put((error, time.perf_counter()))
        finally:
            self.stopped_wall = time.perf_counter()
            self._items.put((END, self.stopped_wall))

    def take(self, wait: bool):
        """The next `(item, wall time it was produced)`: a `TextDelta` / `AudioDelta`, an exception, or `END`; None if none is ready
        and `wait` is False."""
        try:
            return self._items.get(block=wait)
        except Empty:
            return None

    def play(self, samples: int, rate: int, now: float) -> None:
        """Audio handed out at clock `now` (seconds): queued after what is already playing."""
        start = now if self.play_end is None else max(now, self.play_end)
        self.play_end = start + samples / rate
        self.audio_samples += samples
        self.sampling_rate = rate

    def playing(self, now: float) -> bool:
        return self.play_end is not None and self.play_end > now

    def active(self, now: float) -> bool:
        """Still being generated or still playing (and not interrupted)."""
        return not self.cancelled and (not self.finished or self.playing(now))

    def covers(self, now: float) -> bool:
        """Whether the audio handed out reaches past `now` (a written reply never does: it is waited for whole)."""
        return self.spoken and self.play_end is not None and self.play_end >= now

    def heard_samples(self, now: float) -> int:
        """Reply audio samples played before clock `now`."""
        if self.play_end is None:
            return 0
        unplayed = max(0, round((self.play_end - now) * self.sampling_rate))
        return max(0, self.audio_samples - unplayed)

    def text(self, heard_samples: int | None = None) -> str:
        """The reply text; with `heard_samples`, only the text written before the first unheard audio sample (text
        comes before the audio generated with it; a written reply is heard as far as it was handed out)."""
        if heard_samples is None or not self.spoken:
            return "".join(text for text, _ in self.texts).strip()
        return "".join(text for text, before in self.texts if before < heard_samples).strip()

    def cancel(self) -> None:
        """Stops generating at the next decoding step (returns at once)."""
        self.cancelled, self.cancelled_wall = True, time.perf_counter()
        self.stream.cancel()

    @property
    def stop_latency(self) -> float | None:
        """Wall seconds from `cancel()` to the end of generation (0 if it had already ended), once known."""
        ended = self.stream.ended_at
        if self.cancelled_wall is None or ended is None:
            return None
        return max(0.0, ended - self.cancelled_wall)

    @property
    def drain_latency(self) -> float | None:
        """Wall seconds from `cancel()` to the pump thread's end: generation, and the audio decoding that was under
        way (it finishes in the background; nothing of it is handed out)."""
        if self.cancelled_wall is None or self.stopped_wall is None:
            return None
        return max(0.0, self.stopped_wall - self.cancelled_wall)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def close(self) -> None:
        """Cancels (if still running) and joins the pump thread, which closes the stream and joins its worker."""
        if self._thread.is_alive():
            self.stream.cancel()
            if threading.current_thread() is not self._thread:
                join_through_interrupts(self._thread)


__all__ = ["END", "LiveReply"]
