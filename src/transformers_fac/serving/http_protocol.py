"""uvicorn's HTTP/1.1 protocol (h11) with a deadline for request headers, so that slow clients cannot hold
connections: a client that has not sent a complete request head within `header_timeout_seconds` of connecting (or of
its previous response, on a kept-alive connection) gets a `408` in the OpenAI error shape and is disconnected. Slow
bodies are bounded by the routes themselves (`read_json`'s `body_timeout_seconds`)."""

import json

TIMEOUT_BODY = json.dumps(
    {
        "error": {
            "message": "The request headers did not arrive in time.",
            "type": "invalid_request_error",
            "param": None,
            "code": "request_timeout",
        }
    }
).encode()


def header_timeout_protocol(timeout: float) -> type:
    """A uvicorn `http` protocol class (pass it as `uvicorn.Config(http=...)`) enforcing a `timeout` (seconds) on
    request heads.

    Example:
        >>> config = uvicorn.Config(app, http=header_timeout_protocol(10.0))  # doctest: +SKIP
    """
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderTimeoutProtocol(H11Protocol):
        _head_timer = None

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm()

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._disarm()
            self._head_timer = self.loop.call_later(timeout, self._head_late)

        def _disarm(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_late(self) -> None:
            """No complete request head in time (h11 still waits for one): answer 408 and close."""
            self._head_timer = None
            waiting = self.cycle is None or self.cycle.response_complete
            if waiting and self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                head = (
                    "HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
                    f"content-length: {len(TIMEOUT_BODY)}\r\n\r\n"
                )
                self.transport.write(head.encode() + TIMEOUT_BODY)
                self.transport.close()

    return HeaderTimeoutProtocol


__all__ = ["header_timeout_protocol"]
