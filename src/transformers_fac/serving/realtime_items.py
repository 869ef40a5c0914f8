"""Realtime conversation items: what `conversation.item.create` may add, checked, and the item objects sent back.

A client adds earlier turns or written turns to a session's conversation with `conversation.item.create`: a `message`
item with role `user` (parts `input_text` and `input_audio`, base64 PCM16 at the session's input rate) or
`assistant` (parts `output_text`, or `output_audio` of which the `transcript` is kept: the model reads its own earlier
replies as text); a `function_call_output` item (a tool's result, read by the model as a `<tool_response>` block); or
an earlier `function_call` item (read back as the model's `<tool_call>` block). Items are appended at the end of the
conversation; system messages are not supported (the instructions of `session.update` are the system prompt).

Limits are checked before anything is decoded: an item's audio from its base64 length, its text from its length.
"""

import base64
import binascii
import math
import uuid
from dataclasses import dataclass

import numpy as np

from ..prompts import AUDIO_TEMPLATE
from .audio_codec import checked_waveform, decode_pcm16
from .errors import APIError
from .prompting import tool_call_block, tool_response_block
from .realtime_config import SessionError

USER_PARTS = ("input_text", "input_audio")
ASSISTANT_PARTS = ("output_text", "text", "output_audio")
STEP_MS = 200  # one LLM step of a spoken reply: one text token and 0.2 s of speech


def new_id(prefix: str) -> str:
    """A fresh id of a session, item, response or event (`item_...`)."""
    return f"{prefix}_{uuid.uuid4().hex[:20]}"


@dataclass
class Limits:
    """What one item may hold: seconds of audio and characters of text."""

    audio_seconds: float
    text_chars: int


@dataclass
class Item:
    """A conversation item: a user's turn (16 kHz audio and/or text), an assistant's reply (its text; for a spoken
    reply also its text per LLM step and how much audio was sent, for `conversation.item.truncate`), a function call
    of the model or a tool's output."""

    id: str
    role: str
    audio: np.ndarray | None = None
    text: str = ""
    type: str = "message"
    call_id: str | None = None
    name: str | None = None
    arguments: str | None = None
    output: str | None = None
    spoken_steps: list[str] | None = None
    audio_ms: int = 0
    transcript: str | None = None  # of a user's audio, when the session transcribes its input

    def content(self) -> str:
        """The item as the chat template's message content (the user's audio as its placeholder)."""
        if self.type == "function_call":
            return tool_call_block(self.name, self.arguments)
        if self.type == "function_call_output":
            return tool_response_block(self.output)
        parts = [AUDIO_TEMPLATE] if self.audio is not None else []
        text = self.text.strip()
        return "\n".join(parts + ([text] if text else []))

    @property
    def audio_seconds(self) -> float:
        return 0.0 if self.audio is None else self.audio.size / 16000

    @property
    def chars(self) -> int:
        return len(self.text) + len(self.arguments or "") + len(self.output or "")

    def truncate(self, audio_end_ms: int) -> None:
        """Keeps what the listener heard of a spoken reply: its text up to the LLM step playing at `audio_end_ms`."""
        if self.spoken_steps is None:
            raise SessionError(
                f"Item {self.id!r} is not a spoken reply: only those can be truncated.", param="item_id"
            )
        if not 0 <= audio_end_ms <= self.audio_ms:
            raise SessionError(
                f"audio_end_ms must be between 0 and the reply's {self.audio_ms} ms of audio, got {audio_end_ms}.",
                param="audio_end_ms",
            )
        self.spoken_steps = self.spoken_steps[: math.ceil(audio_end_ms / STEP_MS)]
        self.text = "".join(self.spoken_steps)
        self.audio_ms = audio_end_ms

    def item_object(self, status: str = "completed") -> dict:
        """The item as `conversation.item.added` / `done` / `retrieved` report it."""
        base = {"id": self.id, "type": self.type, "object": "realtime.item", "status": status}
        if self.type == "function_call":
            return {**base, "call_id": self.call_id, "name": self.name, "arguments": self.arguments}
        if self.type == "function_call_output":
            return {**base, "call_id": self.call_id, "output": self.output}
        if self.role == "user":
            content = [{"type": "input_audio", "transcript": self.transcript}] if self.audio is not None else []
            content += [{"type": "input_text", "text": self.text}] if self.text else []
        elif self.spoken_steps is not None:
            content = [{"type": "output_audio", "transcript": self.text}]
        else:
            content = [{"type": "output_text", "text": self.text}]
        return {**base, "role": self.role, "content": content}


