"""Scoring speech function calling as SpeechFCEval does (FunAudioLLM/Fun-Audio-Chat
`evaluate/SpeechFCEval/utils/compute_metrics_bfcl.py`, BFCL's AST checker), re-implemented in our own words.

An item holds the tools offered (`function`: a JSON list of `{"type": "function", "function": {...}}` schemas) and
the accepted calls (`ground_truth`: a JSON list of `{name: {parameter: [accepted values]}}`; an accepted value `""`
marks the parameter optional). The reply's `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` blocks are its
calls. A reply is right when:

- its calls are well formed (every block is a JSON object with a name and an arguments object), and there are as
  many as expected;
- single-call categories: the call matches the expected one; parallel categories: each expected call is matched by
  a different call, in any order;
- a call matches when its name is the expected one, every required parameter is given, every given parameter is in
  the schema and in the expected call, each value has the schema's type (an integer passes for a float) and is one of
  the accepted values (strings compared without case, spaces and `,./-_*^`, lists element by element, objects key by
  key), and every expected parameter that is not optional is given.
"""

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

_TOOL_CALL = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.DOTALL)
_TYPES = {
    "string": str,
    "integer": int,
    "float": float,
    "number": (int, float),
    "boolean": bool,
    "array": list,
    "tuple": list,
    "dict": dict,
    "object": dict,
    "any": object,
}


def parse_calls(reply: str) -> list[dict[str, Any]] | None:
    """The reply's calls as `[{name: arguments}]`, or None when a `<tool_call>` block is malformed.

    Example:
        >>> parse_calls('<tool_call>{"name": "f", "arguments": {"x": 1}}</tool_call>')
        [{'f': {'x': 1}}]
        >>> parse_calls('<tool_call>{"name": "f", "arguments": </tool_call>') is None
        True
    """
    calls = []
    for body in _TOOL_CALL.findall(reply):
        try:
            call = json.loads(body)
        except json.JSONDecodeError:
            return None
        if not isinstance(call, dict) or not isinstance(call.get("name"), str):
            return None
        arguments = call.get("arguments", {})
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments)
            except json.JSONDecodeError:
                return None
        if not isinstance(arguments, dict):
            return None
        calls.append({call["name"]: arguments})
    return calls


def standardize(value: str) -> str:
    """A string as the SpeechFCEval scorers compare it: without case, spaces and `,./-_*^`, `'` read as `"`.

    Example:
        >>> standardize("New-York, NY")
        'newyorkny'
    """
    return re.sub(r"[ ,./\-_*^]", "", value).lower().replace("'", '"')


def _standard_value(value: Any) -> Any:
    if isinstance(value, str):
        return standardize(value)
    if isinstance(value, list):
        return [_standard_value(item) for item in value]
    if isinstance(value, dict):
        return {key: _standard_value(item) for key, item in value.items()}
    return value


def _options(accepted: Any) -> list[Any]:
    return accepted if isinstance(accepted, list) else [accepted]


def _dict_accepted(value: Mapping[str, Any], option: Any) -> bool:
    """An object value matches an accepted object key by key (BFCL's dict check)."""
    if not isinstance(option, dict):
        return False
    for key, item in value.items():
        if key not in option or _standard_value(item) not in [_standard_value(a) for a in _options(option[key])]:
            return False
    return all(key in value or "" in _options(accepted) for key, accepted in option.items())


def _value_accepted(value: Any, accepted: Sequence[Any]) -> bool:
    options = [option for option in accepted if option != ""]
    if isinstance(value, dict):
        return any(_dict_accepted(value, option) for option in options)
    return _standard_value(value) in [_standard_value(option) for option in options]


def _type_ok(value: Any, schema_type: str) -> bool:
    expected = _TYPES.get(schema_type, object)
    if expected is int and isinstance(value, bool):
        return False
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return True
    return isinstance(value, expected)


def _schemas(tools: Sequence[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    functions = [tool.get("function", tool) for tool in tools]
    return {function["name"]: function for function in functions}


def call_mismatch(
    call: Mapping[str, Any], expected: Mapping[str, Any], schema: Mapping[str, Any] | None
) -> str | None:
    """Why one call `{name: arguments}` does not match the expected `{name: {param: [accepted]}}`, or None."""
    (name, arguments), (expected_name, accepted) = next(iter(call.items())), next(iter(expected.items()))
    if name != expected_name:
        return f"called {name!r} instead of {expected_name!r}"
    parameters = (schema or {}).get("parameters", {})
    properties, required = parameters.get("properties", {}), parameters.get("required", [])
    missing = [param for param in required if param not in arguments]
    if missing:
        return f"missing required parameter {missing[0]!r}"
    for param, value in arguments.items():
        if param not in properties or param not in accepted:
            return f"unexpected parameter {param!r}"
        if not _type_ok(value, properties[param].get("type", "any")):
            return f"parameter {param!r} has the wrong type ({type(value).__name__})"
        if properties[param].get("type") not in ("object",) and not _value_accepted(value, accepted[param]):
            return f"parameter {param!r} = {value!r} is not an accepted value"
    for param, options in accepted.items():
        if param not in arguments and "" not in options:
            return f"expected parameter {param!r} is missing"
    return None


def check_function_calls(reply: str, tools: Any, ground_truth: Any, parallel: bool) -> dict[str, Any]:
    """Scores one reply: `{"correct": bool, "malformed": bool, "reason": str | None}`. `tools` and `ground_truth`
    may be JSON strings (as in SpeechFCEval) or lists."""
    tools = json.loads(tools) if isinstance(tools, str) else tools
    expected = json.loads(ground_truth) if isinstance(ground_truth, str) else ground_truth
    calls = parse_calls(reply)
    if calls is None:
        return {"correct": False, "malformed": True, "reason": "a <tool_call> block is not a valid call"}
    if len(calls) != len(expected):
        return {"correct": False, "malformed": False, "reason": f"{len(calls)} calls, expected {len(expected)}"}
    schemas = _schemas(tools)
    if not parallel:
        reason = call_mismatch(calls[0], expected[0], schemas.get(next(iter(expected[0]))))
        return {"correct": reason is None, "malformed": False, "reason": reason}
    unused = list(range(len(calls)))
    for wanted in expected:
        schema = schemas.get(next(iter(wanted)))
        match = next((index for index in unused if call_mismatch(calls[index], wanted, schema) is None), None)
        if match is None:
            return {"correct": False, "malformed": False, "reason": f"no call matches {next(iter(wanted))!r}"}
        unused.remove(match)
    return {"correct": True, "malformed": False, "reason": None}


__all__ = ["call_mismatch", "check_function_calls", "parse_calls", "standardize"]
