"""Errors in the OpenAI API shape: `{"error": {"message", "type", "param", "code"}}` with an HTTP status.

Every refusal of the server (bad input, missing key, full queue, model failure) is an `APIError`, so that the `openai`
client raises its usual exception classes (`BadRequestError`, `AuthenticationError`, `RateLimitError`, ...) with a
message that says what to change.
"""

from dataclasses import dataclass, field


@dataclass
class APIError(Exception):
    """An OpenAI-shaped error.

    Example:
        >>> APIError(400, "n must be 1", param="n").body()
        {'error': {'message': 'n must be 1', 'type': 'invalid_request_error', 'param': 'n', 'code': None}}
    """

    status: int
    message: str
    type: str = "invalid_request_error"
    param: str | None = None
    code: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self):
        super().__init__(self.message)

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def invalid(message: str, param: str | None = None, code: str | None = None) -> APIError:
    """A 400 invalid-request error."""
    return APIError(400, message, param=param, code=code)


def unauthorized() -> APIError:
    return APIError(
        401,
        "Incorrect or missing API key: send `Authorization: Bearer <key>` with the key the server was started with.",
        type="authentication_error",
        code="invalid_api_key",
    )


def too_large(limit_bytes: int) -> APIError:
    return APIError(
        413,
        f"The request body is larger than this server accepts ({limit_bytes // (1024 * 1024)} MiB); "
        "send shorter audio or start the server with a larger --max-body-mb.",
        code="request_too_large",
    )


def queue_full(retry_after: int) -> APIError:
    return APIError(
        429,
        f"The server is busy: its request queue is full. Retry in about {retry_after} s.",
        type="rate_limit_error",
        code="queue_full",
        headers={"Retry-After": str(retry_after)},
    )


def unavailable(message: str, retry_after: int = 5) -> APIError:
    """A 503 with `Retry-After` (draining, shut down, or a replica that went away)."""
    return APIError(503, message, type="server_error", code="unavailable", headers={"Retry-After": str(retry_after)})


def too_much_text(chars: int, limit: int, param: str) -> APIError:
    """A 400 for text beyond the server's `max_text_chars` (checked before anything is tokenized)."""
    return invalid(
        f"The request holds {chars} characters of text; this server takes at most {limit} (see --max-text-chars).",
        param=param,
        code="context_length_exceeded",
    )


def server_error(message: str) -> APIError:
    return APIError(500, message, type="server_error", code="model_error")


__all__ = [
    "APIError",
    "invalid",
    "queue_full",
    "server_error",
    "too_large",
    "too_much_text",
    "unauthorized",
    "unavailable",
]
