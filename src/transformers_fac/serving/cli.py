"""`fac-serve`: an OpenAI-compatible Fun-Audio-Chat server (Chat Completions with audio, Realtime WebSocket).

    fac-serve                                              # the tiny random checkpoint on 127.0.0.1:8000 (CPU)
    fac-serve --model FunAudioLLM/Fun-Audio-Chat-8B --host 0.0.0.0 --port 8000
    FAC_API_KEY=secret fac-serve --model ...               # clients send `Authorization: Bearer secret`
    fac-serve --ray --replicas 4 --model ...               # Ray Serve: one replica per GPU
    fac-serve --config serve.yaml                          # settings (and `ray:` deployment options) from a file

SIGTERM (or Ctrl-C) stops taking requests (503; the port stays open, so `/ready` answers 503 meanwhile), lets the
ones in flight finish (at most `--drain-seconds`), answers the rest with a 503 (or an `error` event on a stream), logs
how many were cut, and exits. A second signal cuts at once.
"""

import argparse
import logging
import os
import signal
import sys
import time
from dataclasses import fields
from pathlib import Path

from .settings import SETTING_FLAGS, ServerSettings

CUT_ANSWER_SECONDS = (
    5.0  # after the drain time, how long cut requests have to send their error before connections close
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fac-serve",
        description="Serve Fun-Audio-Chat with the OpenAI API shape: /v1/chat/completions (audio in and out, "
        "streaming) and /v1/realtime (WebSocket), with request batching; optionally on Ray Serve.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    for name, (kind, text) in SETTING_FLAGS.items():
        if name == "voice_dirs":
            parser.add_argument("--voice-dir", dest=name, action="append", default=None, help=text)
        elif kind is bool:
            parser.add_argument("--" + name.replace("_", "-"), action="store_true", default=None, help=text)
        else:
            parser.add_argument("--" + name.replace("_", "-"), type=kind, default=None, help=text)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    parser.add_argument("--api-key", default=None, help="require this key (default: $FAC_API_KEY; none: open)")
    parser.add_argument("--config", default=None, help="YAML or JSON file of settings (flags override it)")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    ray = parser.add_argument_group("Ray Serve (pip install 'transformers-fac[ray]')")
    ray.add_argument("--ray", action="store_true", help="serve as a Ray Serve deployment")
    ray.add_argument("--replicas", type=int, default=None, help="number of replicas (default: 1)")
    ray.add_argument("--min-replicas", type=int, default=None, help="autoscaling: fewest replicas")
    ray.add_argument("--max-replicas", type=int, default=None, help="autoscaling: most replicas")
    ray.add_argument("--ray-address", default=None, help="join this Ray cluster (default: $RAY_ADDRESS or local)")
    ray.add_argument("--ray-num-cpus", type=int, default=None, help="CPUs of a local Ray instance")
    ray.add_argument("--ray-object-store-mb", type=int, default=None, help="object store of a local Ray instance")
    return parser


def read_config(path: str) -> dict:
    """A settings file: YAML (`.yaml`/`.yml`) or JSON, one mapping (an optional `ray:` mapping inside)."""
    text = Path(path).read_text()
    if path.endswith((".yaml", ".yml")):
        import yaml

        values = yaml.safe_load(text) or {}
    else:
        import json

        values = json.loads(text)
    if not isinstance(values, dict):
        raise ValueError(f"{path}: expected a mapping of settings.")
    return values


def resolve(args: argparse.Namespace) -> tuple[ServerSettings, dict | None]:
    """Settings (file, then flags, then $FAC_API_KEY) and the Ray deployment options (None: no Ray)."""
    values = read_config(args.config) if args.config else {}
    in_file = values.pop("ray", None)
    ray_options = dict(in_file or {})
    known = {item.name for item in fields(ServerSettings)}
    for name in known:
        flag_value = getattr(args, name, None)
        if flag_value is not None:
            values[name] = flag_value
    if args.api_key is not None:
        values["api_key"] = args.api_key
    values.setdefault("api_key", os.environ.get("FAC_API_KEY") or None)
    if args.replicas is not None:
        ray_options["num_replicas"] = args.replicas
    if args.min_replicas is not None or args.max_replicas is not None:
        scaling = ray_options.setdefault("autoscaling_config", {})
        scaling["min_replicas"] = args.min_replicas if args.min_replicas is not None else 1
        scaling["max_replicas"] = args.max_replicas if args.max_replicas is not None else scaling["min_replicas"]
    uses_ray = args.ray or in_file is not None
    return ServerSettings.from_dict(values), ray_options if uses_ray else None


def serve_uvicorn(settings: ServerSettings, host: str, port: int, log_level: str) -> int:
    """Runs the app under uvicorn until SIGTERM/Ctrl-C, then drains it (see `DrainingServer`)."""
    from .app import create_app
    from .extras import require
    from .http_protocol import header_timeout_protocol

    uvicorn = require("uvicorn")
    app = create_app(settings)

    class DrainingServer(uvicorn.Server):
        """On SIGTERM or Ctrl-C the server keeps listening while it drains: new requests get a 503 (`/ready` too) and
        the requests in flight may finish for `drain_seconds`; the ones still running then are cut (their clients get
        an OpenAI-shaped 503 or `error` event) and the server stops. A second signal cuts at once."""

        drain_deadline: float | None = None
        cut_at: float | None = None

        def handle_exit(self, sig, frame):
            runtime = getattr(app.state, "runtime", None)
            if runtime is None:  # still starting: stop as uvicorn does
                return super().handle_exit(sig, frame)
            if self.drain_deadline is not None:
                self.drain_deadline = 0.0
                return
            runtime.draining = True
            self.drain_deadline = time.monotonic() + settings.drain_seconds
            logging.getLogger("transformers_fac.serving").info(
                "Draining: %d request(s) in flight, at most %g s", len(runtime.in_flight), settings.drain_seconds
            )

        async def on_tick(self, counter: int) -> bool:
            if await super().on_tick(counter):
                return True
            if self.drain_deadline is None:
                return False
            runtime = app.state.runtime
            now = time.monotonic()
            if runtime.in_flight and now < self.drain_deadline:
                return False
            if self.cut_at is None and runtime.in_flight:
                runtime.cut_in_flight()
                self.cut_at = now
            # the cut requests answer their clients (503, error events) before the connections close
            return not runtime.in_flight or now > self.cut_at + CUT_ANSWER_SECONDS

    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        http=header_timeout_protocol(settings.header_timeout_seconds),
        timeout_graceful_shutdown=int(CUT_ANSWER_SECONDS),
    )
    # uvicorn re-raises the stop signal after its graceful shutdown; with these handlers the process then exits 0
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: None)
    DrainingServer(config).run()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s: %(name)s: %(message)s")
    try:
        settings, ray_options = resolve(args)
    except (OSError, ValueError, TypeError) as error:
        parser.error(str(error))
    try:
        if ray_options is None:
            return serve_uvicorn(settings, args.host, args.port, args.log_level)
        from .ray_serve import run

        return run(settings, ray_options, args.host, args.port, ray_init_options(args))
    except ImportError as error:  # a missing extra: one line that names it
        print(f"fac-serve: error: {error}", file=sys.stderr)
        return 2


def ray_init_options(args: argparse.Namespace) -> dict:
    """`ray.init` arguments: join `--ray-address` (or $RAY_ADDRESS), else start a small local instance."""
    options = {"address": args.ray_address} if args.ray_address else {}
    if not args.ray_address and not os.environ.get("RAY_ADDRESS"):  # a local instance, just for this server
        options["include_dashboard"] = False
    if args.ray_num_cpus is not None:
        options["num_cpus"] = args.ray_num_cpus
    if args.ray_object_store_mb is not None:
        options["object_store_memory"] = args.ray_object_store_mb * 1024 * 1024
    return options


if __name__ == "__main__":
    sys.exit(main())
