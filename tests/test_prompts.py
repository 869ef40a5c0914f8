"""Prompt constants, the function-calling system prompt and the tool-call parser."""

import json

from transformers_fac.prompts import (
    ASR_INSTRUCTION,
    AUDIO_TEMPLATE,
    MAX_HISTORY_TURNS,
    S2M_SYSTEM_PROMPT,
    S2S_SYSTEM_PROMPT,
    S2T_SYSTEM_PROMPT,
    SPOKEN_S2M_PROMPT,
    function_calling_prompt,
    parse_tool_calls,
)

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "查询天气",
            "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": []},
        },
    },
    {"type": "function", "function": {"name": "check_battery", "parameters": {"type": "object", "properties": {}}}},
]


def test_constants():
    assert S2T_SYSTEM_PROMPT == "You are asked to generate text tokens."
    assert S2S_SYSTEM_PROMPT is S2M_SYSTEM_PROMPT
    assert SPOKEN_S2M_PROMPT.startswith(S2M_SYSTEM_PROMPT + " 你的名字是小云。")
    assert SPOKEN_S2M_PROMPT.endswith("会说四川话和粤语。")
    assert AUDIO_TEMPLATE == "<|audio_bos|><|AUDIO|><|audio_eos|>"
    assert ASR_INSTRUCTION == "Please help me transcribe the audio."
    assert MAX_HISTORY_TURNS == 8


def test_function_calling_prompt_layout():
    text = function_calling_prompt(TOOLS)
    lines = text.split("\n")
    assert lines[0] == S2T_SYSTEM_PROMPT
    assert lines[1] == "# Tools"
    start = lines.index("<tools>")
    assert [json.loads(line) for line in lines[start + 1 : start + 3]] == TOOLS
    assert lines[start + 1] == json.dumps(TOOLS[0], ensure_ascii=False) and "查询天气" in lines[start + 1]
    assert lines[start + 3] == "</tools>"
    assert text.endswith('<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>')
    assert "within <tool_call></tool_call> XML tags:" in text


def test_parse_tool_calls():
    reply = (
        'Sure.<tool_call>\n{"name": "get_weather", "arguments": {"location": "杭州"}}\n</tool_call>'
        '<tool_call>{"name": "check_battery", "arguments": "{}"}</tool_call>'
        "<tool_call>not json</tool_call><tool_call>[1, 2]</tool_call>"
    )
    assert parse_tool_calls(reply) == [
        {"name": "get_weather", "arguments": {"location": "杭州"}},
        {"name": "check_battery", "arguments": {}},
    ]
    assert parse_tool_calls("No tools needed.") == []


def test_one_rule_for_reply_modes_prompts_and_voices():
    """The mode -> system prompt rule and the "a voice needs a spoken reply" check, written once in `prompts`."""
    import pytest

    from transformers_fac.prompts import (
        REPLY_MODES,
        S2M_SYSTEM_PROMPT,
        S2T_SYSTEM_PROMPT,
        check_reply_mode,
        reply_system_prompt,
    )

    assert [reply_system_prompt(mode) for mode in REPLY_MODES] == [S2M_SYSTEM_PROMPT, S2T_SYSTEM_PROMPT]
    check_reply_mode("audio", voice="中文女")
    with pytest.raises(ValueError, match="a text reply"):
        check_reply_mode("text", voice="中文女")
    with pytest.raises(ValueError, match="reply_mode must be one of"):
        reply_system_prompt("speech")
