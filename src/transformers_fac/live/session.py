"""`VoiceSession`: a hands-free spoken conversation over live audio (voice activity, end of turn, barge-in).

The session's clock is the audio fed to it (16 kHz samples after resampling), never the wall clock: the same audio
always gives the same turns, and a recording can be played through it faster than real time.
"""

import threading
import time
from dataclasses import dataclass, field

import numpy as np

from ..audio_io import SAMPLING_RATE
from ..conversation import FunAudioChatConversation
from ..engine import AudioDelta, TextDelta
from ..engine.reply_stream import stream_reply
from ..prompts import REPLY_MODES, check_reply_mode, reply_system_prompt
from .reply import END, LiveReply
from .turns import TurnAudio, TurnDetector, TurnSettings
from .vad import WINDOW, AudioWindows, VoiceActivity, level_db

EVENT_TYPES = (
    "speech_started",
    "speech_stopped",
    "reply_started",
    "text",
    "audio",
    "interrupted",
    "reply_done",
    "error",
)


@dataclass
class LiveEvent:
    """Something that happened in a [`VoiceSession`].

    Args:
        type: one of `EVENT_TYPES`:
            `speech_started` (the user started talking; a reply in progress is interrupted first),
            `speech_stopped` (the user's turn ended: `audio` holds it, 16 kHz; `time` is the end of speech),
            `reply_started` (generation began: "thinking"), `text` (a reply text delta), `audio` (a reply audio
            chunk to play, 24 kHz float32), `interrupted` (the reply was cut: drop its audio not yet played; `text`
            is what the user heard, kept in the history), `reply_done` (the whole reply was handed out: `text` is
            all of it; its audio may still be playing), `error` (`text` is the message; the session goes on).
        time: the session clock (seconds of audio fed) when it happened.
        turn: the user turn it belongs to (1, 2, ...).
        latency: wall-clock seconds: for the first `audio` of a reply (or the `reply_done` of a written one), from
            the end of the user's turn to that output being produced; for `interrupted`, None (see `stop_latency`).
        heard_s: for `interrupted`, the seconds of reply audio the user heard.
        wall: `time.perf_counter()` when the event was created.
    """

    type: str
    time: float
    turn: int
    text: str = ""
    audio: np.ndarray | None = None
    sampling_rate: int | None = None
    latency: float | None = None
    heard_s: float | None = None
    wall: float = field(default_factory=time.perf_counter)


