"""`POST /v1/chat/completions`: the OpenAI Chat Completions API with audio in and audio out.

Non-streaming replies carry `message.audio` (`id`, base64 `data` in the requested format, `expires_at`,
`transcript`); with `stream: true` the reply is server-sent events whose `delta.audio` carries the transcript pieces
and base64 PCM16 (24 kHz) chunks as they are generated, then `data: [DONE]`. With `tools`, the model answers in its
function-calling (text) mode and the reply carries the parsed `tool_calls`.
"""

import asyncio
import base64
import json
import time
import uuid
from collections.abc import AsyncIterator
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
from .audio_codec import OUTPUT_FORMATS, encode_audio, pcm16
from .errors import APIError, invalid, queue_full, server_error, too_much_text, unavailable
from .prompting import build_prompt, split_tool_calls
from .runtime import ServerRuntime
from .schemas import ChatCompletionRequest

AUDIO_LIFETIME_S = 3600
DISCONNECT_POLL_S = 0.5


@dataclass
class ChatJob:
    """A validated request on its way through the engine."""

    request: ChatCompletionRequest
    reply: Reply
    spoken: bool
    tools: list | None
    audio_format: str
    id: str
    audio_id: str
    created: int


def submit(runtime: ServerRuntime, request: ChatCompletionRequest, loop: asyncio.AbstractEventLoop) -> ChatJob:
    """Checks a request against the server's limits, builds its prompt and queues it (CPU work: run it off the event
    loop). Raises `APIError`."""
    settings = runtime.settings
    if request.model not in settings.model_ids:
        raise APIError(
            404,
            f"The model {request.model!r} does not exist on this server; use {settings.served_model_name!r}.",
            param="model",
            code="model_not_found",
        )
    request.check_supported()
    chars = request.text_chars()
    if chars > settings.max_text_chars:  # before any audio is decoded or text tokenized
        raise too_much_text(chars, settings.max_text_chars, "messages")
    tools = request.active_tools
    spoken = request.spoken and not tools  # tool calling is the model's text mode
    audio = request.audio
    audio_format = audio.format if audio is not None else "wav"
    voice = None
    if spoken:
        if audio_format not in OUTPUT_FORMATS:
            raise invalid(
                f"audio.format must be one of {', '.join(OUTPUT_FORMATS)}, got {audio_format!r}.", param="audio.format"
            )
        if request.stream and audio_format != "pcm16":
            raise invalid("Streamed audio is sent as pcm16: set audio.format to 'pcm16'.", param="audio.format")
        voice = runtime.resolve_voice(audio.voice_name if audio is not None else None, "audio.voice")
    limit = settings.max_new_tokens
    max_tokens = request.max_completion_tokens or request.max_tokens or limit
    if max_tokens > limit:
        raise invalid(
            f"max_completion_tokens is {max_tokens}, but this server generates at most {limit} tokens per reply "
            "(one token per 0.2 s of speech).",
            param="max_completion_tokens",
            code="too_many_tokens",
        )
    prompt = build_prompt(request.messages, spoken, tools, settings.max_audio_seconds)
    reply_request = ReplyRequest(
        prompt=prompt.render(runtime.loaded.processor),
        audios=prompt.audios,
        spoken=spoken,
        voice=voice,
        max_new_tokens=max_tokens,
        temperature=request.temperature,
        top_p=request.top_p,
        seed=request.seed,
    )
    try:
        reply = runtime.engine.submit(reply_request, loop)
    except RequestError as error:
        raise invalid(str(error), param="messages", code=error.code) from None
    except QueueFull as error:
        raise queue_full(error.retry_after) from None
    except EngineClosed as error:
        raise unavailable(str(error)) from None
    runtime.track(reply)
    token = uuid.uuid4().hex
    return ChatJob(
        request, reply, spoken, tools, audio_format, f"chatcmpl-{token}", f"audio_{token}", int(time.time())
    )


def usage(done: ReplyDone) -> dict:
    """OpenAI usage: prompt tokens (audio slots among them), and the reply's LLM steps (each one text token) with
    the speech codes it produced counted as its audio tokens."""
    return {
        "prompt_tokens": done.prompt_tokens,
        "completion_tokens": done.completion_tokens,
        "total_tokens": done.prompt_tokens + done.completion_tokens,
        "prompt_tokens_details": {"audio_tokens": done.prompt_audio_tokens, "cached_tokens": 0},
        "completion_tokens_details": {
            "audio_tokens": done.speech_codes,
            "text_tokens": done.completion_tokens,
            "reasoning_tokens": 0,
        },
    }


def _tool_calls(done: ReplyDone) -> tuple[str | None, list[dict]]:
    """The reply's text outside its tool-call blocks, and the calls in the OpenAI shape."""
    rest, calls = split_tool_calls(done.raw_text)
    return (rest, calls) if calls else (done.text, [])


