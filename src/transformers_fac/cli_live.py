"""`fac-chat --live`: a hands-free conversation from the command line (`transformers_fac.live.VoiceSession`).

fac-chat --live                                                  # default microphone and loudspeaker (sounddevice)
fac-chat --live --input conversation.wav --output-dir replies    # play a recording through it, in real time
fac-chat --live --input conversation.wav --fast --model tiny     # ... as fast as the model goes (same events)

Events are printed with the session clock (seconds of audio heard); each answered turn's spoken reply is written to
`reply_<turn>.wav` (a reply cut by a barge-in: as far as it was played), and the turn latencies are summed up at the
end.
"""

import argparse
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from .optional_imports import require_extra

CHUNK_S = 0.02
"""Audio is fed in 20 ms chunks, as a microphone delivers it."""

AUDIO_IO_HELP = (
    'needs the sounddevice package and the PortAudio library: pip install "transformers-fac[live]" (and e.g. '
    "apt-get install libportaudio2), or play a recording through it with --input FILE"
)


def prepare(args: argparse.Namespace, check_audio_file) -> None:
    """Checks before the model loads: the recording is readable audio, or the microphone package is there."""
    require_extra({"silero_vad": "silero-vad"}, "live", "fac-chat --live (finding your turns)")
    if args.input is not None:
        check_audio_file(args.input, question=False)
    else:
        import_sounddevice()


