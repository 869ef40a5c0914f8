"""Request bodies of the OpenAI Chat Completions API, as far as this server reads them (pydantic models).

Fields the server does not use are ignored, as OpenAI clients send many; fields whose meaning the server cannot honour
(`n > 1`, `stop`, `logprobs`, structured `response_format`, forced tool choices) are refused with a 400 that says so.
"""

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import invalid


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class InputAudio(_Body):
    data: str
    format: str | None = None


class ContentPart(_Body):
    type: str
    text: str | None = None
    input_audio: InputAudio | None = None


class ToolCallFunction(_Body):
    name: str
    arguments: str | dict = "{}"


class ToolCall(_Body):
    id: str | None = None
    type: str = "function"
    function: ToolCallFunction


class Message(_Body):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None


class VoiceRef(_Body):
    id: str


class AudioParams(_Body):
    voice: str | VoiceRef | None = None
    format: str = "wav"

    @property
    def voice_name(self) -> str | None:
        return self.voice.id if isinstance(self.voice, VoiceRef) else self.voice


class StreamOptions(_Body):
    include_usage: bool = False


class ChatCompletionRequest(_Body):
    """`POST /v1/chat/completions` body."""

    model: str
    messages: list[Message] = Field(min_length=1)
    modalities: list[Literal["text", "audio"]] | None = None
    audio: AudioParams | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_completion_tokens: int | None = Field(None, ge=1)
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = Field(None, ge=-(2**63), lt=2**63)
    n: int | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    stop: str | list[str] | None = None
    logprobs: bool | None = None
    response_format: dict[str, Any] | None = None

    @property
    def spoken(self) -> bool:
        return "audio" in (self.modalities or [])

    @property
    def active_tools(self) -> list[dict[str, Any]] | None:
        return None if self.tool_choice == "none" else self.tools or None

    def text_chars(self) -> int:
        """Characters of text the prompt would hold (messages, tool calls, tool definitions): a cheap bound checked
        before anything is decoded or tokenized."""
        total = len(json.dumps(self.tools, ensure_ascii=False)) if self.tools else 0
        for message in self.messages:
            if isinstance(message.content, str):
                total += len(message.content)
            else:
                total += sum(len(part.text or "") for part in message.content or [])
            for call in message.tool_calls or []:
                arguments = call.function.arguments
                total += len(call.function.name) + len(
                    arguments if isinstance(arguments, str) else json.dumps(arguments)
                )
        return total

    def check_supported(self) -> None:
        """Refuses what the server cannot do, with a 400 naming the field."""
        if self.n not in (None, 1):
            raise invalid(f"n={self.n}: this server returns one choice per request; send n=1.", param="n")
        if self.stop:
            raise invalid("`stop` sequences are not supported by this server.", param="stop")
        if self.logprobs:
            raise invalid("`logprobs` are not supported by this server.", param="logprobs")
        if self.response_format and self.response_format.get("type") not in (None, "text"):
            raise invalid("Only the text response_format is supported.", param="response_format")
        if self.tool_choice not in (None, "auto", "none"):
            raise invalid(
                "tool_choice must be 'auto' or 'none': the model decides itself whether to call a tool.",
                param="tool_choice",
            )
        for index, tool in enumerate(self.tools or []):
            function = tool.get("function")
            if tool.get("type") != "function" or not isinstance(function, dict) or not function.get("name"):
                raise invalid(
                    f"tools[{index}] must be {{'type': 'function', 'function': {{'name': ..., 'parameters': ...}}}}.",
                    param=f"tools[{index}]",
                )


def parse(model: type[BaseModel], body: Any) -> Any:
    """Validates a JSON body; the first problem becomes a 400 that names its field."""
    try:
        return model.model_validate(body)
    except ValidationError as error:
        problem = error.errors()[0]
        where = ".".join(str(part) for part in problem["loc"]) or None
        raise invalid(f"{where}: {problem['msg']}" if where else problem["msg"], param=where) from None


__all__ = ["AudioParams", "ChatCompletionRequest", "ContentPart", "Message", "parse"]