class VoiceSession:
    """A hands-free conversation with Fun-Audio-Chat: feed microphone audio, get events back.

    Voice activity detection (Silero VAD) finds the user's turns: a turn ends after `turn.silence_s` of silence (or
    `turn.max_turn_s`), and the reply starts at once. When the user starts talking while a reply is being generated
    or played, the reply is interrupted (generation stops within one decoding step, the audio not yet handed out is
    dropped; the client drops what it has not played yet) and the new question is answered.

    History: an interrupted reply is kept **as far as it was heard**: the text written before the first audio sample
    the user did not hear. If nothing of it was heard (the user went on talking before the reply could be heard), the
    reply is dropped and the user's turn is joined with the next one (one question, spoken with a pause).

    "Playing" is measured on the audio fed (see `transformers_fac.live.reply`): audio handed out at clock `t` plays
    from `max(t + playback_delay_s, end of the previous chunk)`, in real time. `playback_delay_s` is how long the
    client takes from receiving reply audio to playing it (a browser's streaming player buffers about 1.4 s): the
    reply then counts as playing, and as heard, when it is audible, so a question asked during its last seconds
    still interrupts it. Echo: with `echo_cancelled=False` (the client plays the
    reply through speakers without echo cancellation), voice activity while the reply plays counts only above
    `turn.echo_threshold` and `turn.echo_min_level_db`.

    With `realtime=True` (a live microphone) `feed` never waits for the model: reply events come out of the `feed` or
    `poll` calls after they are produced. With `realtime=False` the reply is handed out exactly as it plays: before
    each window of audio, the session waits until the reply audio handed out covers it and `playback_delay_s` more (a
    written reply: until it is complete), and hands out nothing more. A recording fed faster than real time then gives the same events at the
    same clock times on every run, as if the model always kept up; `reply_done` comes when its audio has played.

    Not thread-safe for feeding (one thread feeds); `interrupt`, `reset` and `close` may come from another thread.
    `close()` (or leaving a `with` block) stops the reply and joins every thread the session started.

    Example:

    ```python
    >>> with VoiceSession(model, processor, voice="中文女") as session:
    ...     for chunk in microphone_chunks():  # e.g. 20 ms of 48 kHz int16 each
    ...         for event in session.feed(chunk, 48000):
    ...             if event.type == "audio":
    ...                 loudspeaker.play(event.audio)
    ...             elif event.type == "interrupted":
    ...                 loudspeaker.flush()
    ```
    """

    def __init__(
        self,
        model,
        processor,
        voice=None,
        reply_mode: str = "audio",
        system_prompt: str | None = None,
        exact: bool = False,
        echo_cancelled: bool = True,
        realtime: bool = True,
        playback_delay_s: float = 0.0,
        turn: TurnSettings | None = None,
        max_turns: int = 8,
        vad=None,
        **generate_kwargs,
    ):
        self.model, self.processor = model, processor
        self._lock = threading.RLock()
        self.conversation = FunAudioChatConversation(system_prompt="", max_turns=max_turns)
        self.update(voice=voice, reply_mode=reply_mode, system_prompt=system_prompt, exact=exact)
        if not playback_delay_s >= 0:
            raise ValueError(f"playback_delay_s must be 0 or more, got {playback_delay_s!r}.")
        self.echo_cancelled, self.realtime, self.playback_delay_s = echo_cancelled, realtime, playback_delay_s
        self.turn_settings = turn or TurnSettings()
        self.generate_kwargs = generate_kwargs
        self.vad = vad if vad is not None else VoiceActivity()
        self._windows = AudioWindows()
        self._detector = TurnDetector(self.turn_settings)
        self._position = 0  # 16 kHz samples fed
        self._turn_audio = TurnAudio(self.turn_settings)  # recent windows: the audio of the turn being spoken
        self._pending_audio: np.ndarray | None = None  # an unanswered turn, to be joined with the next one
        self._reply: LiveReply | None = None
        self._stopping: list[LiveReply] = []
        self._turns = 0
        self._events: list[LiveEvent] = []
        self.stop_latencies: list[float] = []  # wall seconds from each interruption to its generation's end
        self.drain_latencies: list[float] = []  # ... to its last audio decoding's end (in the background)

    def update(self, voice=None, reply_mode: str = "audio", system_prompt: str | None = None, exact: bool = False):
        """Sets the voice, reply mode, system prompt (default: the official one of the mode) and stream mode of the
        next replies; the history stays."""
        check_reply_mode(reply_mode, voice)
        if reply_mode == "audio" and getattr(self.model, "token2wav", None) is None:
            raise ValueError("Spoken replies need the CosyVoice3 decoder: from_pretrained(..., token2wav=...).")
        with self._lock:
            self.voice, self.reply_mode, self.exact = voice, reply_mode, exact
            self.conversation.system_prompt = system_prompt or reply_system_prompt(reply_mode)

    # ---------------------------------------------------------------------------------------------------- clock
    @property
    def time(self) -> float:
        """The session clock: seconds of audio fed."""
        return self._position / SAMPLING_RATE

    @property
    def user_speaking(self) -> bool:
        """Whether the user is in the middle of a turn (speech started, not yet ended)."""
        return self._detector.speaking

    @property
    def state(self) -> str:
        """`"listening"`, `"thinking"` (a reply is being generated, none of it playing) or `"speaking"`."""
        reply = self._reply
        if reply is None or not reply.active(self.time):
            return "listening"
        return "speaking" if reply.playing(self.time) else "thinking"

    # ---------------------------------------------------------------------------------------------------- input
    def feed(self, audio, sampling_rate: float) -> list[LiveEvent]:
        """Feeds a chunk of microphone audio (any length and rate; mono or channels; float or integer PCM) and returns
        the events that happened meanwhile, in order."""
        with self._lock:
            echo_risk_possible = not self.echo_cancelled
            for window in self._windows.push(audio, sampling_rate):
                self._drain(until=None if self.realtime else self.time + WINDOW / SAMPLING_RATE)
                reply = self._reply
                echo_risk = echo_risk_possible and reply is not None and reply.playing(self.time)
                decision = self._detector.push(self.vad(window), level_db(window), self._position, echo_risk)
                self._turn_audio.add(window)
                self._position += WINDOW
                if decision == "speech_started":
                    self._on_speech_started()
                elif decision == "turn_ended":
                    self._on_turn_ended()
                self._turn_audio.trim(self._detector.speaking)
            self._drain(until=None if self.realtime else self.time)
            self._reap()
            return self._take_events()

    def poll(self) -> list[LiveEvent]:
        """The reply events produced since the last call, without feeding audio (for a client between chunks)."""
        with self._lock:
            self._drain(until=None if self.realtime else self.time)
            return self._take_events()

    def finish(self) -> list[LiveEvent]:
        """End of the input: a turn being spoken ends now, and the reply in progress is waited for (all of it handed
        out; the clock does not move, so its audio is still "playing" afterwards)."""
        with self._lock:
            if self._detector.end():
                self._on_turn_ended()
            reply = self._reply
            while reply is not None and not reply.finished and not reply.cancelled:
                self._handle(reply, *reply.take(wait=True))
            return self._take_events()

    def interrupt(self) -> list[LiveEvent]:
        """Stops the reply in progress (a Stop button), as a barge-in would."""
        with self._lock:
            self._interrupt()
            return self._take_events()

    def reset(self) -> list[LiveEvent]:
        """A new conversation: stops the reply and forgets the history (the settings stay)."""
        with self._lock:
            self._interrupt()
            self.conversation.reset()
            self._detector = TurnDetector(self.turn_settings)
            self.vad.reset()
            self._pending_audio = None
            return self._take_events()

    def close(self) -> None:
        """Stops the reply in progress and joins every thread of the session. Safe to call more than once."""
        with self._lock:
            replies, self._reply = [*self._stopping, self._reply], None
            self._stopping = []
        self._join([reply for reply in replies if reply is not None])

    def _join(self, replies: list[LiveReply]) -> None:
        for reply in replies:
            reply.close()
            if reply.stop_latency is not None:
                self.stop_latencies.append(reply.stop_latency)
                self.drain_latencies.append(reply.drain_latency)

    def _reap(self) -> None:
        """Joins the interrupted replies whose threads have ended (without waiting for the others)."""
        ended = [reply for reply in self._stopping if not reply.running]
        if ended:
            self._stopping = [reply for reply in self._stopping if reply.running]
            self._join(ended)

    def __enter__(self) -> "VoiceSession":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # ---------------------------------------------------------------------------------------------------- turns
    def _on_speech_started(self) -> None:
        self._interrupt()  # barge-in (no-op when no reply is active)
        turn = self._turns + (self._pending_audio is None)  # the turn being spoken
        self._event("speech_started", time=self._detector.speech_start / SAMPLING_RATE, turn=turn)

    def _on_turn_ended(self) -> None:
        decided = time.perf_counter()
        audio = self._turn_audio.turn(self._detector)
        if self._pending_audio is not None:  # continues the turn whose reply was not heard
            audio = np.concatenate([self._pending_audio, audio])
            self._pending_audio = None
            self.conversation.turns[-1].audio = audio
        else:
            self._turns += 1
            self.conversation.add_user_audio(audio)
        self._event("speech_stopped", time=self._detector.speech_end / SAMPLING_RATE, audio=audio, rate=SAMPLING_RATE)
        self._start_reply(decided)

    # ---------------------------------------------------------------------------------------------------- replies
    def _start_reply(self, decided: float) -> None:
        # An interrupted reply stopped generating within a step; an audio chunk it was decoding may still finish in
        # the background (the decoder keeps no state between calls): the new reply does not wait for it.
        self._reap()
        try:
            inputs = self.conversation.model_inputs(self.processor).to(self.model.device)
            if "input_features" in inputs:
                inputs["input_features"] = inputs["input_features"].to(self.model.dtype)
            stream = stream_reply(
                self.model,
                self.processor,
                inputs,
                voice=self.voice,
                exact=self.exact,
                generation_mode=self.reply_mode,
                **self.generate_kwargs,
            )
        except Exception as error:  # noqa: BLE001 - bad audio or settings: reported, the session goes on
            self.conversation.turns.pop()
            self._event("error", text=f"The reply could not start: {error}")
            return
        self._reply = LiveReply(stream, self._turns, spoken=self.reply_mode == "audio", turn_ended_wall=decided)
        self._event("reply_started")

    def _drain(self, until: float | None) -> None:
        """Real time (`until` None): hands out everything the reply has produced so far. Paced: hands out exactly what
        covers clock time `until`, waiting for it (so every event comes at the same clock time on every run)."""
        reply = self._reply
        while reply is not None and not reply.finished and not reply.cancelled:
            if until is not None and reply.covers(until + self.playback_delay_s):
                return
            item = reply.take(wait=until is not None)
            if item is None:
                return
            self._handle(reply, *item)

    def _handle(self, reply: LiveReply, item, produced: float) -> None:
        if isinstance(item, AudioDelta):
            latency = None
            if reply.first_audio_latency is None:
                latency = reply.first_audio_latency = produced - reply.turn_ended_wall
            reply.play(len(item.audio), item.sampling_rate, self.time + self.playback_delay_s)
            self._event("audio", turn=reply.turn, audio=item.audio, rate=item.sampling_rate, latency=latency)
        elif isinstance(item, TextDelta):
            reply.texts.append((item.text, reply.audio_samples))
            self._event("text", turn=reply.turn, text=item.text)
        elif isinstance(item, BaseException):
            reply.finished = True
            self.conversation.turns.pop()
            self._event("error", turn=reply.turn, text=f"The reply failed: {item}")
        elif item is END and not reply.cancelled:
            reply.finished = True
            self.conversation.add_assistant_reply(reply.text())
            latency = None if reply.spoken else produced - reply.turn_ended_wall
            self._event("reply_done", turn=reply.turn, text=reply.text(), latency=latency)

    def _interrupt(self) -> None:
        reply, now = self._reply, self.time
        if reply is None or not reply.active(now):
            return
        reply.cancel()
        heard = reply.heard_samples(now)
        text = reply.text(heard)
        last = self.conversation.turns[-1]
        if heard > 0 or not reply.spoken:
            last.reply = text
        else:  # nothing was heard: drop the reply; the user's next turn continues this one
            last.reply = None
            self._pending_audio = last.audio
        self._stopping.append(reply)
        self._reply = None
        self._event("interrupted", turn=reply.turn, text=text, heard_s=heard / reply.sampling_rate)

    def _event(self, kind: str, time: float | None = None, turn: int | None = None, rate=None, **fields) -> None:
        self._events.append(
            LiveEvent(
                type=kind,
                time=self.time if time is None else time,
                turn=self._turns if turn is None else turn,
                sampling_rate=rate,
                **fields,
            )
        )

    def _take_events(self) -> list[LiveEvent]:
        events, self._events = self._events, []
        return events


__all__ = ["EVENT_TYPES", "REPLY_MODES", "LiveEvent", "VoiceSession"]
