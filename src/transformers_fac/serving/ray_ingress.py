"""The front of `fac-serve --ray`: a light ASGI app (no model) that passes each request to a model replica through a
Ray Serve `DeploymentHandle` and answers in the OpenAI error shape when that replica goes away.

Ray's HTTP proxy routes every request to this ingress; the ingress calls the model deployment's `forward` (a
streaming handle call) with the request's scope and body, and relays the ASGI messages the replica's app sends back.
When the replica dies (killed, out of memory) or none can take the request, Ray raises in the handle call
(`RayActorError` / `ActorDiedError`, `DeploymentUnavailableError`, `ReplicaUnavailableError`, `BackPressureError`),
and the client gets, instead of Ray's plain-text 500 or a dropped connection:

- a request whose response had not started: a 503 `{"error": {...}}` with `Retry-After` (non-streamed responses are
  held until complete, so a reply cut mid-way is a 503 too);
- a chat completion stream that had started: an `{"error": {...}}` server-sent event, then the stream ends;
- a Realtime session: an `error` event, then the socket closes with 1011 (1013 before the session had started).

At the end (`drain`, on SIGTERM) new requests get a 503, the ones in flight may finish for `--drain-seconds` and the
rest are cut (their handle calls cancelled) with a 503 or an `error` event, as plain `fac-serve` does.

Realtime client events reach the replica through an `Inbox` actor (one per ingress replica, started with it, no
CPU reserved): the replica pulls them in order, so the session runs unchanged on the model replica.

Example (what `ray_serve.application` builds):

    >>> ingress = RayIngress(settings, model_handle)   # doctest: +SKIP
    >>> await ingress(scope, receive, send)            # doctest: +SKIP
"""

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from .app import read_body
from .errors import APIError, unavailable
from .extras import require
from .realtime_items import new_id
from .settings import ServerSettings

logger = logging.getLogger("transformers_fac.serving")

SCOPE_KEYS = (  # what of an ASGI scope crosses to the replica (the rest is the ingress server's own)
    "type",
    "asgi",
    "http_version",
    "method",
    "scheme",
    "path",
    "raw_path",
    "root_path",
    "query_string",
    "headers",
    "client",
    "server",
    "subprotocols",
)
REPLICA_LOST = (
    "The model replica answering this request stopped before it was answered (it died and Ray is starting a new one, "
    "or the server is shutting down); retry."
)
SHUTTING_DOWN = "The server is shutting down and takes no new requests."
CUT_ANSWER_SECONDS = 5.0  # after the drain time, how long the cut requests have to send their answers
GONE = {"type": "websocket.disconnect", "code": 1006}  # what the replica's app reads once the ingress is gone


class Inbox:
    """A Ray actor holding each Realtime session's client messages until its replica pulls them, in order."""

    def __init__(self):
        self.queues: defaultdict[str, asyncio.Queue] = defaultdict(asyncio.Queue)

    async def put(self, session: str, message: dict) -> None:
        self.queues[session].put_nowait(message)

    async def get(self, session: str) -> dict:
        return await self.queues[session].get()

    async def drop(self, session: str) -> None:
        self.queues.pop(session, None)


def wire_scope(scope: dict) -> dict:
    """The parts of an ASGI `scope` a replica needs to serve the request (all picklable)."""
    return {key: scope[key] for key in SCOPE_KEYS if key in scope}


def body_receiver(body: bytes) -> Callable[[], Awaitable[dict]]:
    """An ASGI `receive` for a request whose body has arrived: the body, then nothing until the call is cancelled
    (the ingress cancels the handle call when its client leaves)."""
    sent = False

    async def receive() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # never set: a cancellation ends it
        raise AssertionError("unreachable")

    return receive


def inbox_receiver(inbox: Any, session: str) -> Callable[[], Awaitable[dict]]:
    """An ASGI `receive` that pulls a Realtime session's client messages from its `Inbox` actor."""
    exceptions = require("ray.exceptions")

    async def receive() -> dict:
        try:
            return await inbox.get.remote(session)
        except exceptions.RayActorError:  # the ingress (and its inbox) went away: the client is gone
            return GONE

    return receive


async def asgi_messages(app, scope: dict, receive: Callable[[], Awaitable[dict]]) -> AsyncIterator[dict]:
    """Runs the ASGI `app` on one request and yields the messages it sends; the app's task is cancelled and awaited
    when the caller stops early (its client left)."""
    outbox: asyncio.Queue = asyncio.Queue()
    task = asyncio.ensure_future(app(scope, receive, outbox.put))
    getter = None
    try:
        while True:
            getter = asyncio.ensure_future(outbox.get())
            await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
            if getter.done():
                yield getter.result()
                continue
            while not outbox.empty():
                yield outbox.get_nowait()
            task.result()  # the app's own failure, if any
            return
    finally:
        for pending in (getter, task):
            if pending is not None and not pending.done():
                pending.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pending


