"""Turn handling of the demo, without any Gradio: checking the question audio, building the system prompt, keeping
the chat shown to the user and the conversation sent to the model in step, stop and barge-in, function calling.

`respond` and `call_tools` take the model side as two callables (`speak`, `write`; see `engine.Engine`), so they can
be tested with fakes, and yield or return plain values that `app.py` maps onto Gradio components.
"""

import io
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from session_files import SessionFiles

from transformers_fac.audio_io import SAMPLING_RATE, AudioInputError, is_silent, load_audio, validate_waveform
from transformers_fac.conversation import FunAudioChatConversation
from transformers_fac.engine import AudioDelta, TextDelta
from transformers_fac.prompts import (
    S2M_SYSTEM_PROMPT,
    XIAOYUN_PERSONA,
    function_calling_prompt,
    parse_tool_calls,
    reply_system_prompt,
)

SPEECH = "Speech + text"
TEXT_ONLY = "Text only"
MODES = [SPEECH, TEXT_ONLY]

XIAOYUN = "小云 Xiaoyun (official spoken assistant)"
PLAIN = "None (official mode prompt only)"
PERSONAS = {
    XIAOYUN: XIAOYUN_PERSONA,
    PLAIN: "",
    "Concise English assistant": "Always answer in English, in one or two short, friendly sentences.",
    "Patient language tutor": (
        "You are a patient language tutor. Answer in simple words, then gently point out one mistake the user made, "
        "if any."
    ),
}

EXAMPLE_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Get the current weather of a city.",
            "parameters": {
                "type": "object",
                "properties": {"location": {"type": "string", "description": "City name, e.g. 杭州"}},
                "required": ["location"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "set_alarm",
            "description": "Set an alarm clock.",
            "parameters": {
                "type": "object",
                "properties": {"time": {"type": "string", "description": "24-hour time, e.g. 07:30"}},
                "required": ["time"],
            },
        },
    },
]

STOPPED = " … (stopped)"
STOPPED_NOTICE = "Stopped."
NO_TOOL_CALL = "The reply calls no tool."
LOCK_TIMEOUT = 30.0
MIN_QUESTION_S = 0.5
"""A shorter recording holds no question (a click of the record button)."""
NOT_AUDIO = "That file is not audio I can read. Upload a WAV, MP3, FLAC, OGG or M4A file, or use the microphone."


class FriendlyError(ValueError):
    """A problem with what the user gave, with a message meant for the user."""


def system_prompt(mode: str, persona: str | None, free_prompt: str | None = None) -> str:
    """The official prompt of the reply mode, then the persona of the preset, then the user's own prompt.

    Speech with the Xiaoyun preset and no free prompt gives exactly the official spoken prompt (`SPOKEN_S2M_PROMPT`).
    """
    if mode not in MODES:
        raise FriendlyError(f"Unknown reply mode {mode!r}: choose {' or '.join(MODES)}.")
    if persona is not None and persona not in PERSONAS:
        raise FriendlyError(f"Unknown persona {persona!r}: choose one of {', '.join(PERSONAS)}.")
    parts = [reply_system_prompt("audio" if mode == SPEECH else "text")]
    parts += [PERSONAS.get(persona or PLAIN, ""), (free_prompt or "").strip()]
    return " ".join(part for part in parts if part)


def check_question(audio: Any, max_seconds: float) -> np.ndarray:
    """The user's question (a file path or a Gradio `(rate, int16 array)`) as 16 kHz mono, or a `FriendlyError`."""
    if audio is None or (isinstance(audio, str) and not audio.strip()):
        raise FriendlyError("Record a question with the microphone or upload an audio file first.")
    try:
        waveform = load_audio(audio, validate=False)
    except AudioInputError as error:
        raise FriendlyError(NOT_AUDIO) from error
    seconds = waveform.size / SAMPLING_RATE
    if seconds > max_seconds:
        raise FriendlyError(
            f"The recording is {seconds:.1f} s long; this demo takes questions of up to {max_seconds:g} s. "
            "Please ask a shorter question."
        )
    if 0 < seconds < MIN_QUESTION_S:
        raise FriendlyError(
            f"The recording lasts {seconds:.1f} s: too short to hold a question. Please ask again (up to "
            f"{max_seconds:g} s)."
        )
    if waveform.size == 0 or is_silent(waveform):
        raise FriendlyError(
            "The recording is silent: I could not hear a question. Check the microphone and try again."
        )
    try:
        return validate_waveform(waveform)
    except AudioInputError as error:
        raise FriendlyError(f"That audio cannot be used: {error}") from error


