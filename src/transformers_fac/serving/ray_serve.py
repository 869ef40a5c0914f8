"""The server as a Ray Serve deployment: the same app and routes, one replica per GPU, behind Ray's HTTP proxy.

Each replica builds the app of `transformers_fac.serving.app` on its own worker (its lifespan loads the model and
starts a reply engine; stopping a replica drains it), so everything `fac-serve` does, every replica does. Ray
routes each request to a replica and scales the number of replicas.

    fac-serve --ray --replicas 4                       # a local Ray instance (or the cluster in RAY_ADDRESS)
    fac-serve --ray --config serve.yaml                # server settings and deployment options from a file
    serve run transformers_fac.serving.ray_serve:build_app model=FunAudioLLM/Fun-Audio-Chat-8B   # Ray's own CLI

Exposure: a local Ray instance started for a loopback `--host` (the default 127.0.0.1) is a single-machine one: the
services it starts (GCS, raylet, object manager, workers, the dashboard agent, the runtime-env agent) listen on
127.0.0.1 only, as does Serve's HTTP proxy; the dashboard is off. The exception is each Serve replica's
inter-deployment gRPC server, which Ray Serve binds to all interfaces with no option to change it. (Ray binds its services to its node
address; `RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`, set for that instance, makes that address 127.0.0.1 - Ray's own switch
for single-machine instances.) With a non-loopback `--host`, or when joining a cluster (`--ray-address`,
`RAY_ADDRESS`), Ray's services listen on the node's address (all interfaces for some of them): keep such a cluster on
a private network, as Ray's security guide says.

Multi-node: start a Ray cluster (`ray start --head` on one machine, `ray start --address=HEAD:6379` on the others),
then run the same `fac-serve --ray ...` command on the head node: replicas are placed on any node with a free GPU.
"""

import ipaddress
import logging
import os
import signal
import threading
from dataclasses import asdict
from typing import Any

from .extras import require
from .settings import ServerSettings, settings_from_strings

logger = logging.getLogger("transformers_fac.serving")
DEPLOYMENT_NAME = "fun-audio-chat"
APP_NAME = "fun-audio-chat"
SINGLE_MACHINE_SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # "0": Ray's node address is 127.0.0.1


def deployment_options(settings: ServerSettings, options: dict | None = None, gpu: bool | None = None) -> dict:
    """Ray Serve deployment options: one GPU per replica on GPU machines, enough requests in flight per replica to
    fill its batches; `options` (e.g. `num_replicas`, `autoscaling_config`, `ray_actor_options`) override them."""
    if gpu is None:
        gpu = settings.device != "cpu" and _cluster_has_gpus()
    defaults: dict[str, Any] = {
        "ray_actor_options": {"num_gpus": 1 if gpu else 0, "num_cpus": 1},
        "max_ongoing_requests": 2 * settings.max_batch_size,
        "graceful_shutdown_timeout_s": settings.drain_seconds,
        "health_check_period_s": 10,
    }
    options = dict(options or {})
    actor = {**defaults["ray_actor_options"], **options.pop("ray_actor_options", {})}
    merged = {**defaults, **options, "ray_actor_options": actor}
    if "autoscaling_config" in merged:
        merged.pop("num_replicas", None)
    return merged


def _cluster_has_gpus() -> bool:
    ray = require("ray")
    return ray.is_initialized() and ray.cluster_resources().get("GPU", 0) > 0


def application(settings: ServerSettings, options: dict | None = None):
    """A bound Ray Serve application serving `settings` with the deployment `options`."""
    serve = require("ray.serve")

    @serve.ingress()
    class FunAudioChatServer:
        """One replica: the `fac-serve` app on this worker."""

        def __init__(self, values: dict):
            self.settings = ServerSettings.from_dict(values)

        def __serve_build_asgi_app__(self):
            from .app import create_app

            return create_app(self.settings)

    deployment = serve.deployment(name=DEPLOYMENT_NAME)(FunAudioChatServer)
    return deployment.options(**deployment_options(settings, options)).bind(asdict(settings))


def build_app(args: dict[str, str]):
    """Application builder for Ray's own CLI and config files:
    `serve run transformers_fac.serving.ray_serve:build_app model=tiny max_batch_size=8`."""
    return application(settings_from_strings(args))


def is_loopback(host: str) -> bool:
    """Whether `host` (an address or `localhost`) only reaches this machine.

    Example:
        >>> is_loopback("127.0.0.1"), is_loopback("0.0.0.0")
        (True, False)
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run(settings: ServerSettings, options: dict, host: str, port: int, ray_init: dict) -> int:
    """Starts (or joins) Ray, deploys the application on `host:port` and serves until SIGTERM or Ctrl-C; then the
    replicas are drained and Ray is shut down."""
    if "address" not in ray_init and not os.environ.get("RAY_ADDRESS") and is_loopback(host):
        os.environ.setdefault(SINGLE_MACHINE_SWITCH, "0")  # read when Ray is imported, inherited by its processes
    ray = require("ray")
    serve = require("ray.serve")
    ray.init(**ray_init)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        serve.start(http_options={"host": host, "port": port})
        serve.run(application(settings, options), name=APP_NAME, route_prefix="/", blocking=False)
        logger.info("Serving %s on http://%s:%d with Ray Serve", settings.model, host, port)
        print(f"Serving on http://{host}:{port} (Ray Serve)", flush=True)
        stop.wait()
        logger.info("Stopping: draining the replicas")
    finally:
        serve.shutdown()
        ray.shutdown()
    return 0


__all__ = ["application", "build_app", "deployment_options", "is_loopback", "run"]
