"""Realtime responses: the events of one response, from `response.created`'s response object to `response.done`.

A response is streamed as one assistant message (`response.output_item.added`, `response.content_part.added`, audio and
transcript deltas, their `.done` events, `response.content_part.done`, `response.output_item.done`), or, when the
session has tools, sent once the reply is complete: its text as a message and each call as a `function_call` item
(`response.function_call_arguments.delta` / `.done`). Replies join the conversation (`Session.add_item`); a spoken
one keeps its text per LLM step for `conversation.item.truncate`.
"""

import asyncio
import base64
import logging
from dataclasses import dataclass, field
from typing import Protocol

from ..engine import AudioDelta, Reply, ReplyDone, ReplyFailed, TextDelta
from .audio_codec import pcm16
from .prompting import split_tool_calls
from .realtime_items import Item, function_call_item, new_id
from .runtime import ServerRuntime

logger = logging.getLogger("transformers_fac.serving")


class Session(Protocol):
    """What a response needs of its session."""

    id: str
    runtime: ServerRuntime

    async def send(self, event: dict) -> None: ...

    async def send_error(
        self, message: str, code: str, param: str | None = None, event_id: str | None = None, kind: str | None = None
    ) -> None: ...

    async def add_item(self, item: Item) -> None: ...


@dataclass
class ActiveResponse:
    """A response in progress: its reply, its output items so far, and why it was stopped (if it was)."""

    id: str
    reply: Reply
    spoken: bool
    tools: list | None
    task: asyncio.Task | None = None
    cancel_reason: str | None = None
    output: list[dict] = field(default_factory=list)


