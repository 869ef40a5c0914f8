"""Why the reply engine refuses or fails a request."""


class RequestError(ValueError):
    """A request the model cannot take (bad audio, too long a prompt, unknown voice, ...); `code` names the kind."""

    def __init__(self, message: str, code: str | None = None):
        super().__init__(message)
        self.code = code


class QueueFull(RuntimeError):
    """The engine's queue is full; retry after `retry_after` seconds."""

    def __init__(self, retry_after: int):
        super().__init__(f"The request queue is full; retry in about {retry_after} s.")
        self.retry_after = retry_after


class EngineClosed(RuntimeError):
    """The engine is draining or stopped and takes no new requests."""


def failure_message(error: Exception) -> str:
    """What a client is told when generating its reply failed: the error's first line, shortened."""
    detail = (str(error).splitlines() or [type(error).__name__])[0][:200]
    return f"The model failed while generating this reply ({type(error).__name__}: {detail})."


__all__ = ["EngineClosed", "QueueFull", "RequestError", "failure_message"]
