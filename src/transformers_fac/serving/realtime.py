"""`WS /v1/realtime`: the part of the OpenAI Realtime API a voice agent needs, over the reply engine.

Client events: `session.update` (instructions, voice, output modalities, audio formats, turn detection on or off,
`max_output_tokens`), `input_audio_buffer.append` / `commit` / `clear`, `conversation.item.create` (user turns as text
or audio, earlier assistant replies as text: `realtime_items`), `response.create`, `response.cancel`.
Server events: `session.created` / `session.updated`, `input_audio_buffer.speech_started` / `speech_stopped` /
`committed` / `cleared`, `conversation.item.added` / `done` (user turns, written items, replies), `response.created`,
`response.output_item.added` / `done`, `response.output_audio.delta` (base64 PCM16, 24 kHz),
`response.output_audio_transcript.delta` (or `response.output_text.delta` for text-only responses), their `.done`
events, `response.done` and `error`.

Input audio is PCM16 mono at 24 kHz (`audio/pcm`, the API's format) or 16 kHz. Turn detection is off by default: the
client commits each turn (`input_audio_buffer.commit`) and asks for a reply (`response.create`); a commit while a
response is streaming cancels that response (barge-in). With `turn_detection: {"type": "server_vad"}` the server
finds the turns itself with the live conversation engine's voice activity detection (Silero VAD; `threshold`,
`prefix_padding_ms`, `silence_duration_ms`, `create_response`, `interrupt_response`): it sends
`input_audio_buffer.speech_started` (and cancels a reply in progress), `input_audio_buffer.speech_stopped`, commits
the turn and answers it. The conversation keeps the last 8 exchanges, as the official demo.

Example (the `openai` client):

```python
>>> async with client.realtime.connect(model="fun-audio-chat") as connection:
...     await connection.input_audio_buffer.append(audio=base64_pcm16)
...     await connection.input_audio_buffer.commit()
...     await connection.response.create()
...     async for event in connection:
...         if event.type == "response.output_audio.delta": player.write(base64.b64decode(event.delta))
...         if event.type == "response.done": break
```
"""

import asyncio
import base64
import binascii
import json
import logging
import uuid
from dataclasses import dataclass

import numpy as np

from ..engine import (
    AudioDelta,
    EngineClosed,
    QueueFull,
    Reply,
    ReplyDone,
    ReplyFailed,
    ReplyRequest,
    RequestError,
    TextDelta,
)
from ..prompts import AUDIO_TEMPLATE, MAX_HISTORY_TURNS
from .audio_codec import checked_waveform, decode_pcm16, pcm16
from .errors import APIError
from .prompting import Prompt, system_prompt
from .realtime_config import SessionConfig, SessionError, max_tokens_option, parse_session_update
from .realtime_items import Item, parse_item
from .runtime import ServerRuntime
from .turn_detection import ServerVad

logger = logging.getLogger("transformers_fac.serving")

MIN_COMMIT_MS = 100
KEY_SUBPROTOCOL = "openai-insecure-api-key."


def _id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:20]}"


@dataclass
class ActiveResponse:
    id: str
    item_id: str
    reply: Reply
    spoken: bool
    task: asyncio.Task | None = None
    cancel_reason: str | None = None


