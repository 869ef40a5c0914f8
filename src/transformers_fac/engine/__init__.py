"""The reply engine: one model, many conversations at once, batched per decoding step.

Every path that answers (the server, the Space, the live mode, `stream_reply`) submits a [`ReplyRequest`] to a
[`ReplyEngine`] and reads the events of its [`Reply`] handle: `TextDelta`, `AudioDelta`, then `ReplyDone` or
`ReplyFailed`; `reply.cancel()` frees its row at the next step.
"""

from .engine import ReplyEngine
from .errors import EngineClosed, QueueFull, RequestError, failure_message
from .replies import (
    FINAL_EVENTS,
    AudioDelta,
    Reply,
    ReplyDone,
    ReplyEvent,
    ReplyFailed,
    ReplyRequest,
    TextDelta,
    merge_deltas,
)
from .rows import EngineStats

__all__ = [
    "FINAL_EVENTS",
    "AudioDelta",
    "EngineClosed",
    "EngineStats",
    "QueueFull",
    "Reply",
    "ReplyDone",
    "ReplyEngine",
    "ReplyEvent",
    "ReplyFailed",
    "ReplyRequest",
    "RequestError",
    "TextDelta",
    "failure_message",
    "merge_deltas",
]
