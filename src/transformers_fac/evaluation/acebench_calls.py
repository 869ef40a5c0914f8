"""Scoring Speech-ACEBench function calling as SpeechFCEval does (FunAudioLLM/Fun-Audio-Chat
`evaluate/SpeechFCEval/utils/compute_metrics_acebench.py`, ACEBench's checker), re-implemented in our own words.

An item's `ground_truth` is a JSON list of candidate answers; a candidate is one object `{name: {parameter: value}}`
holding every expected call (parallel items repeat a function as `name_1`, `name_2`; the suffix is dropped). The
reply is right when it matches one candidate:

- parsing: each `<tool_call>{...}</tool_call>` block that is valid JSON is a call; a block that is not JSON is
  skipped; a call without `name` or `arguments`, or whose arguments are not an object (a one-object list is unwrapped),
  makes the reply malformed;
- the reply makes exactly the candidate's calls, counted by function name;
- each expected call is matched by some call of that name: every required parameter given, every given parameter in
  the schema and in the expected call, each value of the schema's type (`"true"` / `"false"` read as booleans, an
  integer passes for a float); when the expected value itself has another type than the schema says, any value of
  the expected value's type passes unchecked;
- values are then compared by the schema's type: strings contain the expected string (both without case, spaces and
  `,./-_*^`), lists equal it element by element (strings standardised), objects have the same keys and each value
  contains the expected one (nested objects likewise), lists of objects pair up in order. Numbers and booleans are
  checked for their type only, as the official scorer does.
"""

import json
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from .function_calls import standardize

_TOOL_CALL = re.compile(r"<tool_call>\s*(\{.*?\})\s*</tool_call>", re.DOTALL)
_TYPES: dict[str, type] = {
    "string": str,
    "any": str,
    "integer": int,
    "int": int,
    "number": int,
    "float": float,
    "boolean": bool,
    "array": list,
    "tuple": list,
    "list": list,
    "list(string)": list,
    "list(enum)": list,
    "objectArray": list,
    "dict": dict,
    "object": dict,
}
_NESTED = ("array", "tuple", "list(string)", "list(enum)", "object", "objectArray")
_BOOLEANS = {"true": True, "false": False}


def parse_acebench_calls(reply: str) -> list[dict[str, Any]] | None:
    """The reply's calls as `[{name: arguments}]`, or None when a call is malformed (blocks that are not JSON are
    skipped, as the official parser skips them).

    Example:
        >>> parse_acebench_calls('<tool_call>{"name": "f", "arguments": [{"x": 1}]}</tool_call><tool_call>{x</tool_call>')
        [{'f': {'x': 1}}]
        >>> parse_acebench_calls('<tool_call>{"name": "f"}</tool_call>') is None
        True
    """
    calls = []
    for body in _TOOL_CALL.findall(reply):
        try:
            call = json.loads(body.replace("\\n", " "))
        except json.JSONDecodeError:
            continue
        if not isinstance(call, dict) or not isinstance(call.get("name"), str) or "arguments" not in call:
            return None
        arguments = call["arguments"]
        if isinstance(arguments, list) and len(arguments) == 1 and isinstance(arguments[0], dict):
            arguments = arguments[0]
        if not isinstance(arguments, dict):
            return None
        calls.append({call["name"]: arguments})
    return calls


def _inner_type(schema: Mapping[str, Any], schema_type: str) -> type | None:
    items = schema.get("items")
    if isinstance(items, Mapping) and "type" in items:
        return _TYPES.get(items["type"])
    if "string" in schema_type:
        return str
    return None if "enum" in schema_type else dict


def _inner_ok(value: list, expected: Any, inner: type | None) -> bool:
    """The official nested check: some expected element that is not a list, or one that every value element fits."""
    options = list(expected) if isinstance(expected, (list, tuple, dict, str)) else []
    return any(
        not isinstance(option, list) or all(type(v) is inner or isinstance(v, list) or v == option for v in value)
        for option in options
    )


def _type_check(value: Any, expected: Any, schema_type: str, inner: type | None) -> tuple[bool, bool]:
    """(the value's type is acceptable, the value goes unchecked because the expected value has another type)."""
    wanted = _TYPES.get(schema_type)
    expected_type = None if isinstance(expected, str) and expected == "" else type(expected)
    unchecked = expected_type is not None and expected_type is not wanted
    value = _BOOLEANS.get(value, value) if isinstance(value, str) else value
    if wanted is not None and type(value) is wanted:
        if schema_type not in _NESTED or _inner_ok(value, expected, inner):
            return True, unchecked
    if expected_type is not None and (type(value) is expected_type or value == expected):
        return True, True
    return False, unchecked


