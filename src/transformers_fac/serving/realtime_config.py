"""Realtime sessions: what `session.update` may change, checked, and the session object sent back."""

from dataclasses import dataclass, field
from typing import Any

from .runtime import ServerRuntime
from .turn_detection import ServerVad, turn_settings

INPUT_RATES = (24000, 16000)


class SessionError(Exception):
    """A client event the session cannot honour; sent back as an `error` event, the session goes on."""

    def __init__(self, message: str, code: str = "invalid_value", param: str | None = None):
        super().__init__(message)
        self.code = code
        self.param = param


@dataclass
class SessionConfig:
    """What `session.update` can change."""

    voice: str | None
    max_output_tokens: int
    instructions: str = ""
    output_modalities: list[str] = field(default_factory=lambda: ["audio"])
    input_rate: int = 24000
    turn_detection: dict | None = None  # as sent back in session events; None: the client commits its turns

    def session_object(self, session_id: str, model: str) -> dict:
        """The session as `session.created` / `session.updated` report it."""
        pcm = {"type": "audio/pcm", "rate": 24000}
        return {
            "type": "realtime",
            "object": "realtime.session",
            "id": session_id,
            "model": model,
            "output_modalities": self.output_modalities,
            "instructions": self.instructions,
            "max_output_tokens": self.max_output_tokens,
            "audio": {
                "input": {"format": {**pcm, "rate": self.input_rate}, "turn_detection": self.turn_detection},
                "output": {"format": pcm, "voice": self.voice},
            },
        }


def parse_session_update(session: Any, runtime: ServerRuntime, vad: ServerVad | None) -> tuple[dict, ServerVad | None]:
    """A `session.update`'s `session` -> the `SessionConfig` fields to set and the turn detector to use (`vad` when
    turn detection is not changed). Raises `SessionError` before anything changes."""
    if not isinstance(session, dict):
        raise SessionError("session.update needs a `session` object.", param="session")
    if session.get("type", "realtime") != "realtime":
        raise SessionError("Only realtime sessions are supported (session.type 'realtime').", param="session.type")
    updates: dict[str, Any] = {}
    if "instructions" in session:
        updates["instructions"] = str(session["instructions"] or "")
    if "output_modalities" in session:
        modalities = session["output_modalities"] or ["audio"]
        if not set(modalities) <= {"text", "audio"}:
            raise SessionError("output_modalities must be ['audio'] or ['text'].", param="session.output_modalities")
        if "audio" in modalities and not runtime.voices:
            raise SessionError("This server has no voices: use output_modalities ['text'].")
        updates["output_modalities"] = ["audio"] if "audio" in modalities else ["text"]
    if "max_output_tokens" in session:
        updates["max_output_tokens"] = max_tokens_option(
            session["max_output_tokens"], "session.max_output_tokens", runtime
        )
    audio = session.get("audio") or {}
    audio_in, audio_out = audio.get("input") or {}, audio.get("output") or {}
    if "format" in audio_in:
        updates["input_rate"] = _input_rate(audio_in["format"])
    if "turn_detection" in audio_in:
        updates["turn_detection"], vad = _turn_detection(audio_in["turn_detection"])
    if "format" in audio_out:
        output = audio_out["format"] or {}
        if output.get("type", "audio/pcm") != "audio/pcm" or output.get("rate", 24000) != 24000:
            raise SessionError("Output audio is audio/pcm at 24000 Hz.", param="session.audio.output.format")
    if "voice" in audio_out:
        voice = audio_out["voice"]
        voice = voice.get("id") if isinstance(voice, dict) else voice
        runtime.speaker(voice, "session.audio.output.voice")  # unknown voice -> error
        updates["voice"] = voice
    return updates, vad


def max_tokens_option(value: Any, param: str, runtime: ServerRuntime) -> int:
    """`max_output_tokens` (an integer or "inf") within the server's limit."""
    limit = runtime.settings.max_new_tokens
    if value == "inf" or value is None:
        return limit
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise SessionError(f"{param} must be a positive integer or 'inf'.", param=param)
    if value > limit:
        raise SessionError(f"{param} is {value}; this server generates at most {limit}.", param=param)
    return value


def _input_rate(audio_format: dict) -> int:
    audio_format = audio_format or {}
    rate = audio_format.get("rate", 24000)
    if audio_format.get("type", "audio/pcm") != "audio/pcm" or rate not in INPUT_RATES:
        raise SessionError(
            "Input audio must be audio/pcm (16-bit mono) at 24000 or 16000 Hz.", param="session.audio.input.format"
        )
    return rate


def _turn_detection(value: Any) -> tuple[dict | None, ServerVad | None]:
    """`turn_detection` of session.update -> (what the session reports, a fresh voice activity detector)."""
    param = "session.audio.input.turn_detection"
    if value is None:
        return None, None
    kind = value.get("type") if isinstance(value, dict) else None
    if kind != "server_vad":
        raise SessionError(f"turn_detection must be null or {{'type': 'server_vad', ...}}, got {kind!r}.", param=param)
    try:
        settings = turn_settings(value)
        vad = ServerVad(settings)
    except ValueError as error:
        raise SessionError(str(error), param=param) from None
    except ImportError as error:
        raise SessionError(str(error), "turn_detection_unavailable", param) from None
    reported = {
        "type": "server_vad",
        "threshold": settings.speech_threshold,
        "prefix_padding_ms": round(settings.pre_roll_s * 1000),
        "silence_duration_ms": round(settings.silence_s * 1000),
        "create_response": value.get("create_response", True) is not False,
        "interrupt_response": value.get("interrupt_response", True) is not False,
    }
    return reported, vad


__all__ = ["SessionConfig", "SessionError", "max_tokens_option", "parse_session_update"]
