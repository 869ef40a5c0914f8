"""What a running server holds: its settings, the loaded model, the reply engine, its voices and counters.

One `ServerRuntime` per process (or per Ray replica) is started by the app's lifespan and stopped (drained) at its end.
"""

import hmac
import logging
import os
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ..engine import ReplyEngine
from .errors import APIError, invalid, unavailable
from .loading import LoadedModel, load
from .settings import ServerSettings
from .voices import load_voices

logger = logging.getLogger("transformers_fac.serving")


def replica_id() -> str:
    """This process: `<host>-<pid>`."""
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass
class ServerRuntime:
    """The state of a serving process.

    Args:
        settings: what it serves and its limits.
        loaded: the model, processor and stock voices.
        engine: the reply engine (started).
        voices: voice name -> what is passed to the decoder as `voice`.
        replica: an id of this process (host and pid), sent back in the `x-fac-replica` header.
        draining: set when the process was asked to stop: new requests are refused with 503.
        in_flight: the replies being answered (chat completions and realtime responses).
        cut: how many replies were cancelled when the drain time ran out (their clients got a 503 or an `error`
            event); any marks replies that end cancelled as cut.
        responses: HTTP responses sent, by (route, status).
    """

    settings: ServerSettings
    loaded: LoadedModel
    engine: ReplyEngine
    voices: dict[str, Any]
    replica: str = field(default_factory=replica_id)
    draining: bool = False
    started: float = field(default_factory=time.time)
    in_flight: set = field(default_factory=set)
    cut: int = 0
    responses: Counter = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def start(cls, settings: ServerSettings, loaded: LoadedModel | None = None) -> "ServerRuntime":
        """Loads the model (unless given) and starts the engine."""
        loaded = loaded or load(settings)
        engine = ReplyEngine(
            loaded.model,
            loaded.processor,
            max_batch_size=settings.max_batch_size,
            max_prefill_tokens=settings.max_prefill_tokens,
            max_queue=settings.max_queue,
            max_prompt_tokens=settings.max_prompt_tokens,
            decoder_process=settings.decoder_process,
        ).start()
        if engine.compiled:
            started = time.perf_counter()
            engine.warm_up()
            logger.info("Compiled the decoding step in %.1f s", time.perf_counter() - started)
        voices = load_voices(settings.voice_dirs, loaded.voices)
        logger.info("Ready: %s, voices %s", settings.model, ", ".join(voices) or "none (text only)")
        return cls(settings=settings, loaded=loaded, engine=engine, voices=voices)

    def stop(self) -> bool:
        """Drains: lets the replies in flight finish for at most `drain_seconds`, cuts the rest (their clients get an
        OpenAI-shaped 503 or `error` event), then stops the engine. True when nothing had to be cut."""
        self.draining = True
        deadline = time.monotonic() + self.settings.drain_seconds
        while self.in_flight and time.monotonic() < deadline:
            time.sleep(0.05)
        self.cut_in_flight()
        self.engine.close(timeout=max(0.0, deadline - time.monotonic()))
        logger.info("Stopped (%s)", f"{self.cut} request(s) cut after the drain time" if self.cut else "drained")
        return not self.cut

    def track(self, reply: Any) -> None:
        """Counts `reply` as in flight until `untrack` (a drain waits for it, a cut cancels it)."""
        with self._lock:
            self.in_flight.add(reply)

    def untrack(self, reply: Any) -> None:
        with self._lock:
            self.in_flight.discard(reply)

    def cut_in_flight(self) -> int:
        """Cancels every reply still in flight (the drain time ran out); how many there were."""
        with self._lock:
            replies = list(self.in_flight)
        if replies:
            self.cut += len(replies)
            logger.warning(
                "Drain time (%g s) ran out: cutting %d request(s) in flight", self.settings.drain_seconds, len(replies)
            )
        for reply in replies:
            reply.cancel()
        return len(replies)

    # ------------------------------------------------------------------------------------------------ helpers
    def authorized(self, header: str | None) -> bool:
        """Whether an `Authorization` header carries the server's key (always, when it has none)."""
        key = self.settings.api_key
        if not key:
            return True
        scheme, _, token = (header or "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), key.encode())

    def key_matches(self, token: str | None) -> bool:
        key = self.settings.api_key
        return not key or (token is not None and hmac.compare_digest(token.encode(), key.encode()))

    def resolve_voice(self, name: str | None, param: str) -> Any:
        """The decoder's `voice` for a requested voice name (default: the first voice), or a 400 listing them."""
        if not self.voices:
            raise invalid("This server has no voices: ask for a text reply (modalities ['text']).", param=param)
        if name is None:
            return next(iter(self.voices.values()))
        if name not in self.voices:
            raise invalid(
                f"Unknown voice {name!r}; this server's voices are: {', '.join(self.voices)}.",
                param=param,
                code="unknown_voice",
            )
        return self.voices[name]

    def shutdown_error(self) -> "APIError":
        """What a client whose reply was cut by the shutdown is told (a 503 with Retry-After)."""
        return unavailable("The server shut down before this reply was finished; retry (another replica may take it).")


__all__ = ["ServerRuntime", "replica_id"]
