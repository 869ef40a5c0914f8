"""Server voice activity detection for realtime sessions (`turn_detection: {"type": "server_vad"}`).

Appended audio goes through the live conversation engine's pieces: 16 kHz windows of 512 samples (`AudioWindows`),
Silero VAD (`VoiceActivity`) and its turn detector (`TurnDetector`). Their decisions become the Realtime API's: speech
started (the session interrupts a reply in progress) and speech stopped (the session commits the turn, from
`prefix_padding_ms` before the detected start of speech, and asks for a reply). Positions are the session's audio
clock (the audio appended), never the wall clock.
"""

from dataclasses import dataclass

import numpy as np

from ..audio_io import SAMPLING_RATE
from ..live import AudioWindows, TurnDetector, TurnSettings, VoiceActivity
from ..live.vad import WINDOW, level_db

OPTIONS = ("type", "threshold", "prefix_padding_ms", "silence_duration_ms", "create_response", "interrupt_response")


@dataclass
class Decision:
    """`speech_started` or `speech_stopped` at `ms` of session audio; a stopped turn carries its audio (16 kHz)."""

    type: str
    ms: int
    audio: np.ndarray | None = None


def turn_settings(options: dict) -> TurnSettings:
    """The Realtime API's `server_vad` options as the turn detector's settings (raises ValueError on bad values).

    Example:
        >>> turn_settings({"type": "server_vad", "silence_duration_ms": 400}).silence_s
        0.4
    """
    unknown = sorted(key for key, value in options.items() if key not in OPTIONS and value is not None)
    if unknown:
        raise ValueError(f"Unknown server_vad option(s) {unknown}; known: {', '.join(OPTIONS)}.")
    values = {}
    for option, name, scale in (
        ("threshold", "speech_threshold", 1),
        ("prefix_padding_ms", "pre_roll_s", 1000),
        ("silence_duration_ms", "silence_s", 1000),
    ):
        if options.get(option) is not None:
            value = options[option]
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"server_vad {option} must be a number, got {value!r}.")
            values[name] = value / scale
    if values.get("pre_roll_s", 0) < 0:
        raise ValueError("server_vad prefix_padding_ms must be >= 0.")
    return TurnSettings(**values)


class ServerVad:
    """Turns appended audio into speech started / stopped decisions (see the module docstring).

    Example:

    ```python
    >>> vad = ServerVad(turn_settings({"type": "server_vad", "silence_duration_ms": 500}))
    >>> for decision in vad.push(pcm16_samples, 24000):
    ...     print(decision.type, decision.ms)
    ```
    """

    def __init__(self, settings: TurnSettings, vad: VoiceActivity | None = None):
        self.settings = settings
        self.vad = vad if vad is not None else VoiceActivity()
        self.windows = AudioWindows()
        self.detector = TurnDetector(settings)
        self.position = 0  # 16 kHz samples pushed
        self.kept: list[np.ndarray] = []  # the windows a turn may still need
        self.kept_start = 0

    def push(self, audio: np.ndarray, rate: int) -> list[Decision]:
        decisions = []
        for window in self.windows.push(audio, rate):
            decision = self.detector.push(self.vad(window), level_db(window), self.position)
            self.kept.append(window)
            self.position += WINDOW
            if decision == "speech_started":
                decisions.append(Decision("speech_started", self._ms(self.detector.speech_start)))
            elif decision == "turn_ended":
                decisions.append(Decision("speech_stopped", self._ms(self.detector.speech_end), self._turn()))
            self._trim()
        return decisions

    def clear(self) -> None:
        """Forgets the turn being spoken (the session's audio clock goes on)."""
        self.vad.reset()
        self.windows = AudioWindows()
        self.detector = TurnDetector(self.settings)
        self.kept, self.kept_start = [], self.position

    def _ms(self, position: int) -> int:
        return position * 1000 // SAMPLING_RATE

    def _turn(self) -> np.ndarray:
        settings = self.settings
        start = max(0, self.detector.speech_start - settings.samples(settings.pre_roll_s))
        end = min(self.position, self.detector.speech_end + settings.samples(settings.tail_s))
        audio = np.concatenate(self.kept)
        return audio[max(0, start - self.kept_start) : end - self.kept_start].copy()

    def _trim(self) -> None:
        """Keeps every window while the user speaks, else just enough for the next turn's pre-roll."""
        if self.detector.speaking:
            return
        settings = self.settings
        keep = -(-settings.samples(settings.pre_roll_s + settings.min_speech_s) // WINDOW) + 1
        drop = max(0, len(self.kept) - keep)
        del self.kept[:drop]
        self.kept_start += drop * WINDOW


__all__ = ["Decision", "ServerVad", "turn_settings"]