class RealtimeSession:
    """One WebSocket client's session (see the module docstring)."""

    def __init__(self, websocket, runtime: ServerRuntime):
        self.websocket = websocket
        self.runtime = runtime
        settings = runtime.settings
        voice = next(iter(runtime.voices), None)
        self.config = SessionConfig(voice=voice, max_output_tokens=settings.max_new_tokens)
        if voice is None:
            self.config.output_modalities = ["text"]
        self.id = _id("sess")
        self.buffer = bytearray()
        self.vad: ServerVad | None = None  # server turn detection, when on
        self.speech_item: str | None = None  # the item id of the turn being spoken (server turn detection)
        self.items: list[Item] = []
        self.response: ActiveResponse | None = None
        self._send_lock = asyncio.Lock()

    # ------------------------------------------------------------------------------------------------ sending
    async def send(self, event: dict) -> None:
        event = {"event_id": _id("event"), **event}
        async with self._send_lock:
            await self.websocket.send_text(json.dumps(event, ensure_ascii=False))

    async def send_error(self, message: str, code: str, param: str | None = None, event_id: str | None = None):
        error = {"type": "invalid_request_error", "code": code, "message": message, "param": param}
        await self.send({"type": "error", "error": {**error, "event_id": event_id}})

    def session_object(self) -> dict:
        return self.config.session_object(self.id, self.runtime.settings.served_model_name)

    # ------------------------------------------------------------------------------------------------ main loop
    async def run(self) -> None:
        from starlette.websockets import WebSocketDisconnect

        await self.send({"type": "session.created", "session": self.session_object()})
        try:
            while True:
                await self.handle(await self.websocket.receive_text())
        except WebSocketDisconnect:
            pass
        finally:
            await self.cancel_response("client_disconnected")

    async def handle(self, raw: str) -> None:
        event_id = None
        try:
            try:
                event = json.loads(raw)
            except json.JSONDecodeError:
                raise SessionError("The event is not valid JSON.", "invalid_json") from None
            if not isinstance(event, dict) or not isinstance(event.get("type"), str):
                raise SessionError("An event must be a JSON object with a `type`.", "invalid_event")
            event_id = event.get("event_id")
            handler = self.HANDLERS.get(event["type"])
            if handler is None:
                raise SessionError(
                    f"Unsupported event type {event['type']!r}; this server handles: {', '.join(self.HANDLERS)}.",
                    "unknown_event",
                    "type",
                )
            await handler(self, event)
        except SessionError as error:
            await self.send_error(str(error), error.code, error.param, event_id)
        except APIError as error:
            await self.send_error(error.message, error.code or "invalid_value", error.param, event_id)

    # ------------------------------------------------------------------------------------------------ session
    async def on_session_update(self, event: dict) -> None:
        updates, vad = parse_session_update(event.get("session"), self.runtime, self.vad)
        for name, value in updates.items():
            setattr(self.config, name, value)
        if vad is not self.vad:
            self.vad, self.speech_item = vad, None
            self.buffer.clear()
        await self.send({"type": "session.updated", "session": self.session_object()})

    # ------------------------------------------------------------------------------------------------ input audio
    async def on_append(self, event: dict) -> None:
        try:
            data = base64.b64decode(event.get("audio") or "", validate=True)
        except (binascii.Error, ValueError):
            raise SessionError("`audio` must be base64 PCM16.", param="audio") from None
        if self.vad is not None:
            await self.detect_turns(data)
            return
        limit = int(self.runtime.settings.max_audio_seconds * self.config.input_rate) * 2
        if len(self.buffer) + len(data) > limit:
            raise SessionError(
                f"The input audio buffer would exceed {self.runtime.settings.max_audio_seconds:g} s; commit or clear "
                "it first.",
                "input_audio_buffer_full",
                "audio",
            )
        self.buffer += data

    async def on_commit(self, event: dict) -> None:
        if self.vad is not None:
            raise SessionError(
                "Server turn detection is on: turns are committed when the speaker pauses. Set turn_detection to "
                "null to commit them yourself.",
                "turn_detection_on",
            )
        samples_per_ms = self.config.input_rate // 1000
        if len(self.buffer) < 2 * samples_per_ms * MIN_COMMIT_MS:
            raise SessionError(
                f"The input audio buffer holds {len(self.buffer) // 2 // samples_per_ms} ms; commit at least "
                f"{MIN_COMMIT_MS} ms of audio.",
                "input_audio_buffer_commit_empty",
            )
        try:
            samples = decode_pcm16(bytes(self.buffer))
        except ValueError as error:
            raise SessionError(str(error), "invalid_audio") from None
        waveform = checked_waveform((samples, self.config.input_rate), "input_audio_buffer")
        self.buffer.clear()
        await self.cancel_response("turn_detected")  # a new user turn interrupts the reply in progress
        await self.commit(_id("item"), waveform)

    async def commit(self, item_id: str, waveform: np.ndarray) -> None:
        """Adds a user turn (16 kHz audio) to the conversation."""
        committed = {"type": "input_audio_buffer.committed", "item_id": item_id, "previous_item_id": self.last_item_id}
        await self.send(committed)
        await self.add_item(Item(id=item_id, role="user", audio=waveform))

    @property
    def last_item_id(self) -> str | None:
        return self.items[-1].id if self.items else None

    async def add_item(self, item: Item) -> None:
        """Appends `item` to the conversation and announces it (`conversation.item.added`, then `done`)."""
        previous = self.last_item_id
        self.items.append(item)
        for kind in ("conversation.item.added", "conversation.item.done"):
            await self.send({"type": kind, "previous_item_id": previous, "item": item.item_object()})

    async def detect_turns(self, data: bytes) -> None:
        """Server turn detection: speech started (a reply in progress is interrupted) and stopped (the turn is
        committed and, with `create_response`, answered)."""
        try:
            samples = decode_pcm16(data)
        except ValueError as error:
            raise SessionError(str(error), "invalid_audio") from None
        options = self.config.turn_detection
        for decision in await asyncio.to_thread(self.vad.push, samples, self.config.input_rate):
            if decision.type == "speech_started":
                self.speech_item = _id("item")
                await self.send(
                    {
                        "type": "input_audio_buffer.speech_started",
                        "audio_start_ms": decision.ms,
                        "item_id": self.speech_item,
                    }
                )
                if options["interrupt_response"]:
                    await self.cancel_response("turn_detected")
                continue
            item_id, self.speech_item = self.speech_item or _id("item"), None
            await self.send(
                {"type": "input_audio_buffer.speech_stopped", "audio_end_ms": decision.ms, "item_id": item_id}
            )
            await self.commit(item_id, checked_waveform(decision.audio, "input_audio_buffer"))
            if options["create_response"] and self.response is None:
                await self.on_response_create({})

    async def on_item_create(self, event: dict) -> None:
        """`conversation.item.create`: a user turn (text and/or audio) or an earlier assistant reply, appended."""
        if event.get("previous_item_id") not in (None, self.last_item_id):
            raise SessionError(
                "Items can only be appended: leave out `previous_item_id` or name the last item.",
                param="previous_item_id",
            )
        item = parse_item(event.get("item"), _id("item"), self.config.input_rate)
        if any(existing.id == item.id for existing in self.items):
            raise SessionError(f"An item with id {item.id!r} exists already.", param="item.id")
        await self.add_item(item)

    async def on_clear(self, event: dict) -> None:
        self.buffer.clear()
        if self.vad is not None:  # forget the turn being spoken too
            self.vad.clear()
            self.speech_item = None
        await self.send({"type": "input_audio_buffer.cleared"})

    # ------------------------------------------------------------------------------------------------ responses
    def prompt(self, instructions: str, spoken: bool) -> Prompt:
        """The conversation so far (last `MAX_HISTORY_TURNS` exchanges) as a prompt."""
        turns: list[dict[str, str]] = []
        audios = []
        for item in self.items:
            content = item.content()
            if item.audio is not None:
                audios.append(item.audio)
            if turns and turns[-1]["role"] == item.role:
                turns[-1]["content"] += "\n" + content
            else:
                turns.append({"role": item.role, "content": content})
        starts = [index for index, turn in enumerate(turns) if turn["role"] == "user"]
        if len(starts) > MAX_HISTORY_TURNS:
            cut = starts[-MAX_HISTORY_TURNS]
            audios = audios[sum(turn["content"].count(AUDIO_TEMPLATE) for turn in turns[:cut]) :]
            turns = turns[cut:]
        system = {"role": "system", "content": system_prompt(spoken, None, instructions)}
        return Prompt(messages=[system, *turns], audios=audios)

    async def on_response_create(self, event: dict) -> None:
        if self.response is not None:
            raise SessionError(
                "A response is already in progress; cancel it (response.cancel) or wait for response.done.",
                "conversation_already_has_active_response",
            )
        options = event.get("response") or {}
        modalities = options.get("output_modalities") or self.config.output_modalities
        spoken = "audio" in modalities
        voice = ((options.get("audio") or {}).get("output") or {}).get("voice", self.config.voice)
        max_tokens = self.config.max_output_tokens
        if "max_output_tokens" in options:
            max_tokens = max_tokens_option(options["max_output_tokens"], "response.max_output_tokens", self.runtime)
        instructions = options.get("instructions", self.config.instructions) or ""
        speaker = self.runtime.speaker(voice, "response.audio.output.voice") if spoken else None
        prompt = self.prompt(instructions, spoken)
        processor = self.runtime.loaded.processor
        request = ReplyRequest(
            prompt=prompt.render(processor),
            audios=prompt.audios,
            spoken=spoken,
            speaker=speaker,
            max_new_tokens=max_tokens,
        )
        loop = asyncio.get_running_loop()
        try:
            reply = await asyncio.to_thread(self.runtime.engine.submit, request, loop)
        except RequestError as error:
            raise SessionError(str(error), error.code or "invalid_value") from None
        except (QueueFull, EngineClosed) as error:
            raise SessionError(str(error), "server_busy") from None
        active = ActiveResponse(id=_id("resp"), item_id=_id("item"), reply=reply, spoken=spoken)
        self.response = active
        await self.send({"type": "response.created", "response": self.response_object(active, "in_progress")})
        item = self.output_item(active, "in_progress")
        await self.send(
            {"type": "response.output_item.added", "response_id": active.id, "output_index": 0, "item": item}
        )
        active.task = asyncio.create_task(self.stream(active))

    @staticmethod
    def output_item(active: ActiveResponse, status: str, text: str = "") -> dict:
        """The response's one output item (the assistant message) in `status`."""
        part = {"type": "output_audio", "transcript": text} if active.spoken else {"type": "output_text", "text": text}
        return {
            "id": active.item_id,
            "type": "message",
            "object": "realtime.item",
            "role": "assistant",
            "status": {"in_progress": "in_progress", "completed": "completed"}.get(status, "incomplete"),
            "content": [part] if status != "in_progress" else [],
        }

    def response_object(self, active: ActiveResponse, status: str, text: str = "", done=None, reason=None) -> dict:
        response = {
            "id": active.id,
            "object": "realtime.response",
            "status": status,
            "status_details": None if reason is None else {"type": status, "reason": reason},
            "output": [] if status == "in_progress" else [self.output_item(active, status, text)],
            "output_modalities": ["audio"] if active.spoken else ["text"],
            "conversation_id": self.id,
        }
        if done is not None:
            response["usage"] = {
                "input_tokens": done.prompt_tokens,
                "output_tokens": done.completion_tokens,
                "total_tokens": done.prompt_tokens + done.completion_tokens,
                "input_token_details": {"audio_tokens": done.prompt_audio_tokens},
                "output_token_details": {"audio_tokens": done.speech_codes, "text_tokens": done.completion_tokens},
            }
        return response

    async def stream(self, active: ActiveResponse) -> None:
        """Forwards the reply's deltas until it is done or cancelled, then `response.done`."""
        where = {"response_id": active.id, "item_id": active.item_id, "output_index": 0, "content_index": 0}
        text_event = "response.output_audio_transcript" if active.spoken else "response.output_text"
        text, done, status, reason = [], None, "failed", None
        try:
            async for event in active.reply:
                if isinstance(event, TextDelta):
                    text.append(event.text)
                    if active.cancel_reason is None:
                        await self.send({"type": f"{text_event}.delta", **where, "delta": event.text})
                elif isinstance(event, AudioDelta) and active.cancel_reason is None:
                    delta = base64.b64encode(pcm16(event.audio)).decode("ascii")
                    await self.send({"type": "response.output_audio.delta", **where, "delta": delta})
                elif isinstance(event, ReplyDone):
                    done = event
                    if active.cancel_reason is not None or event.finish_reason == "cancelled":
                        status, reason = "cancelled", active.cancel_reason or "client_cancelled"
                    elif event.finish_reason == "length":
                        status, reason = "incomplete", "max_output_tokens"
                    else:
                        status = "completed"
                elif isinstance(event, ReplyFailed):
                    logger.warning("A realtime response failed: %s", event.message)
            transcript = "".join(text)
            if active.spoken:
                await self.send({"type": "response.output_audio.done", **where})
            final = "transcript" if active.spoken else "text"
            await self.send({"type": f"{text_event}.done", **where, final: transcript})
            item = self.output_item(active, status, transcript)
            await self.send(
                {"type": "response.output_item.done", "response_id": active.id, "output_index": 0, "item": item}
            )
            if transcript.strip():  # the reply joins the conversation as text (what the model reads back)
                await self.add_item(Item(id=active.item_id, role="assistant", text=transcript.strip()))
            await self.send(
                {"type": "response.done", "response": self.response_object(active, status, transcript, done, reason)}
            )
        except Exception:  # noqa: BLE001 - the client went away while we were sending
            active.reply.cancel()
        finally:
            if self.response is active:
                self.response = None

    async def on_response_cancel(self, event: dict) -> None:
        active = self.response
        if active is None or (event.get("response_id") not in (None, active.id)):
            raise SessionError("There is no response in progress to cancel.", "response_cancel_not_active")
        await self.cancel_response("client_cancelled")

    async def cancel_response(self, reason: str) -> None:
        """Stops the response in progress (its row stops at the next step) and waits for its `response.done`."""
        active = self.response
        if active is None:
            return
        active.cancel_reason = reason
        active.reply.cancel()
        if active.task is not None:
            await asyncio.shield(active.task)

    HANDLERS = {
        "session.update": on_session_update,
        "input_audio_buffer.append": on_append,
        "input_audio_buffer.commit": on_commit,
        "input_audio_buffer.clear": on_clear,
        "conversation.item.create": on_item_create,
        "response.create": on_response_create,
        "response.cancel": on_response_cancel,
    }


def _client_key(websocket) -> str | None:
    """The API key of a WebSocket client: `Authorization: Bearer` or the browser subprotocol
    `openai-insecure-api-key.<key>`."""
    scheme, _, token = (websocket.headers.get("authorization") or "").partition(" ")
    if scheme.lower() == "bearer" and token:
        return token.strip()
    for protocol in websocket.scope.get("subprotocols") or []:
        if protocol.startswith(KEY_SUBPROTOCOL):
            return protocol[len(KEY_SUBPROTOCOL) :]
    return None


async def serve(websocket, runtime: ServerRuntime) -> None:
    """Accepts an authorised client (else closes with 1008 before accepting: HTTP 403) and runs its session."""
    if not runtime.key_matches(_client_key(websocket)) or runtime.draining:
        await websocket.close(code=1008)
        return
    offered = websocket.scope.get("subprotocols") or []
    await websocket.accept(subprotocol="realtime" if "realtime" in offered else None)
    await RealtimeSession(websocket, runtime).run()


__all__ = ["RealtimeSession", "serve"]