class RayIngress:
    """The ingress ASGI app: relays each HTTP request and WebSocket session to a model replica through `model` (a
        `DeploymentHandle` of a deployment with a streaming `forward(scope, body, inbox, session)` method), and turns a
        replica's death into OpenAI-shaped errors (see the module docstring). `cut` counts the requests so answered;
    `drain` stops it at the end."""

    def __init__(self, settings: ServerSettings, model: Any):
        self.settings = settings
        self.model = model
        self.inbox = require("ray").remote(num_cpus=0)(Inbox).remote()
        self.cut = 0
        self.draining = False
        self.relays: set = set()  # the handle calls in flight
        exceptions, serve_exceptions = require("ray.exceptions"), require("ray.serve.exceptions")
        self.lost = (
            exceptions.RayActorError,
            serve_exceptions.DeploymentUnavailableError,
            serve_exceptions.ReplicaUnavailableError,
            serve_exceptions.BackPressureError,
        )
        self.cancelled = serve_exceptions.RequestCancelledError

    async def __call__(self, scope: dict, receive, send) -> None:
        if scope["type"] == "http":
            await self.http(scope, receive, send)
        elif scope["type"] == "websocket":
            await self.websocket(scope, receive, send)
        else:  # lifespan: the ingress is ready once its inbox is (the model replicas have their own)
            while True:
                kind = (await receive())["type"].removeprefix("lifespan.")
                if kind == "startup":
                    await self.inbox.drop.remote("")
                await send({"type": f"lifespan.{kind}.complete"})
                if kind == "shutdown":
                    return

    def failure(self, error: Exception) -> APIError:
        """What a client is told when its replica could not answer: a 503 when it went away or the drain time ran
        out, else a 500."""
        if self.draining and isinstance(error, self.cancelled):
            return unavailable("The server shut down before this reply was finished; retry.")
        if isinstance(error, self.lost):
            self.cut += 1
            logger.warning(
                "A model replica went away: a request was cut and answered with a 503 or an error event "
                "(%d so far): %s",
                self.cut,
                str(error).splitlines()[0],
            )
            return unavailable(REPLICA_LOST)
        logger.error("A model replica failed to answer: %r", error)
        return APIError(500, "The server failed to answer this request.", type="server_error")

    async def http(self, scope: dict, receive, send) -> None:
        """One HTTP request. Event streams are relayed as they come; other responses are held until complete."""
        from starlette.requests import Request

        if self.draining:
            return await send_json(send, unavailable(SHUTTING_DOWN))
        settings = self.settings
        try:
            body = await read_body(Request(scope, receive), settings.max_body_bytes, settings.body_timeout_seconds)
        except APIError as error:
            return await send_json(send, error)
        replies = self.relay(wire_scope(scope), body)
        held: list[dict] = []
        streaming = finished = False
        try:
            async for message in replies:
                if message["type"] == "http.response.start":
                    streaming = (
                        dict(message.get("headers", [])).get(b"content-type", b"").startswith(b"text/event-stream")
                    )
                finished = message["type"] == "http.response.body" and not message.get("more_body", False)
                held.append(message)
                if streaming or finished:
                    for piece in held:
                        await send(piece)
                    held.clear()
        except Exception as error:  # noqa: BLE001 - every failure is answered in the OpenAI shape
            if finished:
                return
            answer = self.failure(error)
            if streaming:
                data = f"data: {json.dumps(answer.body())}\n\n".encode()
                await send({"type": "http.response.body", "body": data, "more_body": False})
            else:
                await send_json(send, answer)
        finally:
            self.relays.discard(replies)
            if not finished:
                replies.cancel()

    async def websocket(self, scope: dict, receive, send) -> None:
        """One Realtime session: client messages go to the replica through the inbox, its messages come back."""
        if self.draining:  # before accepting: the client sees HTTP 403
            return await send({"type": "websocket.close", "code": 1013})
        session = uuid.uuid4().hex
        replies = self.relay(wire_scope(scope), None, self.inbox, session)
        pump = asyncio.ensure_future(self.pump(receive, session))
        accepted = closed = False
        try:
            async for message in replies:
                accepted = accepted or message["type"] == "websocket.accept"
                closed = closed or message["type"] == "websocket.close"
                await send(message)
        except Exception as error:  # noqa: BLE001 - every failure is answered in the OpenAI shape
            if not closed and not pump.done():
                answer = self.failure(error)
                if not accepted:
                    await send({"type": "websocket.accept"})
                event = {
                    "type": "error",
                    "event_id": new_id("event"),
                    "error": {**answer.body()["error"], "event_id": None},
                }
                await send({"type": "websocket.send", "text": json.dumps(event)})
                await send({"type": "websocket.close", "code": 1011 if accepted else 1013})
        finally:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump
            self.relays.discard(replies)
            replies.cancel()
            self.inbox.drop.remote(session)

    def relay(self, *args: Any) -> Any:
        """Calls the model deployment's `forward(*args)` (a stream of ASGI messages), counted as in flight."""
        replies = self.model.forward.options(stream=True).remote(*args)
        self.relays.add(replies)
        return replies

    async def drain(self, seconds: float) -> int:
        """Stops taking requests (503), lets the ones in flight finish for at most `seconds`, then cuts the rest
        (their clients get a 503 or an `error` event); how many were cut."""
        self.draining = True
        logger.info("Draining: %d request(s) in flight, at most %g s", len(self.relays), seconds)
        deadline = time.monotonic() + seconds
        while self.relays and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        cut = list(self.relays)
        for replies in cut:
            replies.cancel()
        deadline = time.monotonic() + CUT_ANSWER_SECONDS
        while self.relays and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return len(cut)

    async def pump(self, receive, session: str) -> None:
        """Passes the client's messages to the session's inbox until it disconnects."""
        while True:
            message = await receive()
            await self.inbox.put.remote(session, message)
            if message["type"] == "websocket.disconnect":
                return


async def send_json(send, error: APIError) -> None:
    """Sends `error` as a complete JSON response (status, `Retry-After` when it has one)."""
    body = json.dumps(error.body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(name.lower().encode(), value.encode()) for name, value in error.headers.items()]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


__all__ = ["Inbox", "RayIngress", "asgi_messages", "body_receiver", "inbox_receiver", "wire_scope"]
