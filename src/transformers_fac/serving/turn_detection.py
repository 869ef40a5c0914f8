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
from ..live.turns import TurnAudio
from ..live.vad import level_db

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
        self.audio = TurnAudio(settings)  # its position is the session's audio clock (16 kHz samples)

    def push(self, audio: np.ndarray, rate: int) -> list[Decision]:
        decisions = []
        for window in self.windows.push(audio, rate):
            decision = self.detector.push(self.vad(window), level_db(window), self.audio.end)
            self.audio.add(window)
            if decision == "speech_started":
                decisions.append(Decision("speech_started", self._ms(self.detector.speech_start)))
            elif decision == "turn_ended":
                turn = self.audio.turn(self.detector)
                decisions.append(Decision("speech_stopped", self._ms(self.detector.speech_end), turn))
            self.audio.trim(self.detector.speaking)
        return decisions

    def clear(self) -> None:
        """Forgets the turn being spoken (the session's audio clock goes on)."""
        self.vad.reset()
        self.windows = AudioWindows()
        self.detector = TurnDetector(self.settings)
        self.audio.clear()

    @staticmethod
    def _ms(position: int) -> int:
        return position * 1000 // SAMPLING_RATE


__all__ = ["Decision", "ServerVad", "turn_settings"]
