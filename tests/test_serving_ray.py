"""`fac-serve --ray`: a local Ray instance (small: 4 logical CPUs, 80 MB object store) with 2 replicas of the tiny
model behind Ray's HTTP proxy and the ingress deployment answers concurrent `openai` client requests on both replicas, then shuts down. Every
listening socket of every process it started is on 127.0.0.1, except the one the README names: each Serve replica's
inter-deployment gRPC server (the 2 model replicas' and the ingress's), which Ray Serve binds to all interfaces
(`[::]:0`) with no option to change it."""

import concurrent.futures
import ipaddress
import time

import openai
import psutil

from tests.serving_utils import MODEL, question, ray_env, running_server

ARGS = ["--ray", "--replicas", "2", "--ray-num-cpus", "4", "--ray-object-store-mb", "80", "--max-new-tokens", "6"]


def test_two_replicas_answer_concurrent_requests(tmp_path):
    with running_server(ARGS, tmp_path / "ray.log", timeout=300, env=ray_env()) as server:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=300)

        def ask(_):
            raw = client.chat.completions.with_raw_response.create(
                model=MODEL, messages=question(), modalities=["text", "audio"], max_completion_tokens=4, temperature=0
            )
            reply = raw.parse()
            codes = reply.usage.completion_tokens_details.audio_tokens
            return raw.headers["x-fac-replica"], reply.choices[0].message.audio.transcript, codes

        replicas, answers = set(), []
        deadline = time.monotonic() + 240  # the second replica may still be loading when the first answers
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            while len(replicas) < 2 and time.monotonic() < deadline:
                for replica, transcript, codes in pool.map(ask, range(8)):
                    replicas.add(replica)
                    answers.append((transcript, codes))
        listening = listening_sockets(server.process.pid)
    assert server.port in {port for _, _, port in listening}  # Serve's HTTP proxy is among them
    assert {name for name, _, _ in listening} >= {"gcs_server", "raylet"}
    wide = [(name, ip, port) for name, ip, port in listening if not loopback(ip)]
    assert len(wide) == 3 and all(name.startswith("ray::ServeReplica") and ip == "::" for name, ip, _ in wide), wide
    assert len(replicas) == 2
    assert len(set(answers)) == 1 and answers[0][1] > 0  # greedy: every replica gives the same reply
    assert server.process.returncode == 0
    assert "draining the replicas" in server.output()


def listening_sockets(pid: int) -> set[tuple[str, str, int]]:
    """(process name, address, port) of every listening TCP socket of `pid` and all its descendants."""
    root = psutil.Process(pid)
    found = set()
    for process in [root, *root.children(recursive=True)]:
        try:
            for connection in process.net_connections(kind="tcp"):
                if connection.status == psutil.CONN_LISTEN:
                    found.add((process.name(), connection.laddr.ip, connection.laddr.port))
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip.split("%")[0])
    return address.is_loopback or (
        address.version == 6 and address.ipv4_mapped is not None and address.ipv4_mapped.is_loopback
    )
