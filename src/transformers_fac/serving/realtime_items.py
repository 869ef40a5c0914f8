"""Realtime conversation items: what `conversation.item.create` may add, checked, and the item objects sent back.

A client adds earlier turns or written turns to a session's conversation with `conversation.item.create`: a `message`
item with role `user` (parts `input_text` and `input_audio`, base64 PCM16 at the session's input rate) or
`assistant` (parts `output_text`, or `output_audio` of which the `transcript` is kept: the model reads its own earlier
replies as text). Items are appended at the end of the conversation; function-call items and system messages are not
supported (the instructions of `session.update` are the system prompt).
"""

import base64
import binascii
from dataclasses import dataclass

import numpy as np

from ..prompts import AUDIO_TEMPLATE
from .audio_codec import checked_waveform, decode_pcm16
from .errors import APIError
from .realtime_config import SessionError

USER_PARTS = ("input_text", "input_audio")
ASSISTANT_PARTS = ("output_text", "text", "output_audio")


@dataclass
class Item:
    """A conversation item: a user's turn (16 kHz audio and/or text), or an assistant's reply text."""

    id: str
    role: str
    audio: np.ndarray | None = None
    text: str = ""

    def content(self) -> str:
        """The item as the chat template's message content (the user's audio as its placeholder)."""
        parts = [AUDIO_TEMPLATE] if self.audio is not None else []
        return "\n".join(parts + ([self.text] if self.text else []))

    def item_object(self) -> dict:
        """The item as `conversation.item.added` / `done` report it."""
        if self.role == "user":
            content = [{"type": "input_audio", "transcript": None}] if self.audio is not None else []
            content += [{"type": "input_text", "text": self.text}] if self.text else []
        else:
            content = [{"type": "output_text", "text": self.text}]
        return {
            "id": self.id,
            "type": "message",
            "object": "realtime.item",
            "status": "completed",
            "role": self.role,
            "content": content,
        }


def parse_item(item, item_id: str, input_rate: int) -> Item:
    """The `item` of a `conversation.item.create` event as an [`Item`] (id `item_id` unless it brings its own), or a
    `SessionError` naming what is wrong.

    Example:
        >>> parse_item({"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi"}]},
        ...            "item_1", 24000).content()
        'Hi'
    """
    if not isinstance(item, dict):
        raise SessionError("`item` must be an object.", param="item")
    if item.get("type", "message") != "message":
        raise SessionError(
            f"Item type {item.get('type')!r} is not supported; this server takes `message` items.",
            "unsupported_item",
            "item.type",
        )
    role = item.get("role")
    allowed = {"user": USER_PARTS, "assistant": ASSISTANT_PARTS}.get(role)
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
    for index, part in enumerate(parts):
        kind = part.get("type") if isinstance(part, dict) else None
        param = f"item.content[{index}]"
        if kind not in allowed:
            raise SessionError(f"{param}: a {role} part's type must be one of {', '.join(allowed)}.", param=param)
        if kind == "input_audio":
            audios.append(_pcm16_part(part.get("audio"), input_rate, param))
        else:
            text = part.get("transcript" if kind == "output_audio" else "text")
            if not isinstance(text, str):
                raise SessionError(f"{param}: the part needs its text as a string.", param=param)
            texts.append(text.strip())
    text = "\n".join(text for text in texts if text)
    if not text and not audios:
        raise SessionError("The item holds no text and no audio.", param="item.content")
    audio = np.concatenate(audios) if audios else None
    return Item(id=item.get("id") or item_id, role=role, audio=audio, text=text)


def _pcm16_part(data, input_rate: int, param: str) -> np.ndarray:
    try:
        samples = decode_pcm16(base64.b64decode(data or "", validate=True))
        return checked_waveform((samples, input_rate), param)
    except (binascii.Error, ValueError, TypeError):
        raise SessionError(f"{param}: `audio` must be base64 PCM16.", "invalid_audio", param) from None
    except APIError as error:
        raise SessionError(error.message, error.code or "invalid_audio", param) from None


__all__ = ["Item", "parse_item"]