def _status(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class TurnLog:
    """What one turn's reply produced: its audio chunks and the latency to its first one."""

    pieces: list[np.ndarray] = field(default_factory=list)
    latency: float | None = None
    heard_s: float | None = None
    rate: int = 24000


class EventPrinter:
    """Prints the events (one line each, text once per reply) and writes each answered turn's reply."""

    def __init__(self, output_dir: Path, out=None):
        self.output_dir, self.out = output_dir, out if out is not None else sys.stdout
        self.turns: dict[int, TurnLog] = {}
        self.written: list[Path] = []
        self.joined = 0  # turns continued by the next one (their reply was interrupted before it could be heard)

    def line(self, event, message: str) -> None:
        message = " ".join(message.split())  # one line per event, whatever the reply text holds
        print(f"[{event.time:7.2f} s] turn {event.turn}  {message}", file=self.out, flush=True)

    def show(self, event) -> None:
        log = self.turns.setdefault(event.turn, TurnLog())
        kind = event.type
        if kind == "speech_started":
            self.line(event, "speech started")
        elif kind == "speech_stopped":
            self.line(event, f"speech stopped ({len(event.audio) / event.sampling_rate:.1f} s of audio)")
        elif kind == "reply_started":  # (a turn joined with the next one starts over)
            self.turns[event.turn] = TurnLog()
            self.line(event, "reply started")
        elif kind == "audio":
            if log.latency is None:
                log.latency = event.latency
                self.line(event, f"first reply audio, {event.latency:.2f} s after the end of the turn")
            log.pieces.append(event.audio)
            log.rate = event.sampling_rate
        elif kind == "interrupted":
            log.heard_s = event.heard_s
            self.line(event, f"interrupted after {event.heard_s:.2f} s heard: {event.text}")
            if not event.heard_s:  # VoiceSession joins this turn with the next one: say so
                self.joined += 1
                self.line(event, "nothing of the reply was heard: the next speech continues this turn")
            self._write(event.turn, log, keep=round(event.heard_s * log.rate))  # (replaces a finished reply's file)
        elif kind == "reply_done":
            if log.latency is None and event.latency is not None:  # a written reply
                log.latency = event.latency
            self.line(event, f"reply done: {event.text}")
            self._write(event.turn, log)
        elif kind == "error":
            self.line(event, f"error: {event.text}")

    def _write(self, turn: int, log: TurnLog, keep: int | None = None) -> None:
        audio = np.concatenate(log.pieces)[:keep] if log.pieces else np.zeros(0, np.float32)
        path = self.output_dir / f"reply_{turn}.wav"
        if audio.size == 0:
            path.unlink(missing_ok=True)  # nothing of it was heard
            return
        self.output_dir.mkdir(parents=True, exist_ok=True)
        sf.write(path, audio, log.rate)
        self.written.append(path)
        _status(f"wrote {path} ({audio.size / log.rate:.1f} s)")

    def summary(self) -> None:
        answered = {turn: log for turn, log in self.turns.items() if log.latency is not None}
        print("turn latencies (end of your turn decided -> first reply output):", file=self.out)
        for turn, log in sorted(answered.items()):
            cut = f" (interrupted after {log.heard_s:.1f} s)" if log.heard_s is not None else ""
            print(f"  turn {turn}: {log.latency:.2f} s{cut}", file=self.out)
        if not answered:
            print("  (no turn was answered)", file=self.out)
        self.out.flush()
        if self.joined:
            _status(
                f"note: {self.joined} turn(s) were continued by the next one because their reply had not been heard "
                "yet when you spoke again (in real time the model may answer slower than you talk; --fast plays "
                "the recording as if it always kept up, so its turns can differ)"
            )


def play_file(session, path: str, fast: bool, printer: EventPrinter) -> None:
    """Feeds a recording in 20 ms chunks: in real time, or (`fast`) as fast as the model goes."""
    from .audio_io import SAMPLING_RATE, load_audio

    audio = load_audio(path, name=path, validate=False)
    step = round(CHUNK_S * SAMPLING_RATE)
    start = time.perf_counter()
    for offset in range(0, len(audio), step):
        if not fast:
            time.sleep(max(0.0, start + offset / SAMPLING_RATE - time.perf_counter()))
        for event in session.feed(audio[offset : offset + step], SAMPLING_RATE):
            printer.show(event)
    for event in session.finish():
        printer.show(event)


class Loudspeaker:
    """Plays reply audio on the default output device; `flush()` drops what is not played yet (a barge-in)."""

    def __init__(self, sounddevice, rate: int):
        self._pending: deque[np.ndarray] = deque()
        self._lock = threading.Lock()
        self._stream = sounddevice.OutputStream(samplerate=rate, channels=1, dtype="float32", callback=self._fill)

    def _fill(self, outdata, frames, time_info, status) -> None:  # PortAudio's thread
        out = outdata[:, 0]
        filled = 0
        with self._lock:
            while filled < frames and self._pending:
                piece = self._pending[0]
                take = min(frames - filled, len(piece))
                out[filled : filled + take] = piece[:take]
                filled += take
                if take == len(piece):
                    self._pending.popleft()
                else:
                    self._pending[0] = piece[take:]
        out[filled:] = 0

    def play(self, audio: np.ndarray) -> None:
        with self._lock:
            self._pending.append(audio.astype(np.float32))

    def flush(self) -> None:
        with self._lock:
            self._pending.clear()

    def __enter__(self) -> "Loudspeaker":
        self._stream.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stream.stop()
        self._stream.close()


def import_sounddevice():
    try:
        import sounddevice
    except (ImportError, OSError) as error:  # OSError: the PortAudio library is missing
        raise RuntimeError(f"fac-chat --live with a microphone {AUDIO_IO_HELP} ({error})") from None
    return sounddevice


def talk(session, printer: EventPrinter) -> None:
    """Microphone in, loudspeaker out, until Ctrl-C."""
    from queue import Queue

    sounddevice = import_sounddevice()
    try:
        rate = int(sounddevice.query_devices(kind="input")["default_samplerate"])
    except Exception as error:  # noqa: BLE001 - no device: one clear line
        raise RuntimeError(f"no microphone found ({error}); play a recording with --input FILE") from None
    chunks: Queue = Queue()

    def on_input(indata, frames, time_info, status) -> None:  # PortAudio's thread
        chunks.put(indata[:, 0].copy())

    microphone = sounddevice.InputStream(
        samplerate=rate, channels=1, dtype="float32", blocksize=round(rate * CHUNK_S), callback=on_input
    )
    with Loudspeaker(sounddevice, session.model.token2wav.config.sampling_rate) as loudspeaker, microphone:
        _status("Listening: talk any time, pause to let it answer, talk over it to interrupt. Ctrl-C quits.")
        while True:
            for event in session.feed(chunks.get(), rate):
                printer.show(event)
                if event.type == "audio":
                    loudspeaker.play(event.audio)
                elif event.type == "interrupted":
                    loudspeaker.flush()


def run(args: argparse.Namespace, model, processor, voice=None) -> int:
    """`fac-chat --live`: the session on a file (`--input`) or the microphone, replying in `voice`. Returns
    the exit status."""
    from .live import TurnSettings, VoiceSession

    kwargs = {} if args.max_new_tokens is None else {"max_new_tokens": args.max_new_tokens}
    printer = EventPrinter(Path(args.output_dir))
    session = VoiceSession(
        model,
        processor,
        voice=voice,
        reply_mode="text" if args.text_only else "audio",
        system_prompt=args.system,
        echo_cancelled=args.input is not None or args.echo_cancelled,
        realtime=not args.fast,
        turn=TurnSettings(silence_s=args.silence),
        **kwargs,
    )
    with session:
        try:
            if args.input is not None:
                play_file(session, args.input, args.fast, printer)
            else:
                talk(session, printer)
        finally:
            printer.summary()
    return 0


__all__ = ["EventPrinter", "prepare", "run"]
