"""What the server answers, as pydantic models: published in its OpenAPI schema (`GET /openapi.json`) so that API
tooling, client generators and fuzzers know the responses and errors of each route. The routes build these shapes as
plain dicts; `tests/test_serving_hostile.py` checks that answers validate against them."""

from typing import Literal

from pydantic import BaseModel


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """Every refusal: `{"error": {...}}` (the OpenAI error shape)."""

    error: ErrorDetail


class ReplyAudio(BaseModel):
    id: str
    data: str
    expires_at: int
    transcript: str


class CalledFunction(BaseModel):
    name: str
    arguments: str


class CalledTool(BaseModel):
    id: str
    type: Literal["function"]
    function: CalledFunction


class ReplyMessage(BaseModel):
    role: Literal["assistant"]
    content: str | None
    refusal: None = None
    audio: ReplyAudio | None = None
    tool_calls: list[CalledTool] | None = None


class Choice(BaseModel):
    index: int
    message: ReplyMessage
    finish_reason: Literal["stop", "length", "tool_calls"]
    logprobs: None = None


class PromptTokenDetails(BaseModel):
    audio_tokens: int
    cached_tokens: int


class CompletionTokenDetails(BaseModel):
    audio_tokens: int
    text_tokens: int
    reasoning_tokens: int


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokenDetails
    completion_tokens_details: CompletionTokenDetails


class ChatCompletion(BaseModel):
    """A whole reply (`stream: false`); with `stream: true` the answer is `text/event-stream` of
    `chat.completion.chunk` objects, then `data: [DONE]` (or an `{"error": ...}` event when the reply fails)."""

    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    system_fingerprint: None = None
    choices: list[Choice]
    usage: Usage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"]
    data: list[ModelCard]


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready", "draining"]
    queued: int | None = None
    model: str | None = None


__all__ = ["ChatCompletion", "ErrorResponse", "Health", "ModelList", "Readiness"]
