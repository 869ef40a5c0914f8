"""The server as a Ray Serve application: the same app and routes, one model replica per GPU, behind Ray's HTTP proxy
and a light ingress.

Each model replica builds the app of `transformers_fac.serving.app` on its own worker (its lifespan loads the model
and starts a reply engine), so everything `fac-serve` does, every replica does. Ray's proxy hands every request to
the ingress deployment (`ray_ingress.RayIngress`: one replica, no model), which relays it to a model replica through
a `DeploymentHandle`; when that replica dies (killed, out of memory), the ingress answers in the OpenAI error shape
instead of Ray's plain-text 500. SIGTERM drains at the ingress (`RayIngress.drain`) while Ray's proxy still relays the
answers. Ray routes each request to a model replica, restarts the ones that die and scales their number.

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
INGRESS_NAME = "fun-audio-chat-ingress"
INGRESS_MAX_ONGOING = 10_000  # requests and Realtime sessions the ingress relays at once
INGRESS_EXTRA_DRAIN_S = 10  # the ingress outlives the model replicas' drain by this much, to relay their last answers
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
    """A bound Ray Serve application serving `settings`: a light ingress (`ray_ingress.RayIngress`, no model) in
    front of the model deployment, whose replicas run with the deployment `options`."""
    serve = require("ray.serve")

    class FunAudioChatServer:
        """One model replica: the `fac-serve` app on this worker, called by the ingress through `forward`. Its
        lifespan runs with the replica: the model loads when it starts, and stopping the replica drains it."""

        async def __init__(self, values: dict):
            from uvicorn import Config
            from uvicorn.lifespan.on import LifespanOn

            from .app import create_app

            self.protocol_app = create_app(ServerSettings.from_dict(values))
            self.lifespan = LifespanOn(Config(self.protocol_app, lifespan="on", log_config=None))
            await self.lifespan.startup()
            if self.lifespan.should_exit:
                raise RuntimeError("The server failed to start: see the replica's log.")

        async def __del__(self):
            if getattr(self, "lifespan", None) is not None:  # absent when the constructor failed
                await self.lifespan.shutdown()

        async def forward(self, scope: dict, body: bytes | None, inbox=None, session: str | None = None):
            """Serves one request relayed by the ingress and streams back the ASGI messages of the answer."""
            from .ray_ingress import asgi_messages, body_receiver, inbox_receiver

            receive = body_receiver(body) if inbox is None else inbox_receiver(inbox, session)
            async for message in asgi_messages(self.protocol_app, scope, receive):
                yield message

    @serve.ingress()
    class FunAudioChatIngress:
        """The HTTP ingress: relays every request to a model replica (see `ray_ingress`)."""

        def __init__(self, values: dict, model):
            self.settings = ServerSettings.from_dict(values)
            self.model = model

        def __serve_build_asgi_app__(self):
            from .ray_ingress import RayIngress

            self.front = RayIngress(self.settings, self.model)
            return self.front

        async def drain(self, seconds: float) -> int:
            """Stops taking requests, waits for the ones in flight, cuts the rest; how many were cut."""
            return await self.front.drain(seconds)

    model = serve.deployment(name=DEPLOYMENT_NAME)(FunAudioChatServer)
    model = model.options(**deployment_options(settings, options)).bind(asdict(settings))
    ingress = serve.deployment(name=INGRESS_NAME)(FunAudioChatIngress)
    return ingress.options(**ingress_options(settings)).bind(asdict(settings), model)


def ingress_options(settings: ServerSettings) -> dict:
    """The ingress deployment: one light replica (no GPU, no CPU reserved) that holds every request in flight
    (Realtime sessions included) while the model replicas answer them, and outlives their drain."""
    return {
        "num_replicas": 1,
        "ray_actor_options": {"num_cpus": 0},
        "max_ongoing_requests": INGRESS_MAX_ONGOING,
        "graceful_shutdown_timeout_s": settings.drain_seconds + INGRESS_EXTRA_DRAIN_S,
    }


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
        drain(serve, settings.drain_seconds)
    finally:
        serve.shutdown()
        ray.shutdown()
    return 0


def drain(serve, seconds: float) -> None:
    """Drains the ingress (new requests get a 503, the ones in flight may finish for `seconds`, the rest are cut
    with a 503 or an `error` event) while Ray's proxy still relays their answers, and logs how it ended."""
    from .ray_ingress import CUT_ANSWER_SECONDS

    try:
        response = serve.get_app_handle(APP_NAME).drain.remote(seconds)
        cut = response.result(timeout_s=seconds + CUT_ANSWER_SECONDS + 30)
    except Exception as error:  # noqa: BLE001 - stopping goes on whatever happened to the ingress
        logger.warning("The ingress could not drain (%s): stopping at once", error)
        return
    logger.info("Stopped (%s)", f"{cut} request(s) cut after the drain time" if cut else "drained")


__all__ = ["application", "build_app", "deployment_options", "ingress_options", "is_loopback", "run"]
