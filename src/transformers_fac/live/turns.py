"""Turn taking from voice activity: when the user starts speaking, and when their turn is over.

Pure logic on per-window speech probabilities and levels (no model, no clock of its own): positions are 16 kHz
sample indices of the audio fed so far, so the same audio always gives the same decisions.
"""

from dataclasses import dataclass

import numpy as np

from ..audio_io import SAMPLING_RATE
from .vad import WINDOW


@dataclass
class TurnSettings:
    """How the user's turns are detected.

    Args:
        silence_s: silence after speech that ends the user's turn (then the reply starts).
        max_turn_s: a turn still going after this long ends anyway (and is answered); speech that goes on
            without a pause is not a new turn.
        speech_threshold: VAD probability from which a window counts as speech; below `speech_threshold - 0.15`
            it counts as silence (between the two, the state does not change).
        min_speech_s: continuous speech needed before `speech_started` (and a barge-in); shorter sounds are ignored.
        pre_roll_s: audio kept before the detected start of speech (the VAD decides a little late).
        tail_s: audio kept after the last speech window.
        echo_threshold: while a reply plays and the client does not cancel echo, windows count as speech only with at
            least this VAD probability ...
        echo_min_level_db: ... and at least this RMS level (dBFS): the assistant's own voice coming back through the
            microphone is quieter than the user's.
    """

    silence_s: float = 0.6
    max_turn_s: float = 30.0
    speech_threshold: float = 0.5
    min_speech_s: float = 0.2
    pre_roll_s: float = 0.3
    tail_s: float = 0.1
    echo_threshold: float = 0.9
    echo_min_level_db: float = -35.0

    def __post_init__(self):
        for name in ("silence_s", "max_turn_s", "min_speech_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}.")
        for name in ("speech_threshold", "echo_threshold"):
            if not 0 < getattr(self, name) < 1:
                raise ValueError(f"{name} must be between 0 and 1, got {getattr(self, name)!r}.")

    def samples(self, seconds: float) -> int:
        return round(seconds * SAMPLING_RATE)


class TurnDetector:
    """Feeds on one window at a time; says when speech starts and when the turn ends.

    Example:

    ```python
    >>> detector = TurnDetector(TurnSettings())
    >>> events = [detector.push(p, -20.0, i * 512) for i, p in enumerate([0.9] * 10 + [0.0] * 20)]
    >>> [(e, i) for i, e in enumerate(events) if e]
    [('speech_started', 6), ('turn_ended', 28)]
    >>> detector.speech_start, detector.speech_end  # sample positions: first and last speech window
    (0, 5120)
    ```
    """

    def __init__(self, settings: TurnSettings):
        self.settings = settings
        self.speaking = False
        self.speech_start: int | None = None
        self.speech_end: int | None = None
        self._run_start: int | None = None
        self._silence_start: int | None = None
        self._rearm = False  # after a turn cut at `max_turn_s`, speech counts again only after some silence

    def end(self) -> bool:
        """Ends the turn being spoken now (the input ended); returns whether there was one."""
        speaking, self.speaking, self._run_start = self.speaking, False, None
        return speaking

    def push(self, probability: float, level: float, position: int, echo_risk: bool = False) -> str | None:
        """One window starting at sample `position`: returns `"speech_started"`, `"turn_ended"` or None.

        `echo_risk`: a reply is playing and the client does not cancel echo (stricter speech test).
        """
        settings = self.settings
        threshold = settings.echo_threshold if echo_risk else settings.speech_threshold
        speech = probability >= threshold and (not echo_risk or level >= settings.echo_min_level_db)
        silence = probability < settings.speech_threshold - 0.15 or (echo_risk and not speech)
        end = position + WINDOW
        if not self.speaking:
            if not speech or self._rearm:
                self._run_start = None
                self._rearm = self._rearm and not silence
                return None
            self._run_start = position if self._run_start is None else self._run_start
            if end - self._run_start < settings.samples(settings.min_speech_s):
                return None
            self.speaking, self.speech_start, self.speech_end = True, self._run_start, end
            self._silence_start = None
            return "speech_started"
        if speech:
            self.speech_end, self._silence_start = end, None
        elif silence and self._silence_start is None:
            self._silence_start = position
        silent_for = end - self._silence_start if self._silence_start is not None else 0
        too_long = end - self.speech_start >= settings.samples(settings.max_turn_s)
        if silent_for >= settings.samples(settings.silence_s) or too_long:
            self.speaking, self._run_start, self._rearm = False, None, too_long and self._silence_start is None
            return "turn_ended"
        return None


class TurnAudio:
    """The recent windows a turn may need (every window while the user speaks, else the pre-roll), and the audio of
    the turn that just ended: from `pre_roll_s` before its first speech window to `tail_s` after its last one.

    Example:

    ```python
    >>> audio = TurnAudio(TurnSettings())
    >>> for window in windows:
    ...     decision = detector.push(vad(window), level_db(window), audio.end)
    ...     audio.add(window)
    ...     if decision == "turn_ended":
    ...         turn = audio.turn(detector)
    ...     audio.trim(detector.speaking)
    ```
    """

    def __init__(self, settings: TurnSettings):
        self.settings = settings
        self.windows: list[np.ndarray] = []
        self.start = 0  # sample position of the first window kept
        self.end = 0  # sample position after the last window

    def add(self, window: np.ndarray) -> None:
        self.windows.append(window)
        self.end += len(window)

    def trim(self, speaking: bool) -> None:
        """Forgets what no turn can need any more (nothing while the user speaks)."""
        if speaking:
            return
        settings = self.settings
        keep = -(-settings.samples(settings.pre_roll_s + settings.min_speech_s) // WINDOW) + 1
        drop = max(0, len(self.windows) - keep)
        self.start += sum(len(window) for window in self.windows[:drop])
        del self.windows[:drop]

    def turn(self, detector: TurnDetector) -> np.ndarray:
        """The audio of the turn `detector` just ended (16 kHz float32)."""
        settings = self.settings
        start = max(0, detector.speech_start - settings.samples(settings.pre_roll_s))
        end = min(self.end, detector.speech_end + settings.samples(settings.tail_s))
        audio = np.concatenate(self.windows) if self.windows else np.zeros(0, np.float32)
        begin = max(0, start - self.start)
        return audio[begin : max(begin, end - self.start)].copy()

    def clear(self) -> None:
        """Forgets every window (the position goes on)."""
        self.windows, self.start = [], self.end


__all__ = ["TurnAudio", "TurnDetector", "TurnSettings"]
