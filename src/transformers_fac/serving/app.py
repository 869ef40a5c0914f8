"""The FastAPI app of `fac-serve`: OpenAI-compatible routes over the reply engine.

Routes: `GET /health` (the process is up), `GET /ready` (it takes requests: 503 while draining), `GET /v1/models`,
`POST /v1/chat/completions`, `WS /v1/realtime`, `GET /metrics` (Prometheus text). With an API key, every `/v1` route
and `/metrics` need `Authorization: Bearer <key>`. Every response names the process that served it in the
`x-fac-replica` header; `/metrics` counts every response by route and status. `GET /openapi.json` publishes the
request and response models and the error responses of each route (the interactive `/docs` page is off: it would
load its scripts from a CDN). The same app runs under uvicorn (`fac-serve`) and as a Ray Serve deployment
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
import logging
from contextlib import asynccontextmanager

from .errors import APIError, invalid, too_large, unauthorized, unavailable
from .extras import require
from .json_limits import JSONLimitError, loads_bounded
from .loading import LoadedModel
from .runtime import ServerRuntime, replica_id
from .settings import ServerSettings

logger = logging.getLogger("transformers_fac.serving")


ROUTES = ("/health", "/ready", "/metrics", "/v1/models", "/v1/chat/completions", "/openapi.json")


class StampResponses:
    """ASGI middleware: adds `x-fac-replica: <host>-<pid>` to every HTTP response (which process answered) and counts
    it by route (others as `other`) and status, for `/metrics`."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        header = (b"x-fac-replica", replica_id().encode())
        route = scope["path"] if scope["path"] in ROUTES else "other"

        async def stamping_send(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), header]}
                runtime = getattr(scope["app"].state, "runtime", None)
                if runtime is not None:
                    runtime.responses[(route, message["status"])] += 1
            await send(message)

        return await self.app(scope, receive, stamping_send)


async def read_json(request, limit: int, timeout: float):
    """The request body as JSON: 413 above `limit` bytes (checked while reading), 408 when it takes longer than
    `timeout` seconds to arrive, 400 when it is not JSON or nests too deep."""
    body = await read_body(request, limit, timeout)
    try:
        return loads_bounded(body)
    except JSONLimitError as error:
        raise invalid(f"The request body: {error}", code="invalid_json") from None