def parse_item(item, item_id: str, input_rate: int, limits: Limits) -> Item:
    """The `item` of a `conversation.item.create` event as an [`Item`] (id `item_id` unless it brings its own), or a
    `SessionError` naming what is wrong.

    Example:
        >>> parse_item({"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi"}]},
        ...            "item_1", 24000, Limits(audio_seconds=120, text_chars=1000)).content()
        'Hi'
    """
    if not isinstance(item, dict):
        raise SessionError("`item` must be an object.", param="item")
    kind = item.get("type", "message")
    new_id = item.get("id") or item_id
    if not isinstance(new_id, str):
        raise SessionError("`item.id` must be a string.", param="item.id")
    if kind in ("function_call", "function_call_output"):
        return _call_item(item, kind, new_id, limits)
    if kind != "message":
        raise SessionError(
            f"Item type {kind!r} is not supported; this server takes `message`, `function_call` and "
            "`function_call_output` items.",
            "unsupported_item",
            "item.type",
        )
    role = item.get("role")
    allowed = {"user": USER_PARTS, "assistant": ASSISTANT_PARTS}.get(role) if isinstance(role, str) else None
    if allowed is None:
        raise SessionError(
            f"Item role {role!r} is not supported: use `user` or `assistant` (system instructions go in "
            "session.update `instructions`).",
            param="item.role",
        )
    parts = item.get("content")
    if not isinstance(parts, list) or not parts:
        raise SessionError("`item.content` must be a non-empty list of parts.", param="item.content")
    texts, audios = [], []
    audio_seconds = 0.0
    for index, part in enumerate(parts):
        kind = part.get("type") if isinstance(part, dict) else None
        param = f"item.content[{index}]"
        if kind not in allowed:
            raise SessionError(f"{param}: a {role} part's type must be one of {', '.join(allowed)}.", param=param)
        if kind == "input_audio":
            seconds = pcm16_seconds(part.get("audio"), input_rate, param)
            audio_seconds += seconds
            if audio_seconds > limits.audio_seconds:
                raise SessionError(
                    f"{param}: the item holds {audio_seconds:.1f} s of audio; this server takes at most "
                    f"{limits.audio_seconds:g} s per item.",
                    "audio_too_long",
                    param,
                )
            audios.append(_pcm16_part(part["audio"], input_rate, param))
        else:
            text = part.get("transcript" if kind == "output_audio" else "text")
            if not isinstance(text, str):
                raise SessionError(f"{param}: the part needs its text as a string.", param=param)
            texts.append(text.strip())
    text = "\n".join(text for text in texts if text)
    check_text(len(text), limits, "item.content")
    if not text and not audios:
        raise SessionError("The item holds no text and no audio.", param="item.content")
    audio = np.concatenate(audios) if audios else None
    return Item(id=new_id, role=role, audio=audio, text=text)


def _call_item(item: dict, kind: str, item_id: str, limits: Limits) -> Item:
    """A `function_call` (the model's, from an earlier turn) or `function_call_output` (a tool's result) item."""
    call_id = item.get("call_id")
    if not isinstance(call_id, str) or not call_id:
        raise SessionError(f"A {kind} item needs its `call_id` (a string).", param="item.call_id")
    if kind == "function_call_output":
        output = item.get("output")
        if not isinstance(output, str):
            raise SessionError("A function_call_output item needs its `output` as a string.", param="item.output")
        check_text(len(output), limits, "item.output")
        return Item(id=item_id, role="user", type=kind, call_id=call_id, output=output)
    name, arguments = item.get("name"), item.get("arguments", "{}")
    if not isinstance(name, str) or not name or not isinstance(arguments, str):
        raise SessionError("A function_call item needs `name` and `arguments` (JSON) as strings.", param="item.name")
    check_text(len(name) + len(arguments), limits, "item.arguments")
    return Item(id=item_id, role="assistant", type=kind, call_id=call_id, name=name, arguments=arguments)


def function_call_item(item_id: str, call: dict) -> Item:
    """The model's call (OpenAI chat shape, from `split_tool_calls`) as a conversation item."""
    function = call["function"]
    return Item(
        id=item_id,
        role="assistant",
        type="function_call",
        call_id=call["id"],
        name=function["name"],
        arguments=function["arguments"],
    )


def check_text(chars: int, limits: Limits, param: str) -> None:
    if chars > limits.text_chars:
        raise SessionError(
            f"{param} holds {chars} characters; this server takes at most {limits.text_chars} per item.",
            "context_length_exceeded",
            param,
        )


def pcm16_seconds(data, input_rate: int, param: str) -> float:
    """Seconds of base64 PCM16 audio, from its length alone (before decoding it)."""
    if not isinstance(data, str):
        raise SessionError(f"{param}: `audio` must be base64 PCM16.", "invalid_audio", param)
    return len(data) * 3 / 4 / 2 / input_rate


def _pcm16_part(data: str, input_rate: int, param: str) -> np.ndarray:
    try:
        samples = decode_pcm16(base64.b64decode(data, validate=True))
        return checked_waveform((samples, input_rate), param)
    except (binascii.Error, ValueError, TypeError):
        raise SessionError(f"{param}: `audio` must be base64 PCM16.", "invalid_audio", param) from None
    except APIError as error:
        raise SessionError(error.message, error.code or "invalid_audio", param) from None


__all__ = ["Item", "Limits", "function_call_item", "new_id", "parse_item", "pcm16_seconds"]
