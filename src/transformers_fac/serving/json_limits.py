"""JSON from clients, bounded: what an HTTP body or a realtime event may be before the server looks inside it.

Python's parser recurses once per nesting level, so a deeply nested document would exhaust the interpreter's stack in
the parser (or later, in validation); here it is refused with a message instead, whatever its depth.
"""

import json
from typing import Any

MAX_DEPTH = 64  # far deeper than any request of the API (a tool's JSON schema included)


class JSONLimitError(ValueError):
    """The text is not JSON, or nests deeper than the server reads; the message says which."""


def loads_bounded(raw: str | bytes, max_depth: int = MAX_DEPTH) -> Any:
    """Parses `raw`, refusing invalid JSON and documents nested more than `max_depth` levels.

    Example:
        >>> loads_bounded('{"a": [1, 2]}')
        {'a': [1, 2]}
        >>> loads_bounded("[" * 100 + "]" * 100)
        Traceback (most recent call last):
        ...
        transformers_fac.serving.json_limits.JSONLimitError: The JSON nests more than 64 levels deep; this server reads at most 64.
    """
    too_deep = JSONLimitError(
        f"The JSON nests more than {max_depth} levels deep; this server reads at most {max_depth}."
    )
    try:
        value = json.loads(raw)
    except RecursionError:
        raise too_deep from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise JSONLimitError("The text is not valid JSON.") from None
    if depth(value) > max_depth:
        raise too_deep
    return value


def depth(value: Any) -> int:
    """Nesting depth of parsed JSON (a scalar is 0, `[]` is 1), without recursion.

    Example:
        >>> depth({"a": [{"b": 1}]})
        3
    """
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, level = stack.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else None
        if children is None:
            continue
        deepest = max(deepest, level)
        stack.extend((child, level + 1) for child in children)
    return deepest


__all__ = ["MAX_DEPTH", "JSONLimitError", "depth", "loads_bounded"]