def _finish_reason(done: ReplyDone, calls: list) -> str:
    return "tool_calls" if calls else ("length" if done.finish_reason == "length" else "stop")


async def _events(job: ChatJob, runtime: ServerRuntime, http_request) -> AsyncIterator:
    """The reply's events; the request is cancelled when its client goes away. A reply cut by the server's shutdown
    raises the 503 (`APIError`) its client is to get."""
    try:
        while True:
            try:
                event = await job.reply.next_event(timeout=DISCONNECT_POLL_S)
            except TimeoutError:
                if await http_request.is_disconnected():
                    return
                continue
            if isinstance(event, ReplyDone) and event.finish_reason == "cancelled" and runtime.cut:
                raise runtime.shutdown_error()
            yield event
            if isinstance(event, (ReplyDone, ReplyFailed)):
                return
    finally:
        runtime.untrack(job.reply)
        if not job.reply.finished:
            job.reply.cancel()


async def complete(job: ChatJob, runtime: ServerRuntime, http_request) -> dict | None:
    """The whole reply as a `chat.completion` object (None when the client left)."""
    text, audio, done = [], [], None
    async for event in _events(job, runtime, http_request):
        if isinstance(event, TextDelta):
            text.append(event.text)
        elif isinstance(event, AudioDelta):
            audio.append(event.audio)
        elif isinstance(event, ReplyFailed):
            raise server_error(event.message)
        else:
            done = event
    if done is None:
        return None
    content, calls = _tool_calls(done) if job.tools else (done.text, [])
    message: dict = {"role": "assistant", "content": content, "refusal": None}
    if job.spoken:
        rate = runtime.engine.model.token2wav.config.sampling_rate
        samples = np.concatenate(audio) if audio else np.zeros(0, dtype=np.float32)
        data = await asyncio.to_thread(encode_audio, samples, rate, job.audio_format)
        message["content"] = None
        message["audio"] = {
            "id": job.audio_id,
            "data": base64.b64encode(data).decode("ascii"),
            "expires_at": job.created + AUDIO_LIFETIME_S,
            "transcript": done.text,
        }
    if calls:
        message["tool_calls"] = calls
    return {
        "id": job.id,
        "object": "chat.completion",
        "created": job.created,
        "model": job.request.model,
        "system_fingerprint": None,
        "choices": [{"index": 0, "message": message, "finish_reason": _finish_reason(done, calls), "logprobs": None}],
        "usage": usage(done),
    }


def _sse(payload: dict | str) -> str:
    return f"data: {payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)}\n\n"


async def stream(job: ChatJob, runtime: ServerRuntime, http_request) -> AsyncIterator[str]:
    """The reply as server-sent `chat.completion.chunk` events, then `data: [DONE]`; a reply that fails or is cut by
    the server's shutdown ends with an `{"error": ...}` event instead."""
    try:
        async for piece in _chunks(job, runtime, http_request):
            yield piece
    except APIError as error:
        yield _sse(error.body())


async def _chunks(job: ChatJob, runtime: ServerRuntime, http_request) -> AsyncIterator[str]:

    def chunk(delta: dict, finish_reason: str | None = None) -> str:
        choice = {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
        return _sse(
            {
                "id": job.id,
                "object": "chat.completion.chunk",
                "created": job.created,
                "model": job.request.model,
                "system_fingerprint": None,
                "choices": [choice],
            }
        )

    yield chunk({"role": "assistant", "content": "" if not job.spoken else None})
    async for event in _events(job, runtime, http_request):
        if isinstance(event, TextDelta) and not job.tools:
            if job.spoken:
                yield chunk({"audio": {"id": job.audio_id, "transcript": event.text}})
            else:
                yield chunk({"content": event.text})
        elif isinstance(event, AudioDelta):
            data = base64.b64encode(pcm16(event.audio)).decode("ascii")
            yield chunk({"audio": {"id": job.audio_id, "data": data}})
        elif isinstance(event, ReplyFailed):
            yield _sse(server_error(event.message).body())
            return
        elif isinstance(event, ReplyDone):
            calls = []
            if job.tools:
                content, calls = _tool_calls(event)
                if content:
                    yield chunk({"content": content})
                if calls:
                    yield chunk({"tool_calls": [{"index": index, **call} for index, call in enumerate(calls)]})
            last = {"audio": {"id": job.audio_id, "expires_at": job.created + AUDIO_LIFETIME_S}} if job.spoken else {}
            yield chunk(last, _finish_reason(event, calls))
            options = job.request.stream_options
            if options is not None and options.include_usage:
                yield _sse(
                    {
                        "id": job.id,
                        "object": "chat.completion.chunk",
                        "created": job.created,
                        "model": job.request.model,
                        "choices": [],
                        "usage": usage(event),
                    }
                )
            yield _sse("[DONE]")


__all__ = ["ChatJob", "complete", "stream", "submit", "usage"]
