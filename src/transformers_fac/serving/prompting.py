"""OpenAI chat messages -> the Fun-Audio-Chat prompt and its audio, built as the official examples build them.

The system prompt starts with the official prompt of the reply mode (`S2M_SYSTEM_PROMPT` when the reply is spoken,
`S2T_SYSTEM_PROMPT` for text, the official function-calling prompt when `tools` are given), followed by the client's
own system (and developer) messages. User turns hold text and audio parts (each audio part becomes one
`<|audio_bos|><|AUDIO|><|audio_eos|>` slot); assistant turns go back in as text, their tool calls as `<tool_call>`
blocks; tool results as a user turn of `<tool_response>` blocks.
"""

import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..prompts import (
    AUDIO_TEMPLATE,
    S2M_SYSTEM_PROMPT,
    S2T_SYSTEM_PROMPT,
    function_calling_prompt,
    parse_tool_calls,
    reply_system_prompt,
)
from .audio_codec import decode_input_audio
from .errors import invalid

MODE_PROMPTS = (S2M_SYSTEM_PROMPT, S2T_SYSTEM_PROMPT)
_TOOL_CALL_BLOCK = re.compile(r"<tool_call>.*?</tool_call>", re.DOTALL)


@dataclass
class Prompt:
    """The chat messages (string contents, ready for the chat template) and the audio of their slots, in order."""

    messages: list[dict[str, str]]
    audios: list[np.ndarray] = field(default_factory=list)

    def render(self, processor) -> str:
        return processor.apply_chat_template(self.messages, add_generation_prompt=True, tokenize=False)


def system_prompt(spoken: bool, tools: list[dict] | None, client_system: str = "") -> str:
    """The official prompt of the mode, then the client's instructions (unless they already start with it).

    Example:
        >>> system_prompt(spoken=False, tools=None, client_system="Answer in French.")
        'You are asked to generate text tokens. Answer in French.'
    """
    client_system = client_system.strip()
    if tools:
        return function_calling_prompt(tools) + (f"\n\n{client_system}" if client_system else "")
    if client_system.startswith(MODE_PROMPTS):
        return client_system
    base = reply_system_prompt("audio" if spoken else "text")
    return f"{base} {client_system}" if client_system else base


def _text_of(content: Any, param: str) -> str:
    """A text-only content (string or list of text parts)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = []
    for index, part in enumerate(content):
        if part.type != "text" or part.text is None:
            raise invalid(f"{param}[{index}] must be a text part here, got {part.type!r}.", param=f"{param}[{index}]")
        parts.append(part.text)
    return "\n".join(parts)


def split_tool_calls(raw_text: str) -> tuple[str | None, list[dict]]:
    """A function-calling reply (with its `<tool_call>` blocks) -> the text outside the blocks (None if empty) and the
    calls in the OpenAI shape (`id`, `type`, `function.name`, `function.arguments` as a JSON string).

    Example:
        >>> rest, calls = split_tool_calls('<tool_call>{"name": "f", "arguments": {"x": 1}}</tool_call>')
        >>> rest, calls[0]["function"]
        (None, {'name': 'f', 'arguments': '{"x": 1}'})
    """
    calls = [
        {
            "id": f"call_{uuid.uuid4().hex[:24]}",
            "type": "function",
            "function": {"name": call["name"], "arguments": json.dumps(call["arguments"], ensure_ascii=False)},
        }
        for call in parse_tool_calls(raw_text)
    ]
    rest = _TOOL_CALL_BLOCK.sub("", raw_text).strip() if calls else raw_text.strip()
    return rest or None, calls


def tool_call_block(name: str, arguments: Any) -> str:
    """A call as the model writes it: a `<tool_call>` block (arguments given as a JSON string are parsed back)."""
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            pass
    body = json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False)
    return f"<tool_call>\n{body}\n</tool_call>"


def tool_response_block(output: str) -> str:
    """A tool's result as the model reads it (inside a user turn)."""
    return f"<tool_response>\n{output}\n</tool_response>"


def build_prompt(messages: list, spoken: bool, tools: list[dict] | None, max_audio_seconds: float) -> Prompt:
    """Validated request messages -> `Prompt` (raises a 400 `APIError` naming the bad part)."""
    system, turns, audios = [], [], []
    audio_seconds = 0.0
    for position, message in enumerate(messages):
        param = f"messages[{position}].content"
        if message.role in ("system", "developer"):
            system.append(_text_of(message.content, param))
        elif message.role == "user":
            if message.content is None:
                raise invalid(f"{param} is required for user messages.", param=param)
            parts = [message.content] if isinstance(message.content, str) else []
            for index, part in enumerate([] if isinstance(message.content, str) else message.content):
                where = f"{param}[{index}]"
                if part.type == "text" and part.text is not None:
                    parts.append(part.text)
                elif part.type == "input_audio" and part.input_audio is not None:
                    waveform = decode_input_audio(
                        part.input_audio.data,
                        part.input_audio.format,
                        max_audio_seconds - audio_seconds,
                        f"{where}.input_audio",
                        total_seconds=max_audio_seconds,
                    )
                    audio_seconds += waveform.size / 16000
                    audios.append(waveform)
                    parts.append(AUDIO_TEMPLATE)
                else:
                    raise invalid(
                        f"{where}: content parts of type {part.type!r} are not supported; send 'text' or "
                        "'input_audio' parts.",
                        param=where,
                    )
            turns.append({"role": "user", "content": "\n".join(parts)})
        elif message.role == "assistant":
            text = _text_of(message.content, param)
            calls = [tool_call_block(call.function.name, call.function.arguments) for call in message.tool_calls or []]
            if not text and not calls:
                raise invalid(
                    f"{param}: assistant turns go back to the model as text; send the reply's text (for a spoken "
                    "reply, its transcript) as `content`. Audio ids are not kept by this server.",
                    param=param,
                )
            turns.append({"role": "assistant", "content": "\n".join([text, *calls]) if text else "\n".join(calls)})
        else:  # tool
            block = tool_response_block(_text_of(message.content, param))
            if turns and turns[-1]["role"] == "user" and turns[-1]["content"].startswith("<tool_response>"):
                turns[-1]["content"] += "\n" + block
            else:
                turns.append({"role": "user", "content": block})
    prompt = system_prompt(spoken, tools, "\n".join(part for part in system if part))
    return Prompt(messages=[{"role": "system", "content": prompt}, *turns], audios=audios)


__all__ = [
    "MODE_PROMPTS",
    "Prompt",
    "build_prompt",
    "split_tool_calls",
    "system_prompt",
    "tool_call_block",
    "tool_response_block",
]
