"""Realtime sessions: what `session.update` may change, checked, and the session object sent back.

Besides instructions, voice, modalities, formats and turn detection, a session may carry `tools` (function tools,
`{"type": "function", "name", "description", "parameters"}`) with `tool_choice` `auto` or `none`: the model then
answers in its function-calling (text) mode, as Chat Completions does with `tools`; and `audio.input.transcription`
(any `model` name: the transcript is the served model's own speech recognition, in its text mode). `temperature`
(0 to 2, 0 = greedy, as in Chat Completions; the beta Realtime API had it) sets how replies are sampled.
"""

import dataclasses
import json
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
    tools: list[dict] = field(default_factory=list)  # as the session reports them (the Realtime API's flat shape)
    tool_choice: str = "auto"
    transcription: dict | None = None  # `audio.input.transcription`; None: off
    temperature: float | None = None  # sampling of replies (0: greedy); None: the checkpoint's own settings

    @property
    def active_tools(self) -> list[dict] | None:
        """The tools in the Chat Completions shape the function-calling prompt takes (None: no tools)."""
        if not self.tools or self.tool_choice == "none":
            return None
        return [
            {"type": "function", "function": {k: v for k, v in tool.items() if k != "type"}} for tool in self.tools
        ]

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
            "tools": self.tools,
            "tool_choice": self.tool_choice,
            "temperature": self.temperature,
            "audio": {
                "input": {
                    "format": {**pcm, "rate": self.input_rate},
                    "turn_detection": self.turn_detection,
                    "transcription": self.transcription,
                },
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
        updates["instructions"] = instructions_option(session["instructions"], "session.instructions", runtime)
    if "output_modalities" in session:
        modalities = session["output_modalities"] or ["audio"]
        if not isinstance(modalities, list) or not set(map(str, modalities)) <= {"text", "audio"}:
            raise SessionError("output_modalities must be ['audio'] or ['text'].", param="session.output_modalities")
        if "audio" in modalities and not runtime.voices:
            raise SessionError("This server has no voices: use output_modalities ['text'].")
        updates["output_modalities"] = ["audio"] if "audio" in modalities else ["text"]
    if "max_output_tokens" in session:
        updates["max_output_tokens"] = max_tokens_option(
            session["max_output_tokens"], "session.max_output_tokens", runtime
        )
    if "temperature" in session:
        value = session["temperature"]
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 2
        ):
            raise SessionError("temperature must be a number from 0 (greedy) to 2.", param="session.temperature")
        updates["temperature"] = value
    if "tools" in session:
        updates["tools"] = _tools(session["tools"], runtime)
    if "tool_choice" in session:
        if session["tool_choice"] not in ("auto", "none"):
            raise SessionError(
                "tool_choice must be 'auto' or 'none': the model decides itself whether to call a tool.",
                param="session.tool_choice",
            )
        updates["tool_choice"] = session["tool_choice"]
    audio = mapping(session.get("audio"), "session.audio")
    audio_in = mapping(audio.get("input"), "session.audio.input")
    audio_out = mapping(audio.get("output"), "session.audio.output")
    if "format" in audio_in:
        updates["input_rate"] = _input_rate(mapping(audio_in["format"], "session.audio.input.format"))
    if "turn_detection" in audio_in:
        updates["turn_detection"], vad = _turn_detection(
            audio_in["turn_detection"], runtime.settings.max_audio_seconds
        )
    if "transcription" in audio_in:
        transcription = audio_in["transcription"]
        if transcription is not None and not isinstance(transcription, dict):
            raise SessionError("transcription must be null or an object.", param="session.audio.input.transcription")
        updates["transcription"] = transcription
    if "format" in audio_out:
        output = mapping(audio_out["format"], "session.audio.output.format")
        if output.get("type", "audio/pcm") != "audio/pcm" or output.get("rate", 24000) != 24000:
            raise SessionError("Output audio is audio/pcm at 24000 Hz.", param="session.audio.output.format")
    if "voice" in audio_out:
        voice = audio_out["voice"]
        voice = voice.get("id") if isinstance(voice, dict) else voice
        if not isinstance(voice, str):
            raise SessionError("The voice must be a voice name.", param="session.audio.output.voice")
        runtime.resolve_voice(voice, "session.audio.output.voice")  # unknown voice -> error
        updates["voice"] = voice
    return updates, vad


def mapping(value: Any, param: str) -> dict:
    """An optional JSON object of an event (missing or null: empty), else a `SessionError` naming it."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SessionError(f"{param} must be an object.", param=param)
    return value


def instructions_option(value: Any, param: str, runtime: ServerRuntime) -> str:
    """`instructions`: a string within the server's text limit."""
    if value is not None and not isinstance(value, str):
        raise SessionError(f"{param} must be a string.", param=param)
    limit = runtime.settings.max_text_chars
    if value and len(value) > limit:
        raise SessionError(
            f"{param} holds {len(value)} characters; this server takes at most {limit}.",
            "context_length_exceeded",
            param,
        )
    return value or ""


def _tools(tools: Any, runtime: ServerRuntime) -> list[dict]:
    """`tools`: function tools in the Realtime API's flat shape, within the server's text limit."""
    if not isinstance(tools, list):
        raise SessionError("tools must be a list of function tools.", param="session.tools")
    for index, tool in enumerate(tools):
        if (
            not isinstance(tool, dict)
            or tool.get("type", "function") != "function"
            or not isinstance(tool.get("name"), str)
        ):
            raise SessionError(
                f"tools[{index}] must be {{'type': 'function', 'name': ..., 'description': ..., 'parameters': ...}}.",
                param=f"session.tools[{index}]",
            )
    instructions_option(json.dumps(tools, ensure_ascii=False), "session.tools", runtime)
    return [{**tool, "type": "function"} for tool in tools]


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
    rate = audio_format.get("rate", 24000)
    if audio_format.get("type", "audio/pcm") != "audio/pcm" or rate not in INPUT_RATES:
        raise SessionError(
            "Input audio must be audio/pcm (16-bit mono) at 24000 or 16000 Hz.", param="session.audio.input.format"
        )
    return rate


def _turn_detection(value: Any, max_audio_seconds: float) -> tuple[dict | None, ServerVad | None]:
    """`turn_detection` of session.update -> (what the session reports, a fresh voice activity detector whose turns
    end within the server's audio limit, with their padding)."""
    param = "session.audio.input.turn_detection"
    if value is None:
        return None, None
    kind = value.get("type") if isinstance(value, dict) else None
    if kind != "server_vad":
        raise SessionError(f"turn_detection must be null or {{'type': 'server_vad', ...}}, got {kind!r}.", param=param)
    try:
        settings = turn_settings(value)
        longest = max_audio_seconds - settings.pre_roll_s - settings.tail_s
        settings = dataclasses.replace(
            settings, max_turn_s=min(settings.max_turn_s, max(longest, settings.min_speech_s))
        )
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


__all__ = [
    "SessionConfig",
    "SessionError",
    "instructions_option",
    "mapping",
    "max_tokens_option",
    "parse_session_update",
]
