"""System prompts, the audio placeholder template and function-calling helpers of Fun-Audio-Chat.

The system prompt selects the mode of the model: `S2T_SYSTEM_PROMPT` makes it answer with text only,
`S2M_SYSTEM_PROMPT` (alias `S2S_SYSTEM_PROMPT`) with text and speech at the same time. The strings are the ones the
released model was trained with; change them only on purpose.

Example:
    >>> from transformers_fac.prompts import AUDIO_TEMPLATE, S2T_SYSTEM_PROMPT
    >>> conversation = [
    ...     {"role": "system", "content": S2T_SYSTEM_PROMPT},
    ...     {"role": "user", "content": AUDIO_TEMPLATE},
    ... ]
"""

import json
import re
from typing import Any

S2T_SYSTEM_PROMPT = "You are asked to generate text tokens."
"""Speech-to-text mode: the model answers with text only."""

S2M_SYSTEM_PROMPT = "You are asked to generate both text and speech tokens at the same time."
"""Speech-to-speech ("S2M") mode: the model answers with text and speech tokens together."""

S2S_SYSTEM_PROMPT = S2M_SYSTEM_PROMPT
"""Alias of `S2M_SYSTEM_PROMPT`."""

REPLY_MODES = ("audio", "text")
"""How the model replies: `"audio"` (text and speech together, the S2M prompt) or `"text"` (text only, S2T). The
`generation_mode` of `generate`, the `reply_mode` of the live session and the server's modalities name these."""


def check_reply_mode(reply_mode: str, voice: Any = None, name: str = "reply_mode") -> None:
    """Raises `ValueError` for an unknown reply mode (`name`: the caller's argument), or a voice given for a written
    reply (a voice needs a spoken reply).

    Example:
        >>> check_reply_mode("audio", voice="中文女")
    """
    if reply_mode not in REPLY_MODES:
        raise ValueError(f"{name} must be one of {REPLY_MODES}, got {reply_mode!r}.")
    if reply_mode == "text" and voice is not None:
        raise ValueError(f"`voice` chooses the voice of spoken replies; a text reply ({name}='text') has none.")


def reply_system_prompt(reply_mode: str) -> str:
    """The official system prompt of a reply mode: `S2M_SYSTEM_PROMPT` for `"audio"`, `S2T_SYSTEM_PROMPT` for `"text"`.

    Example:
        >>> reply_system_prompt("text")
        'You are asked to generate text tokens.'
    """
    check_reply_mode(reply_mode)
    return S2M_SYSTEM_PROMPT if reply_mode == "audio" else S2T_SYSTEM_PROMPT


XIAOYUN_PERSONA = (
    "你的名字是小云。你是一位来自杭州的温柔友善的女孩，声音甜美，举止亲切。你的回复语气自然友好，力求沟通简洁明了。"
    "你的回复简短，通常只有一到三句话，避免使用正式的称谓和重复的短语。你能用恰当的声音回复，遵循用户的指示，"
    "并能共情他们的情绪。你能用恰当的方言回复，会说四川话和粤语。"
)
"""The official spoken persona (Xiaoyun, a gentle girl from Hangzhou who answers in one to three sentences)."""

SPOKEN_S2M_PROMPT = S2M_SYSTEM_PROMPT + " " + XIAOYUN_PERSONA
"""Speech-to-speech mode with the official spoken persona (the web demo's default)."""

AUDIO_TEMPLATE = "<|audio_bos|><|AUDIO|><|audio_eos|>"
"""A user turn's audio slot; the processor expands `<|AUDIO|>` to one token per 0.2 s of audio."""

ASR_INSTRUCTION = "Please help me transcribe the audio."
"""The speech-recognition instruction (S2T mode), appended to the audio as `AUDIO_TEMPLATE + "\\n" + ASR_INSTRUCTION`."""

MAX_HISTORY_TURNS = 8
"""The official demo keeps the latest 8 user/assistant rounds of a conversation (plus the system prompt)."""

TOKEN_FPS = 25
"""Speech tokens (and audio-pad slots) per second of audio."""

_FUNCTION_CALLING_TOOLS_BLOCK = """
# Tools

You may call one or more functions to assist with the user query.

You are provided with function signatures within <tools></tools> XML tags:
<tools>
{tools}
</tools>

For each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:
<tool_call>
{{"name": <function-name>, "arguments": <args-json-object>}}
</tool_call>"""

_TOOL_CALL_PATTERN = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.DOTALL)


def function_calling_prompt(tools: list[dict[str, Any]]) -> str:
    """The official function-calling system prompt (S2T mode) for `tools`, one JSON object per line.

    Example:
        >>> tool = {"type": "function", "function": {"name": "get_weather", "parameters": {}}}
        >>> print(function_calling_prompt([tool]).splitlines()[7])
        {"type": "function", "function": {"name": "get_weather", "parameters": {}}}
    """
    if not isinstance(tools, (list, tuple)) or not all(isinstance(tool, dict) for tool in tools):
        raise TypeError("`tools` must be a list of dicts (JSON-schema tool definitions).")
    definitions = "\n".join(json.dumps(tool, ensure_ascii=False) for tool in tools)
    return S2T_SYSTEM_PROMPT + _FUNCTION_CALLING_TOOLS_BLOCK.format(tools=definitions)


def parse_tool_calls(text: str) -> list[dict[str, Any]]:
    """Parse the `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` blocks of a model reply.

    Returns one dict per block, in order, with the keys `name` and `arguments` (a dict; a JSON-encoded string is
    decoded). Blocks that are not valid JSON objects with a `name` are skipped. A reply without tool calls gives `[]`.

    Example:
        >>> parse_tool_calls('<tool_call>\\n{"name": "get_weather", "arguments": {"location": "杭州"}}\\n</tool_call>')
        [{'name': 'get_weather', 'arguments': {'location': '杭州'}}]
    """
    calls = []
    for body in _TOOL_CALL_PATTERN.findall(text):
        try:
            call = json.loads(body)
        except json.JSONDecodeError:
            continue
        if not isinstance(call, dict) or not isinstance(call.get("name"), str):
            continue
        arguments = call.get("arguments", {})
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments)
            except json.JSONDecodeError:
                pass
        calls.append({"name": call["name"], "arguments": arguments})
    return calls