def wav_bytes(samples: np.ndarray, rate: int) -> bytes:
    """A small 16-bit WAV file: the unit in which the spoken reply streams to the browser."""
    buffer = io.BytesIO()
    sf.write(buffer, samples, rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def audio_message(role: str, path: str) -> dict:
    return {"role": role, "content": {"path": path, "mime_type": "audio/wav"}}


@dataclass
class Update:
    """What one step of a turn changes on the page.

    Args:
        history: the chat as shown (openai-style messages; audio as `{"path", "mime_type"}` file contents).
        audio: the next WAV chunk of the spoken reply, if any.
        notice: a message for the user ("" when all is well).
    """

    history: list[dict]
    audio: bytes | None = None
    notice: str = ""


@dataclass
class DemoSession:
    """One browser tab's chat: the conversation sent to the model and the chat shown, kept in step, the audio files
    of the chat (those of the last `audio_turns` turns), plus the stop switch of the reply in progress. Lives in a
    `gr.State`.

    Args:
        max_turns: the turns the model sees.
        audio_turns: the turns whose audio stays in the chat shown (older turns keep their text only).
        files_dir: the folder of this session's audio files (default: a new temporary folder).
    """

    max_turns: int = 8
    audio_turns: int = 8
    files_dir: Path | None = None
    conversation: FunAudioChatConversation = field(init=False)
    history: list[dict] = field(default_factory=list)

    def __post_init__(self):
        self.conversation = FunAudioChatConversation(system_prompt=S2M_SYSTEM_PROMPT, max_turns=self.max_turns)
        self.files = SessionFiles(self.files_dir, max_turns=self.audio_turns)
        self._stop = threading.Event()
        self._lock = threading.Lock()

    def __deepcopy__(self, memo) -> "DemoSession":
        # gr.State deep-copies its initial value for every new session: give each one a fresh, empty session.
        return DemoSession(max_turns=self.max_turns, audio_turns=self.audio_turns, files_dir=self.files_dir)

    def new_audio_turn(self) -> None:
        """Makes room for a turn's audio: the oldest turn beyond `audio_turns` loses its files and audio messages."""
        dropped = self.files.new_turn()
        if dropped:
            self.history[:] = [message for message in self.history if _audio_path(message) not in dropped]

    def begin_turn(self) -> threading.Event:
        """Stops the reply in progress (barge-in) and returns the stop switch of a new turn."""
        self._stop.set()
        self._stop = threading.Event()
        return self._stop

    def stop(self) -> None:
        """Stops the reply in progress, if any (the stop button, or the user starting to record)."""
        self._stop.set()

    def reset(self) -> None:
        """A new conversation: stops the reply in progress and forgets everything."""
        self.stop()
        locked = self._lock.acquire(timeout=LOCK_TIMEOUT)  # let the stopped reply finish recording itself
        try:
            self.conversation.reset()
            self.history.clear()
            self.files.clear()
        finally:
            if locked:
                self._lock.release()

    def close(self) -> None:
        """The session has ended: stops the reply in progress, forgets the conversation and deletes the session's
        files and folder (a reconnecting tab starts afresh)."""
        self.reset()
        self.files.close()


def _audio_path(message: dict) -> str | None:
    content = message.get("content")
    return content.get("path") if isinstance(content, dict) else None


def respond(
    session: DemoSession,
    speak: Callable[..., Iterator[TextDelta | AudioDelta]],
    processor,
    audio: Any,
    mode: str,
    voice: str | None,
    persona: str | None,
    free_prompt: str | None,
    max_seconds: float,
) -> Iterator[Update]:
    """One turn: checks the question, then streams the reply (text growing in the chat, audio chunks) as `Update`s.

    `speak(inputs, spoken, voice)` yields the engine's `TextDelta` / `AudioDelta` events (see `engine.Engine.speak`). Bad input, a stop and a model
    error all end the turn with a message in `notice`; the session stays usable.
    """
    try:
        prompt = system_prompt(mode, persona, free_prompt)
        waveform = check_question(audio, max_seconds)
    except FriendlyError as error:
        yield Update(list(session.history), notice=str(error))
        return
    stop = session.begin_turn()
    if not session._lock.acquire(timeout=LOCK_TIMEOUT):  # a barge-in waits until the reply it stopped is recorded
        yield Update(list(session.history), notice="The previous reply is still finishing; please try again.")
        return
    try:
        yield from _reply(session, stop, speak, processor, waveform, mode == SPEECH, voice, prompt)
    finally:
        session._lock.release()


def _reply(session, stop, speak, processor, waveform, spoken, voice, prompt) -> Iterator[Update]:
    chat, history = session.conversation, session.history
    chat.system_prompt = prompt
    chat.add_user_audio(waveform)
    session.new_audio_turn()
    history.append(audio_message("user", session.files.save(waveform, SAMPLING_RATE)))
    answer = {"role": "assistant", "content": "…"}
    history.append(answer)
    yield Update(list(history))
    text, pieces, rate = "", [], 24000
    stream = None
    try:
        stream = speak(chat.model_inputs(processor), spoken, voice if spoken else None)
        for chunk in stream:
            if stop.is_set():
                break
            if chunk.audio is not None:
                pieces.append(chunk.audio)
                rate = chunk.sampling_rate
                yield Update(list(history), audio=wav_bytes(chunk.audio, rate))
            elif chunk.text:
                text += chunk.text
                answer["content"] = text
                yield Update(list(history))
    except Exception as error:  # noqa: BLE001 - any model failure becomes a message; the app stays up
        chat.turns.pop()
        answer["content"] = f"⚠️ Sorry, the reply failed: {error}"
        yield Update(list(history), notice=f"The model failed: {error}")
        return
    finally:
        if stream is not None and hasattr(stream, "close"):
            stream.close()  # stops generating after a stop, a barge-in or a closed page
        if chat.turns and chat.turns[-1].reply is None:  # keep the conversation usable in every case
            if text.strip() or pieces:
                chat.add_assistant_reply(text)
            else:
                chat.turns.pop()  # nothing was said: keep the question out of the model's history
    stopped = stop.is_set()
    answer["content"] = (text.strip() or "(no words)") + (STOPPED if stopped else "")
    if pieces:
        history.append(audio_message("assistant", session.files.save(np.concatenate(pieces), rate)))
    yield Update(list(history), notice=STOPPED_NOTICE if stopped else "")


@dataclass
class ToolsResult:
    """The function-calling tab's answer: the raw reply and the tool calls parsed from it."""

    reply: str = ""
    calls: list[dict] = field(default_factory=list)
    notice: str = ""


def parse_tools(tools_json: str) -> list[dict]:
    """Tool definitions pasted by the user: a JSON list of objects (or one object), else a `FriendlyError`."""
    try:
        tools = json.loads(tools_json or "")
    except json.JSONDecodeError as error:
        raise FriendlyError(
            f"The tool definitions are not valid JSON (line {error.lineno}, column {error.colno}: {error.msg})."
        ) from error
    tools = [tools] if isinstance(tools, dict) else tools
    if not isinstance(tools, list) or not tools or not all(isinstance(tool, dict) for tool in tools):
        raise FriendlyError("The tool definitions must be a JSON list of objects (one per tool), or one object.")
    return tools


def call_tools(write: Callable[[Any], str], processor, audio: Any, tools_json: str, max_seconds: float) -> ToolsResult:
    """A spoken request with tool definitions -> the model's text reply and its parsed tool calls (one turn)."""
    try:
        tools = parse_tools(tools_json)
        waveform = check_question(audio, max_seconds)
    except FriendlyError as error:
        return ToolsResult(notice=str(error))
    chat = FunAudioChatConversation(system_prompt=function_calling_prompt(tools))
    chat.add_user_audio(waveform)
    try:
        reply = write(chat.model_inputs(processor))
    except Exception as error:  # noqa: BLE001 - shown to the user; the app stays up
        return ToolsResult(notice=f"The model failed: {error}")
    calls = parse_tool_calls(reply)
    return ToolsResult(reply=reply, calls=calls, notice="" if calls else NO_TOOL_CALL)
