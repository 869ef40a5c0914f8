"""Keyword arguments renamed in the public API, still accepted for one more release with a `FutureWarning`.

Renamed so far: `speaker=` -> `voice=` (`generate`, the speech-to-speech pipeline, `stream_reply`; removed in 0.2).

Example:
    >>> import warnings
    >>> options = {"speaker": "中文男"}
    >>> with warnings.catch_warnings(record=True):
    ...     renamed_argument(options, "speaker", "voice", None, "generate")
    '中文男'
"""

import warnings
from typing import Any

REMOVED_IN = "0.2"
"""The transformers-fac release that drops the old names."""


def renamed_argument(kwargs: dict[str, Any], old: str, new: str, value: Any, where: str) -> Any:
    """The value of the argument `new`: `value`, or the deprecated `old` popped from `kwargs` (with a
    `FutureWarning` naming `new`, reported at the function of the package that received it, `where`). Giving both
    raises `TypeError`."""
    if old not in kwargs:
        return value
    old_value = kwargs.pop(old)
    if value is not None:
        raise TypeError(f"{where}: `{old}` is the deprecated name of `{new}`; give only `{new}`.")
    warnings.warn(
        f"{where}: `{old}=` is deprecated and will be removed in transformers-fac {REMOVED_IN}; use `{new}=` instead.",
        FutureWarning,
        stacklevel=2,
    )
    return old_value


__all__ = ["REMOVED_IN", "renamed_argument"]
