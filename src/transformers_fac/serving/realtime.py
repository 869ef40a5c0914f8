"""`WS /v1/realtime`: the part of the OpenAI Realtime API a voice agent needs, over the reply engine.

Client events: `session.update` (instructions, voice, output modalities, audio formats, turn detection on or off,
`max_output_tokens`, function `tools`, input audio transcription), `input_audio_buffer.append` / `commit` / `clear`,
`conversation.item.create` (user turns as text or audio, earlier assistant replies as text, function calls and their
outputs: `realtime_items`), `conversation.item.truncate` / `delete` / `retrieve`, `response.create`,
`response.cancel`.
Server events: `session.created` / `session.updated`, `input_audio_buffer.speech_started` / `speech_stopped` /
`committed` / `cleared`, `conversation.item.added` / `done` / `truncated` / `deleted` / `retrieved`,
`conversation.item.input_audio_transcription.delta` / `completed` / `failed`, `response.created`,
`response.output_item.added` / `done`, `response.content_part.added` / `done`, `response.output_audio.delta` (base64
PCM16, 24 kHz), `response.output_audio_transcript.delta` (or `response.output_text.delta` for text-only responses),
their `.done` events, `response.function_call_arguments.delta` / `done`, `response.done` and `error`.

Input audio is PCM16 mono at 24 kHz (`audio/pcm`, the API's format) or 16 kHz. Turn detection is off by default: the
client commits each turn (`input_audio_buffer.commit`) and asks for a reply (`response.create`); a commit while a
response is streaming cancels that response (barge-in). With `turn_detection: {"type": "server_vad"}` the server
finds the turns itself with the live conversation engine's voice activity detection (Silero VAD; `threshold`,
`prefix_padding_ms`, `silence_duration_ms`, `create_response`, `interrupt_response`): it sends
`input_audio_buffer.speech_started` (and cancels a reply in progress), `input_audio_buffer.speech_stopped`, commits
the turn and answers it. With `tools`, replies are written in the model's function-calling mode (as Chat Completions
with `tools`): a call arrives as a `function_call` output item; the client runs it, adds a `function_call_output`
item and asks for the next response.

Every session is bounded: each item and the input buffer hold at most `max_audio_seconds` of audio and
`max_text_chars` of text (checked before anything is decoded); the conversation keeps the last 8 user turns (as the
official demo) within the same audio and text budget, older items are dropped with `conversation.item.deleted`; a
session idle for `realtime_idle_seconds` is closed. A malformed event (not JSON, binary, nested too deep, wrong
types) gets an `error` event and the session goes on.

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

import numpy as np

from ..engine import (
    EngineClosed,
    QueueFull,
    ReplyRequest,
    RequestError,
)
from ..prompts import MAX_HISTORY_TURNS
from .audio_codec import checked_waveform, decode_pcm16
from .errors import APIError
from .json_limits import JSONLimitError, loads_bounded
from .prompting import Prompt, system_prompt
from .realtime_config import (
    SessionConfig,
    SessionError,
    instructions_option,
    mapping,
    max_tokens_option,
    parse_session_update,
)
from .realtime_items import Item, Limits, new_id, parse_item, pcm16_seconds
from .realtime_responses import ActiveResponse, ResponseWriter
from .realtime_transcription import transcribe
from .runtime import ServerRuntime
from .turn_detection import ServerVad

logger = logging.getLogger("transformers_fac.serving")

MIN_COMMIT_MS = 100
KEY_SUBPROTOCOL = "openai-insecure-api-key."


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
        self.limits = Limits(audio_seconds=settings.max_audio_seconds, text_chars=settings.max_text_chars)
        self.id = new_id("sess")
        self.buffer = bytearray()
        self.vad: ServerVad | None = None  # server turn detection, when on
        self.speech_item: str | None = None  # the item id of the turn being spoken (server turn detection)
        self.items: list[Item] = []
        self.response: ActiveResponse | None = None
        self.transcriptions: set[asyncio.Task] = set()
        self._send_lock = asyncio.Lock()

    # ------------------------------------------------------------------------------------------------ sending
    async def send(self, event: dict) -> None:
        event = {"event_id": new_id("event"), **event}
        async with self._send_lock:
            await self.websocket.send_text(json.dumps(event, ensure_ascii=False))

    async def send_error(
        self, message: str, code: str, param: str | None = None, event_id: str | None = None, kind: str | None = None
    ):
        error = {"type": kind or "invalid_request_error", "code": code, "message": message, "param": param}
        await self.send({"type": "error", "error": {**error, "event_id": event_id}})

    def session_object(self) -> dict:
        return self.config.session_object(self.id, self.runtime.settings.served_model_name)

    # ------------------------------------------------------------------------------------------------ main loop
    async def run(self) -> None:
        """Handles the client's events until it leaves or stays idle too long; then stops what is in progress."""
        from starlette.websockets import WebSocketDisconnect

        idle = self.runtime.settings.realtime_idle_seconds
        await self.send({"type": "session.created", "session": self.session_object()})
        try:
            while True:
                try:
                    message = await asyncio.wait_for(self.websocket.receive(), timeout=idle)
                except TimeoutError:
                    if self.response is not None or self.transcriptions:
                        continue  # busy answering: not idle
                    await self.send_error(
                        f"The session had no event for {idle:g} s and is closed.",
                        "session_expired",
                        kind="server_error",
                    )
                    await self.websocket.close(code=1000)
                    return
                if message["type"] == "websocket.disconnect":
                    return
                if message.get("text") is not None:
                    await self.handle(message["text"])
                else:
                    await self.send_error(
                        "Binary frames are not events: send each event as JSON text.", "invalid_event", kind=None
                    )
        except WebSocketDisconnect:
            pass
        finally:
            await self.cancel_response("client_disconnected")
            for task in list(self.transcriptions):
                task.cancel()
            await asyncio.gather(*self.transcriptions, return_exceptions=True)

    async def handle(self, raw: str) -> None:
        """One client event: its handler runs, or an `error` event says what is wrong (the session goes on)."""
        from starlette.websockets import WebSocketDisconnect

        event_id = None
        try:
            try:
                event = loads_bounded(raw)
            except JSONLimitError as error:
                raise SessionError(f"The event: {error}", "invalid_json") from None
            if not isinstance(event, dict) or not isinstance(event.get("type"), str):
                raise SessionError("An event must be a JSON object with a `type`.", "invalid_event")
            event_id = event.get("event_id") if isinstance(event.get("event_id"), str) else None
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
        except WebSocketDisconnect:
            raise
        except Exception:  # noqa: BLE001 - a bug must not end the session: logged, answered with an error event
            logger.exception("A realtime event could not be handled")
            await self.send_error(
                "The server failed to handle this event.", "server_error", None, event_id, "server_error"
            )

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
        audio = event.get("audio")
        seconds = pcm16_seconds(audio, self.config.input_rate, "audio")
        limit = self.limits.audio_seconds
        if self.vad is None and len(self.buffer) / 2 / self.config.input_rate + seconds > limit:
            raise SessionError(
                f"The input audio buffer would exceed {limit:g} s; commit or clear it first.",
                "input_audio_buffer_full",
                "audio",
            )
        if self.vad is not None and seconds > limit:
            raise SessionError(f"One append may hold at most {limit:g} s of audio.", "audio_too_long", "audio")
        try:
            data = base64.b64decode(audio, validate=True)
        except (binascii.Error, ValueError):
            raise SessionError("`audio` must be base64 PCM16.", param="audio") from None
        if self.vad is not None:
            await self.detect_turns(data)
            return
        self.buffer += data

    async def on_commit(self, event: dict) -> None:
        if self.vad is not None:
            raise SessionError(
                "Server turn detection is on: turns are committed when the user pauses. Set turn_detection to "
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
        await self.commit(new_id("item"), waveform)

    async def commit(self, item_id: str, waveform: np.ndarray) -> None:
        """Adds a user turn (16 kHz audio) to the conversation, and transcribes it when the session asks for it."""
        committed = {"type": "input_audio_buffer.committed", "item_id": item_id, "previous_item_id": self.last_item_id}
        await self.send(committed)
        item = Item(id=item_id, role="user", audio=waveform)
        await self.add_item(item)
        if self.config.transcription is not None:
            task = asyncio.create_task(self._transcribe_turn(item))
            self.transcriptions.add(task)
            task.add_done_callback(self.transcriptions.discard)

    async def _transcribe_turn(self, item: Item) -> None:
        item.transcript = await transcribe(item.id, item.audio, self.runtime, self.send) or None

    @property
    def last_item_id(self) -> str | None:
        return self.items[-1].id if self.items else None

    async def add_item(self, item: Item) -> None:
        """Appends `item` to the conversation and announces it (`conversation.item.added`, then `done`); older items
        beyond the session's history are dropped (`conversation.item.deleted`)."""
        previous = self.last_item_id
        self.items.append(item)
        for kind in ("conversation.item.added", "conversation.item.done"):
            await self.send({"type": kind, "previous_item_id": previous, "item": item.item_object()})
        dropped = None
        while len(self.items) > 1 and (self._over_budget() or (dropped and self.items[0].role != "user")):
            dropped = self.items.pop(0)  # (then the rest of its exchange: the history starts with a user turn)
            await self.send({"type": "conversation.item.deleted", "item_id": dropped.id})

    def _over_budget(self) -> bool:
        """Whether the conversation holds more than it may: 8 user turns, the audio and text limits."""
        turns = sum(1 for item in self.items if item.role == "user" and item.type == "message")
        audio = sum(item.audio_seconds for item in self.items)
        chars = sum(item.chars for item in self.items)
        return turns > MAX_HISTORY_TURNS or audio > self.limits.audio_seconds or chars > self.limits.text_chars

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
                self.speech_item = new_id("item")
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
            item_id, self.speech_item = self.speech_item or new_id("item"), None
            await self.send(
                {"type": "input_audio_buffer.speech_stopped", "audio_end_ms": decision.ms, "item_id": item_id}
            )
            await self.commit(item_id, checked_waveform(decision.audio, "input_audio_buffer"))
            if options["create_response"] and self.response is None:
                await self.on_response_create({})

    async def on_clear(self, event: dict) -> None:
        self.buffer.clear()
        if self.vad is not None:  # forget the turn being spoken too
            self.vad.clear()
            self.speech_item = None
        await self.send({"type": "input_audio_buffer.cleared"})

    # ------------------------------------------------------------------------------------------------ items
    async def on_item_create(self, event: dict) -> None:
        """`conversation.item.create`: a user turn (text and/or audio), an earlier assistant reply, a function call
        or a tool's output, appended."""
        if event.get("previous_item_id") not in (None, self.last_item_id):
            raise SessionError(
                "Items can only be appended: leave out `previous_item_id` or name the last item.",
                param="previous_item_id",
            )
        item = parse_item(event.get("item"), new_id("item"), self.config.input_rate, self.limits)
        if any(existing.id == item.id for existing in self.items):
            raise SessionError(f"An item with id {item.id!r} exists already.", param="item.id")
        await self.add_item(item)

    def find(self, event: dict) -> Item:
        item_id = event.get("item_id")
        for item in self.items:
            if item.id == item_id:
                return item
        raise SessionError(f"The conversation has no item {item_id!r}.", "item_not_found", "item_id")

    async def on_item_truncate(self, event: dict) -> None:
        """`conversation.item.truncate`: a spoken reply keeps only the text of the audio the listener heard."""
        item = self.find(event)
        audio_end_ms, index = event.get("audio_end_ms"), event.get("content_index", 0)
        if index != 0:
            raise SessionError("A reply has one content part: content_index must be 0.", param="content_index")
        if not isinstance(audio_end_ms, int) or isinstance(audio_end_ms, bool):
            raise SessionError("audio_end_ms must be an integer (milliseconds).", param="audio_end_ms")
        item.truncate(audio_end_ms)
        await self.send(
            {
                "type": "conversation.item.truncated",
                "item_id": item.id,
                "content_index": 0,
                "audio_end_ms": audio_end_ms,
            }
        )

    async def on_item_delete(self, event: dict) -> None:
        item = self.find(event)
        self.items.remove(item)
        await self.send({"type": "conversation.item.deleted", "item_id": item.id})

    async def on_item_retrieve(self, event: dict) -> None:
        await self.send({"type": "conversation.item.retrieved", "item": self.find(event).item_object()})

    # ------------------------------------------------------------------------------------------------ responses
    def prompt(self, instructions: str, spoken: bool, tools: list | None) -> Prompt:
        """The conversation (bounded by `add_item`) as a prompt."""
        turns: list[dict[str, str]] = []
        audios = []
        for item in self.items:
            content = item.content()
            if not content:  # a reply truncated to nothing
                continue
            if item.audio is not None:
                audios.append(item.audio)
            if turns and turns[-1]["role"] == item.role:
                turns[-1]["content"] += "\n" + content
            else:
                turns.append({"role": item.role, "content": content})
        system = {"role": "system", "content": system_prompt(spoken, tools, instructions)}
        return Prompt(messages=[system, *turns], audios=audios)

    async def on_response_create(self, event: dict) -> None:
        if self.runtime.draining:
            raise SessionError("The server is shutting down and takes no new responses.", "server_shutting_down")
        if self.response is not None:
            raise SessionError(
                "A response is already in progress; cancel it (response.cancel) or wait for response.done.",
                "conversation_already_has_active_response",
            )
        options = mapping(event.get("response"), "response")
        modalities = options.get("output_modalities") or self.config.output_modalities
        if not isinstance(modalities, list) or not set(map(str, modalities)) <= {"text", "audio"}:
            raise SessionError("output_modalities must be ['audio'] or ['text'].", param="response.output_modalities")
        tools = self.config.active_tools
        if "tool_choice" in options:
            if options["tool_choice"] not in ("auto", "none"):
                raise SessionError("tool_choice must be 'auto' or 'none'.", param="response.tool_choice")
            tools = tools if options["tool_choice"] == "auto" else None
        spoken = "audio" in modalities and not tools  # tool calling is the model's text mode
        output = mapping(mapping(options.get("audio"), "response.audio").get("output"), "response.audio.output")
        voice = output.get("voice", self.config.voice)
        voice = voice.get("id") if isinstance(voice, dict) else voice
        if voice is not None and not isinstance(voice, str):
            raise SessionError("The voice must be a voice name.", param="response.audio.output.voice")
        max_tokens = self.config.max_output_tokens
        if "max_output_tokens" in options:
            max_tokens = max_tokens_option(options["max_output_tokens"], "response.max_output_tokens", self.runtime)
        instructions = self.config.instructions
        if "instructions" in options:
            instructions = instructions_option(options["instructions"], "response.instructions", self.runtime)
        voice = self.runtime.resolve_voice(voice, "response.audio.output.voice") if spoken else None
        prompt = self.prompt(instructions, spoken, tools)
        request = ReplyRequest(
            prompt=prompt.render(self.runtime.loaded.processor),
            audios=prompt.audios,
            spoken=spoken,
            voice=voice,
            max_new_tokens=max_tokens,
            temperature=self.config.temperature,
        )
        loop = asyncio.get_running_loop()
        try:
            reply = await asyncio.to_thread(self.runtime.engine.submit, request, loop)
        except RequestError as error:
            raise SessionError(str(error), error.code or "invalid_value") from None
        except (QueueFull, EngineClosed) as error:
            raise SessionError(str(error), "server_busy") from None
        self.runtime.track(reply)
        active = ActiveResponse(id=new_id("resp"), reply=reply, spoken=spoken, tools=tools)
        self.response = active
        created = ResponseWriter(active, self).response_object("in_progress")
        await self.send({"type": "response.created", "response": created})
        active.task = asyncio.create_task(self.stream(active))

    async def stream(self, active: ActiveResponse) -> None:
        """Sends the response's events until its `response.done`; then the session takes new responses."""
        try:
            await ResponseWriter(active, self).run()
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
        "conversation.item.truncate": on_item_truncate,
        "conversation.item.delete": on_item_delete,
        "conversation.item.retrieve": on_item_retrieve,
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
