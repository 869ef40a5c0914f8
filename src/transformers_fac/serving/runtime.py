"""What a running server holds: its settings, the loaded model, the reply engine, its voices and counters.

One `ServerRuntime` per process (or per Ray replica) is started by the app's lifespan and stopped (drained) at its end.
"""

import hmac
import logging
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from ..engine import ReplyEngine
from .errors import invalid
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
        voices: voice name -> what is passed to the decoder as `speaker`.
        replica: an id of this process (host and pid), sent back in the `x-fac-replica` header.
        draining: set when the process was asked to stop: new requests are refused with 503.
    """

    settings: ServerSettings
    loaded: LoadedModel
    engine: ReplyEngine
    voices: dict[str, Any]
    replica: str = field(default_factory=replica_id)
    draining: bool = False
    started: float = field(default_factory=time.time)
    requests: dict[str, int] = field(default_factory=dict)

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
        ).start()
        voices = load_voices(settings.voice_dirs, loaded.voices)
        logger.info("Ready: %s, voices %s", settings.model, ", ".join(voices) or "none (text only)")
        return cls(settings=settings, loaded=loaded, engine=engine, voices=voices)

    def stop(self) -> bool:
        """Drains the engine (at most `drain_seconds`); True when every request finished."""
        self.draining = True
        finished = self.engine.close(timeout=self.settings.drain_seconds)
        logger.info("Stopped (%s)", "drained" if finished else "in-flight requests cancelled")
        return finished

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

    def speaker(self, voice: str | None, param: str) -> Any:
        """The decoder's `speaker` for a requested voice name (default: the first voice), or a 400 listing them."""
        if not self.voices:
            raise invalid("This server has no voices: ask for a text reply (modalities ['text']).", param=param)
        if voice is None:
            return next(iter(self.voices.values()))
        if voice not in self.voices:
            raise invalid(
                f"Unknown voice {voice!r}; this server's voices are: {', '.join(self.voices)}.",
                param=param,
                code="unknown_voice",
            )
        return self.voices[voice]

    def count(self, outcome: str) -> None:
        self.requests[outcome] = self.requests.get(outcome, 0) + 1


__all__ = ["ServerRuntime", "replica_id"]