async def read_body(request, limit: int, timeout: float) -> bytes:
    """The request body: 413 above `limit` bytes (checked while reading), 408 when it takes longer than `timeout`
    seconds to arrive."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large(limit)
    body = bytearray()
    try:
        async with asyncio.timeout(timeout):
            async for piece in request.stream():
                body += piece
                if len(body) > limit:
                    raise too_large(limit)
    except TimeoutError:
        raise APIError(
            408,
            f"The request body did not arrive within {timeout:g} s.",
            code="request_timeout",
            headers={"Connection": "close"},
        ) from None
    return bytes(body)


def create_app(settings: ServerSettings, loaded: LoadedModel | None = None):
    """The app; the model is loaded when it starts (or `loaded` is used)."""
    fastapi = require("fastapi")
    from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException

    from . import chat_completions, realtime
    from .metrics import prometheus_text
    from .response_models import ChatCompletion, ErrorResponse, Health, ModelList, Readiness
    from .schemas import ChatCompletionRequest, parse

    @asynccontextmanager
    async def lifespan(app):
        runtime = await run_in_threadpool(ServerRuntime.start, settings, loaded)
        app.state.runtime = runtime
        try:
            yield
        finally:
            await run_in_threadpool(runtime.stop)

    app = fastapi.FastAPI(title="Fun-Audio-Chat (OpenAI-compatible)", lifespan=lifespan, docs_url=None, redoc_url=None)
    errors = {status: {"model": ErrorResponse} for status in (400, 401, 404, 408, 413, 429, 500, 503)}

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

    @app.exception_handler(Exception)
    async def unexpected_error(request, error: Exception):  # logged with its traceback by Starlette
        body = APIError(500, "The server failed to answer this request.", type="server_error").body()
        return JSONResponse(body, status_code=500)

    @app.exception_handler(HTTPException)
    async def http_error(request, error: HTTPException):
        code = "not_found" if error.status_code == 404 else None
        body = APIError(error.status_code, str(error.detail), code=code).body()
        return JSONResponse(body, error.status_code, headers=getattr(error, "headers", None))  # e.g. 405's Allow

    @app.get("/health", response_model=Health)
    async def health():
        return {"status": "ok"}

    @app.get("/ready", response_model=Readiness, responses={503: {"model": Readiness}})
    async def ready(request: fastapi.Request):
        runtime = runtime_of(request)
        if runtime.draining:
            return JSONResponse({"status": "draining"}, status_code=503, headers={"Retry-After": "5"})
        return {"status": "ready", "queued": runtime.engine.queued, "model": runtime.settings.served_model_name}

    @app.get("/v1/models", response_model=ModelList, responses={401: errors[401]})
    async def models(request: fastapi.Request):
        runtime = authorize(request)
        entry = {"object": "model", "created": int(runtime.started), "owned_by": "transformers-fac"}
        return {"object": "list", "data": [{"id": model_id, **entry} for model_id in runtime.settings.model_ids]}

    @app.get(
        "/metrics",
        response_class=PlainTextResponse,
        responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}, 401: errors[401]},
    )
    async def metrics(request: fastapi.Request):
        return PlainTextResponse(prometheus_text(authorize(request)))

    chat_responses = {
        200: {
            "model": ChatCompletion,
            "description": "The reply (`stream: false`), or server-sent `chat.completion.chunk` events then "
            '`data: [DONE]` (`stream: true`; an `{"error": ...}` event when the reply fails or is cut).',
            "content": {"text/event-stream": {}},
        },
        **errors,
    }
    request_body = {"required": True, "content": {"application/json": {"schema": {"$ref": REQUEST_SCHEMA}}}}

    @app.post("/v1/chat/completions", responses=chat_responses, openapi_extra={"requestBody": request_body})
    async def chat(request: fastapi.Request):
        runtime = authorize(request)
        if runtime.draining:
            raise unavailable("The server is shutting down and takes no new requests.")
        body = await read_json(request, runtime.settings.max_body_bytes, runtime.settings.body_timeout_seconds)
        parsed = parse(ChatCompletionRequest, body)
        loop = asyncio.get_running_loop()
        job = await run_in_threadpool(chat_completions.submit, runtime, parsed, loop)
        if parsed.stream:
            return StreamingResponse(chat_completions.stream(job, runtime, request), media_type="text/event-stream")
        result = await chat_completions.complete(job, runtime, request)
        return Response(status_code=204) if result is None else JSONResponse(result)

    @app.websocket("/v1/realtime")
    async def realtime_session(websocket: fastapi.WebSocket):
        await realtime.serve(websocket, websocket.app.state.runtime)

    app.openapi = lambda: openapi_schema(app, ChatCompletionRequest, settings)
    app.add_middleware(StampResponses)
    return app


REQUEST_SCHEMA = "#/components/schemas/ChatCompletionRequest"


def openapi_schema(app, request_model, settings: ServerSettings) -> dict:
    """FastAPI's schema of the routes, with the request body model of `/v1/chat/completions` among its components
    (the route reads its body itself, to refuse oversized, slow or too deeply nested bodies before parsing); its
    `model` lists the ids this server answers to, the token limits are this server's."""
    if app.openapi_schema is None:
        from fastapi.openapi.utils import get_openapi

        schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        body = request_model.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(body.pop("$defs", {}))
        properties = body["properties"]
        properties["model"]["enum"] = settings.model_ids
        for name in ("max_completion_tokens", "max_tokens"):
            properties[name]["anyOf"][0]["maximum"] = settings.max_new_tokens
        components[request_model.__name__] = body
        app.openapi_schema = schema
    return app.openapi_schema


__all__ = ["create_app", "openapi_schema", "read_body", "read_json"]