class ResponseWriter:
    """Sends the events of `active` to its session (see the module docstring).

    Example:

    ```python
    >>> active = ActiveResponse(id=new_id("resp"), reply=reply, spoken=True, tools=None)
    >>> await ResponseWriter(active, session).run()  # ... response.done
    ```
    """

    def __init__(self, active: ActiveResponse, session: Session):
        self.active = active
        self.session = session

    def response_object(self, status: str, done=None, details=None) -> dict:
        response = {
            "id": self.active.id,
            "object": "realtime.response",
            "status": status,
            "status_details": details,
            "output": self.active.output,
            "output_modalities": ["audio"] if self.active.spoken else ["text"],
            "conversation_id": self.session.id,
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

    async def run(self) -> None:
        """Forwards the reply (streamed as a message, or with tools as its message and function calls once complete),
        then `response.done`."""
        done, failure = None, None
        try:
            if self.active.tools:
                done, failure = await self._tool_reply()
            else:
                done, failure = await self._message_reply()
            status, details = self._outcome(done, failure)
            if status == "failed":
                await self.session.send_error(
                    details["error"]["message"], details["error"]["code"], kind="server_error"
                )
            await self.session.send({"type": "response.done", "response": self.response_object(status, done, details)})
        except Exception:  # noqa: BLE001 - the client went away while we were sending
            self.active.reply.cancel()
        finally:
            self.session.runtime.untrack(self.active.reply)

    def _outcome(self, done: ReplyDone | None, failure: str | None) -> tuple[str, dict | None]:
        """The response's status and status details."""
        code = "server_error"
        if done is not None and done.finish_reason == "cancelled" and self.session.runtime.cut:
            failure, code = "The server shut down before this response was finished.", "server_shutting_down"
        if failure is not None or done is None:
            error = {"type": "server_error", "code": code, "message": failure or "The response failed."}
            return "failed", {"type": "failed", "error": error}
        if self.active.cancel_reason is not None or done.finish_reason == "cancelled":
            return "cancelled", {"type": "cancelled", "reason": self.active.cancel_reason or "client_cancelled"}
        if done.finish_reason == "length":
            return "incomplete", {"type": "incomplete", "reason": "max_output_tokens"}
        return "completed", None

    async def _message_reply(self) -> tuple[ReplyDone | None, str | None]:
        """Streams the reply as one assistant message (audio and transcript, or text); it joins the conversation."""
        item_id = new_id("item")
        where = {"response_id": self.active.id, "item_id": item_id, "output_index": 0, "content_index": 0}
        placed = {"response_id": self.active.id, "output_index": 0}
        text_event = "response.output_audio_transcript" if self.active.spoken else "response.output_text"
        part = {"type": "audio", "transcript": ""} if self.active.spoken else {"type": "text", "text": ""}
        in_progress = {"id": item_id, "type": "message", "object": "realtime.item", "status": "in_progress"}
        await self.session.send(
            {
                "type": "response.output_item.added",
                **placed,
                "item": {**in_progress, "role": "assistant", "content": []},
            }
        )
        await self.session.send({"type": "response.content_part.added", **where, "part": part})
        steps, audio_samples, done, failure = [], 0, None, None
        async for event in self.active.reply:
            if isinstance(event, TextDelta):
                steps.append(event.text)
                if self.active.cancel_reason is None:
                    await self.session.send({"type": f"{text_event}.delta", **where, "delta": event.text})
            elif isinstance(event, AudioDelta) and self.active.cancel_reason is None:
                audio_samples += event.audio.size
                delta = base64.b64encode(pcm16(event.audio)).decode("ascii")
                await self.session.send({"type": "response.output_audio.delta", **where, "delta": delta})
            elif isinstance(event, ReplyDone):
                done = event
            elif isinstance(event, ReplyFailed):
                logger.warning("A realtime response failed: %s", event.message)
                failure = event.message
        transcript = "".join(steps)
        if self.active.spoken:
            await self.session.send({"type": "response.output_audio.done", **where})
        final = "transcript" if self.active.spoken else "text"
        await self.session.send({"type": f"{text_event}.done", **where, final: transcript})
        await self.session.send({"type": "response.content_part.done", **where, "part": {**part, final: transcript}})
        item = Item(id=item_id, role="assistant", text=transcript)
        if self.active.spoken:  # what was heard of it can be truncated later
            item.spoken_steps, item.audio_ms = steps, audio_samples * 1000 // 24000
        status = "completed" if done is not None and done.finish_reason in ("stop", "length") else "incomplete"
        self.active.output.append(item.item_object(status))
        await self.session.send({"type": "response.output_item.done", **placed, "item": self.active.output[-1]})
        if transcript.strip() or item.audio_ms:  # the reply joins the conversation as text (what the model reads back)
            await self.session.add_item(item)
        return done, failure

    async def _tool_reply(self) -> tuple[ReplyDone | None, str | None]:
        """A function-calling reply, once complete: its text (if any) as a message, then each call as a
        `function_call` item (its arguments in one delta); calls join the conversation."""
        done, failure = None, None
        async for event in self.active.reply:
            if isinstance(event, ReplyDone):
                done = event
            elif isinstance(event, ReplyFailed):
                failure = event.message
        if done is None or done.finish_reason == "cancelled" or self.active.cancel_reason is not None:
            return done, failure
        text, calls = split_tool_calls(done.raw_text)
        text = text if calls else done.text.strip()
        if text:
            item = Item(id=new_id("item"), role="assistant", text=text)
            await self._written_message(item)
        for call in calls:
            item = function_call_item(new_id("item"), call)
            placed = {"response_id": self.active.id, "output_index": len(self.active.output)}
            where = {**placed, "item_id": item.id, "call_id": item.call_id}
            added = {**item.item_object("in_progress"), "arguments": ""}
            await self.session.send({"type": "response.output_item.added", **placed, "item": added})
            await self.session.send(
                {"type": "response.function_call_arguments.delta", **where, "delta": item.arguments}
            )
            await self.session.send(
                {
                    "type": "response.function_call_arguments.done",
                    **where,
                    "name": item.name,
                    "arguments": item.arguments,
                }
            )
            self.active.output.append(item.item_object())
            await self.session.send({"type": "response.output_item.done", **placed, "item": self.active.output[-1]})
            await self.session.add_item(item)
        return done, failure

    async def _written_message(self, item: Item) -> None:
        """A complete text message as one response output (added, its one text part and delta, done)."""
        placed = {"response_id": self.active.id, "output_index": len(self.active.output)}
        where = {**placed, "item_id": item.id, "content_index": 0}
        empty = {**item.item_object("in_progress"), "content": []}
        await self.session.send({"type": "response.output_item.added", **placed, "item": empty})
        await self.session.send({"type": "response.content_part.added", **where, "part": {"type": "text", "text": ""}})
        await self.session.send({"type": "response.output_text.delta", **where, "delta": item.text})
        await self.session.send({"type": "response.output_text.done", **where, "text": item.text})
        await self.session.send(
            {"type": "response.content_part.done", **where, "part": {"type": "text", "text": item.text}}
        )
        self.active.output.append(item.item_object())
        await self.session.send({"type": "response.output_item.done", **placed, "item": self.active.output[-1]})
        await self.session.add_item(item)


__all__ = ["ActiveResponse", "ResponseWriter"]
