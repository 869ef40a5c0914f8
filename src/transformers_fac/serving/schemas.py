"""Request bodies of the OpenAI Chat Completions API, as far as this server reads them (pydantic models).

Fields the server does not use are ignored, as OpenAI clients send many; fields whose meaning the server cannot honour
(`n > 1`, `stop`, `logprobs`, structured `response_format`, forced tool choices) are refused with a 400 that says so.
Numbers and flags are taken as JSON types, not coerced from strings (`"stream": "yes"` is a 400).
"""

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, ValidationError

from .errors import invalid


def _integral(value: Any) -> Any:
    """JSON's integers: `2` and `2.0` (JSON Schema counts both), never `"2"` or `true`."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def json_int(**bounds: int) -> Any:
    """An integer field as JSON has them (see `_integral`), within `bounds` (`ge`, `lt`, ...)."""
    return Annotated[StrictInt, Field(**bounds), BeforeValidator(_integral)]


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
    include_usage: StrictBool = False


class FunctionDefinition(BaseModel):
    """A tool's function; keys beyond these (e.g. `strict`) go into the prompt as sent."""

    model_config = ConfigDict(extra="allow")
    name: str = Field(min_length=1)
    description: str | None = None
    parameters: dict[str, Any] | None = None


class Tool(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["function"]
    function: FunctionDefinition


class ChatCompletionRequest(_Body):
    """`POST /v1/chat/completions` body."""

    model: str
    messages: list[Message] = Field(min_length=1)
    modalities: list[Literal["text", "audio"]] | None = None
    audio: AudioParams | None = None
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    max_completion_tokens: json_int(ge=1) | None = None
    max_tokens: json_int(ge=1) | None = None
    temperature: StrictFloat | None = Field(None, ge=0, le=2)
    top_p: StrictFloat | None = Field(None, gt=0, le=1)
    seed: json_int(ge=-(2**63), lt=2**63) | None = None
    n: json_int() | None = Field(None, json_schema_extra={"minimum": 1, "maximum": 1})  # checked with a clear message
    tools: list[Tool] | None = None
    # accepted in their OpenAI types and refused with a clear message below; the published schema names what passes
    tool_choice: str | dict[str, Any] | None = Field(None, json_schema_extra={"enum": ["auto", "none", None]})
    stop: str | list[str] | None = Field(None, json_schema_extra={"enum": [None, "", []]})
    logprobs: StrictBool | None = Field(None, json_schema_extra={"enum": [False, None]})
    response_format: dict[str, Any] | None = Field(
        None, json_schema_extra={"properties": {"type": {"enum": ["text", None]}}}
    )

    @property
    def spoken(self) -> bool:
        return "audio" in (self.modalities or [])

    @property
    def active_tools(self) -> list[dict[str, Any]] | None:
        """The tools as the function-calling prompt lists them (None: no tools, or `tool_choice` "none")."""
        if self.tool_choice == "none" or not self.tools:
            return None
        return [tool.model_dump(exclude_none=True) for tool in self.tools]

    def text_chars(self) -> int:
        """Characters of text the prompt would hold (messages, tool calls, tool definitions): a cheap bound checked
        before anything is decoded or tokenized."""
        total = len(json.dumps(self.active_tools, ensure_ascii=False)) if self.tools else 0
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


def parse(model: type[BaseModel], body: Any) -> Any:
    """Validates a JSON body; the first problem becomes a 400 that names its field."""
    try:
        return model.model_validate(body)
    except ValidationError as error:
        problem = error.errors()[0]
        where = ".".join(str(part) for part in problem["loc"]) or None
        raise invalid(f"{where}: {problem['msg']}" if where else problem["msg"], param=where) from None


__all__ = ["AudioParams", "ChatCompletionRequest", "ContentPart", "Message", "parse"]
