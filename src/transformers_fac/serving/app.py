"""The FastAPI app of `fac-serve`: OpenAI-compatible routes over the reply engine.

Routes: `GET /health` (the process is up), `GET /ready` (it takes requests: 503 while draining), `GET /v1/models`,
`POST /v1/chat/completions`, `WS /v1/realtime`, `GET /metrics` (Prometheus text). With an API key, every `/v1` route
and `/metrics` need `Authorization: Bearer <key>`. Every response names the process that served it in the
`x-fac-replica` header. The same app runs under uvicorn (`fac-serve`) and as a Ray Serve deployment
(`fac-serve --ray`): its lifespan loads the model and starts the engine, and drains the engine at the end.

Example:

```python
>>> import uvicorn
>>> from transformers_fac.serving.app import create_app
>>> from transformers_fac.serving.settings import ServerSettings
>>> uvicorn.run(create_app(ServerSettings(model="tiny")), host="127.0.0.1", port=8000)
```
"""

import asyncio
import json
import logging
from contextlib import asynccontextmanager

from .errors import APIError, invalid, too_large, unauthorized, unavailable
from .extras import require
from .loading import LoadedModel
from .runtime import ServerRuntime, replica_id
from .settings import ServerSettings

logger = logging.getLogger("transformers_fac.serving")


class ReplicaHeader:
    """ASGI middleware: adds `x-fac-replica: <host>-<pid>` to every HTTP response (which process answered)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        header = (b"x-fac-replica", replica_id().encode())

        async def send_with_header(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), header]}
            await send(message)

        return await self.app(scope, receive, send_with_header)


async def read_json(request, limit: int):
    """The request body as JSON, refused with 413 above `limit` bytes (checked while reading)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large(limit)
    body = bytearray()
    async for piece in request.stream():
        body += piece
        if len(body) > limit:
            raise too_large(limit)
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise invalid("The request body is not valid JSON.") from None


def create_app(settings: ServerSettings, loaded: LoadedModel | None = None):
    """The app; the model is loaded when it starts (or `loaded` is used)."""
    fastapi = require("fastapi")
    from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException

    from . import chat_completions, realtime
    from .metrics import prometheus_text
    from .schemas import ChatCompletionRequest, parse

    @asynccontextmanager
    async def lifespan(app):
        runtime = await run_in_threadpool(ServerRuntime.start, settings, loaded)
        app.state.runtime = runtime
        try:
            yield
        finally:
            await run_in_threadpool(runtime.stop)

    app = fastapi.FastAPI(title="Fun-Audio-Chat (OpenAI-compatible)", lifespan=lifespan)

    def runtime_of(request) -> ServerRuntime:
        return request.app.state.runtime

    def authorize(request) -> ServerRuntime:
        runtime = runtime_of(request)
        if not runtime.authorized(request.headers.get("authorization")):
            raise unauthorized()
        return runtime

    @app.exception_handler(APIError)
    async def api_error(request, error: APIError):
        return JSONResponse(error.body(), status_code=error.status, headers=error.headers)

    @app.exception_handler(HTTPException)
    async def http_error(request, error: HTTPException):
        code = "not_found" if error.status_code == 404 else None
        return JSONResponse(APIError(error.status_code, str(error.detail), code=code).body(), error.status_code)

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/ready")
    async def ready(request: fastapi.Request):
        runtime = runtime_of(request)
        if runtime.draining:
            return JSONResponse({"status": "draining"}, status_code=503)
        return {"status": "ready", "queued": runtime.engine.queued, "model": runtime.settings.served_model_name}

    @app.get("/v1/models")
    async def models(request: fastapi.Request):
        runtime = authorize(request)
        entry = {"object": "model", "created": int(runtime.started), "owned_by": "transformers-fac"}
        return {"object": "list", "data": [{"id": model_id, **entry} for model_id in runtime.settings.model_ids]}

    @app.get("/metrics")
    async def metrics(request: fastapi.Request):
        return PlainTextResponse(prometheus_text(authorize(request)))

    @app.post("/v1/chat/completions")
    async def chat(request: fastapi.Request):
        runtime = authorize(request)
        if runtime.draining:
            raise unavailable("The server is shutting down and takes no new requests.")
        body = await read_json(request, runtime.settings.max_body_bytes)
        parsed = parse(ChatCompletionRequest, body)
        loop = asyncio.get_running_loop()
        try:
            job = await run_in_threadpool(chat_completions.submit, runtime, parsed, loop)
        except APIError as error:
            runtime.count(str(error.status))
            raise
        runtime.count("accepted")
        if parsed.stream:
            return StreamingResponse(chat_completions.stream(job, request), media_type="text/event-stream")
        result = await chat_completions.complete(job, runtime, request)
        return Response(status_code=204) if result is None else JSONResponse(result)

    @app.websocket("/v1/realtime")
    async def realtime_session(websocket: fastapi.WebSocket):
        await realtime.serve(websocket, websocket.app.state.runtime)

    app.add_middleware(ReplicaHeader)
    return app


__all__ = ["create_app", "read_json"]