def _object_ok(value: Any, expected: Any) -> bool:
    if not isinstance(value, dict) or not isinstance(expected, dict) or len(value) != len(expected):
        return False
    for key, item in value.items():
        item = _BOOLEANS.get(item, item) if isinstance(item, str) else item
        if key not in expected:
            return False
        wanted = expected[key]
        if isinstance(wanted, dict):
            if not _object_ok(item, wanted):
                return False
            continue
        given = standardize(item) if isinstance(item, str) else item
        if str(standardize(wanted) if isinstance(wanted, str) else wanted) not in str(given):
            return False
    return True


def _value_ok(value: Any, expected: Any, schema_type: str, inner: type | None) -> bool:
    wanted = _TYPES.get(schema_type)
    if wanted is dict:
        return _object_ok(value, expected)
    if wanted is list and inner is dict:
        return len(value) == len(expected) and all(_object_ok(v, e) for v, e in zip(value, expected))
    if wanted is str:
        return standardize(expected) in standardize(value)
    if wanted is list:
        given = [standardize(item) if isinstance(item, str) else item for item in value]
        return given == [standardize(item) if isinstance(item, str) else item for item in expected]
    return True


def acebench_call_mismatch(
    schema: Mapping[str, Any] | None, call: Mapping[str, Any], expected: Mapping[str, Any]
) -> str | None:
    """Why one call `{name: arguments}` does not match the expected `{name: {parameter: value}}`, or None."""
    (name, arguments), expected_arguments = next(iter(call.items())), next(iter(expected.values()))
    if schema is None:
        return f"no tool named {name!r} was offered"
    parameters = schema.get("parameters") or {}
    if not arguments or not parameters:
        return None if not arguments and not parameters else "the call's parameters do not fit the tool"
    properties = parameters.get("properties", {})
    if expected_arguments == properties:
        return None
    if not expected_arguments:
        return "the call's parameters do not fit the tool"
    if schema.get("name") != name:
        return f"called {name!r} instead of {schema.get('name')!r}"
    missing = [param for param in parameters.get("required", []) if param not in arguments]
    if missing:
        return f"missing required parameter {missing[0]!r}"
    for param, value in arguments.items():
        if param not in properties or param not in expected_arguments:
            return f"unexpected parameter {param!r}"
        schema_type = str(properties[param].get("type", ""))
        inner = _inner_type(properties[param], schema_type) if schema_type in _NESTED else None
        if schema_type == "float" and type(value) is int:
            value = float(value)
        type_ok, unchecked = _type_check(value, expected_arguments[param], schema_type, inner)
        if not type_ok:
            return f"parameter {param!r} has the wrong type ({type(value).__name__})"
        if not unchecked and not _value_ok(value, expected_arguments[param], schema_type, inner):
            return f"parameter {param!r} = {value!r} is not the expected value"
    return None


def _candidate_mismatch(
    functions: Sequence[Mapping[str, Any]], calls: list[dict[str, Any]], candidate: Mapping[str, Any]
) -> str | None:
    if len(calls) != len(candidate):
        return f"{len(calls)} calls, expected {len(candidate)}"
    names = {key: re.sub(r"_\d+$", "", key) if len(candidate) > 1 else key for key in candidate}
    made, expected = Counter(next(iter(call)) for call in calls), Counter(names.values())
    if made != expected:
        return f"called {dict(made)}, expected {dict(expected)}"
    for key, arguments in candidate.items():
        schema = next((function for function in functions if function.get("name", "") in key), None)
        wanted = {names[key]: arguments}
        reasons = [acebench_call_mismatch(schema, call, wanted) for call in calls if next(iter(call)) == names[key]]
        if None not in reasons:
            return reasons[0]
    return None


def check_acebench_calls(reply: str, tools: Any, ground_truth: Any) -> dict[str, Any]:
    """Scores one reply: `{"correct": bool, "malformed": bool, "reason": str | None}` (the first candidate's reason
    when none matches). `tools` and `ground_truth` may be JSON strings (as in SpeechFCEval) or lists.

    Example:
        >>> tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "dict",
        ...     "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
        >>> reply = '<tool_call>{"name": "f", "arguments": {"city": "New York City"}}</tool_call>'
        >>> check_acebench_calls(reply, tools, [{"f": {"city": "new york"}}])["correct"]
        True
    """
    tools = json.loads(tools) if isinstance(tools, str) else tools
    candidates = json.loads(ground_truth) if isinstance(ground_truth, str) else ground_truth
    candidates = candidates if isinstance(candidates, list) else [candidates]
    calls = parse_acebench_calls(reply)
    if calls is None:
        return {"correct": False, "malformed": True, "reason": "a <tool_call> block is not a valid call"}
    functions = [tool.get("function", tool) for tool in tools]
    reasons = [_candidate_mismatch(functions, calls, candidate) for candidate in candidates]
    if None in reasons:
        return {"correct": True, "malformed": False, "reason": None}
    return {"correct": False, "malformed": False, "reason": reasons[0] if reasons else "no expected answer"}


__all__ = ["acebench_call_mismatch", "check_acebench_calls", "parse_acebench_calls"]
