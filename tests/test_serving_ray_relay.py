"""The pieces of the Ray ingress that run without Ray: relaying a real ASGI app's messages from a replica, the app's
own failure reaching the caller, and a caller that stops early (its client left) cancelling the app."""

import asyncio

import pytest

from transformers_fac.serving.ray_ingress import asgi_messages, body_receiver, wire_scope

SCOPE = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": [], "app": object()}


def test_messages_arrive_in_order_and_the_apps_failure_is_raised():
    async def app(scope, receive, send):
        request = await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for piece in request["body"].split(b","):
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        raise RuntimeError("the replica's app failed")

    async def relay():
        seen = []
        with pytest.raises(RuntimeError, match="app failed"):
            async for message in asgi_messages(app, wire_scope(SCOPE), body_receiver(b"a,b,c")):
                seen.append(message.get("body", message.get("status")))
        return seen

    assert asyncio.run(relay()) == [200, b"a", b"b", b"c"]
    assert "app" not in wire_scope(SCOPE) and wire_scope(SCOPE)["path"] == "/v1/chat/completions"


def test_a_caller_that_stops_early_cancels_the_app():
    ended = []

    async def app(scope, receive, send):
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        try:
            await receive()  # waits for a disconnect that only a cancellation ends
        except asyncio.CancelledError:
            ended.append("cancelled")
            raise

    async def relay():
        messages = asgi_messages(app, wire_scope(SCOPE), body_receiver(b""))
        first = await anext(messages)
        await messages.aclose()
        return first["status"]

    assert asyncio.run(relay()) == 200
    assert ended == ["cancelled"]
