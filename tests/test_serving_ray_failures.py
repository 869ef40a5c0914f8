"""`fac-serve --ray` when a model replica dies: a local Ray instance with one replica of the tiny model (a client that
leaves mid-stream first: its reply is cancelled on the replica); three spoken replies are in flight on it (a non-streamed chat completion, a streamed one that has sent its first chunk, a Realtime
response) when the replica is killed with SIGKILL. Each client gets the OpenAI error shape from the ingress (a 503 with
`Retry-After`, an `error` server-sent event, a Realtime `error` event then close code 1011), not Ray's plain-text 500
or a dropped connection; a request sent right after the kill waits for Ray's new replica and gets the same answer as
before the kill. Then SIGTERM with a stream in flight: new requests get a 503, the stream is cut after the drain time
with an `error` event, and the log says how many requests were cut."""

import concurrent.futures
import os
import signal
import time

import httpx
import openai
import pytest
import websockets

from tests.serving_utils import MODEL, pcm16_24k, question, ray_env, running_server

ARGS = [
    "--ray",
    "--replicas",
    "1",
    "--ray-num-cpus",
    "4",
    "--ray-object-store-mb",
    "80",
    "--max-new-tokens",
    "300",
    "--drain-seconds",
    "3",
]
SPOKEN = {"modalities": ["text", "audio"], "max_completion_tokens": 300, "temperature": 0}
ERROR_KEYS = {"message", "type", "param", "code"}


def replica_pid(response) -> int:
    """The pid of the model replica that answered (its `x-fac-replica: <host>-<pid>` header)."""
    return int(response.headers["x-fac-replica"].rsplit("-", 1)[1])


def metric(url: str, name: str) -> tuple[float, int]:
    """(the metric `name` of the replica that answered, its pid), from `/metrics`."""
    response = httpx.get(f"{url}/metrics", timeout=60)
    line = next(line for line in response.text.splitlines() if line.startswith(f"{name} "))
    return float(line.split()[1]), replica_pid(response)


def wait_for(url: str, name: str, value: float, pid: int) -> None:
    deadline = time.monotonic() + 120
    while metric(url, name) != (value, pid):
        assert time.monotonic() < deadline, f"{name} never reached {value}"
        time.sleep(0.1)


def test_a_killed_replica_answers_in_the_openai_error_shape(tmp_path):
    with running_server(ARGS, tmp_path / "ray.log", timeout=300, env=ray_env()) as server:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=300)

        def short_answer():
            raw = client.chat.completions.with_raw_response.create(
                model=MODEL, messages=question(), modalities=["text"], max_completion_tokens=6, temperature=0
            )
            return raw.parse().choices[0].message.content, replica_pid(raw)

        before, first_pid = short_answer()

        left = client.chat.completions.create(  # a client that leaves mid-stream: its reply is cancelled
            model=MODEL, messages=question(), stream=True, audio={"voice": "中文女", "format": "pcm16"}, **SPOKEN
        )
        next(iter(left))
        left.close()
        wait_for(server.url, "fac_replies_cancelled_total", 1, first_pid)
        wait_for(server.url, "fac_requests_in_flight", 0, first_pid)

        def non_streamed():
            try:
                client.chat.completions.create(model=MODEL, messages=question(), **SPOKEN)
            except openai.APIStatusError as error:
                return error.status_code, error.response.headers.get("retry-after"), error.response.json()
            raise AssertionError("the reply was not cut")

        with concurrent.futures.ThreadPoolExecutor(1) as pool, client.realtime.connect(model=MODEL) as realtime:
            cut_reply = pool.submit(non_streamed)
            stream = client.chat.completions.create(
                model=MODEL, messages=question(), stream=True, audio={"voice": "中文女", "format": "pcm16"}, **SPOKEN
            )
            chunks = iter(stream)
            assert next(chunks).choices[0].delta.role == "assistant"
            assert realtime.recv().type == "session.created"
            realtime.session.update(session={"type": "realtime", "max_output_tokens": 300})
            assert realtime.recv().type == "session.updated"
            realtime.conversation.item.create(
                item={"type": "message", "role": "user", "content": [{"type": "input_audio", "audio": pcm16_24k()}]}
            )
            realtime.response.create()
            wait_for(server.url, "fac_requests_in_flight", 3, first_pid)  # the three replies are being generated
            os.kill(first_pid, signal.SIGKILL)

            with pytest.raises(openai.APIError) as streamed:
                for _ in chunks:
                    pass
            status, retry_after, body = cut_reply.result(timeout=300)
            events = []
            with pytest.raises(websockets.exceptions.ConnectionClosedError) as closed:
                while True:
                    events.append(realtime.recv())
        after, second_pid = short_answer()

        stream = client.chat.completions.create(
            model=MODEL, messages=question(), stream=True, audio={"voice": "中文女", "format": "pcm16"}, **SPOKEN
        )
        chunks = iter(stream)
        next(chunks)
        server.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 60
        while (ready := httpx.get(f"{server.url}/ready", timeout=60)).status_code != 503:
            assert time.monotonic() < deadline, "the server never said it was draining"
            time.sleep(0.1)
        refused = httpx.post(
            f"{server.url}/v1/chat/completions", json={"model": MODEL, "messages": question()}, timeout=60
        )
        with pytest.raises(openai.APIError) as shut_down:
            for _ in chunks:
                pass
        assert server.process.wait(120) == 0

    assert (status, retry_after, set(body["error"])) == (503, "5", ERROR_KEYS)
    assert (body["error"]["type"], body["error"]["code"]) == ("server_error", "unavailable")
    assert "replica" in body["error"]["message"]
    assert streamed.value.body == body["error"]  # the stream's last event: the same error
    errors = [event.error for event in events if event.type == "error"]
    assert [(error.type, error.code, error.message) for error in errors] == [
        ("server_error", "unavailable", body["error"]["message"])
    ]
    assert events[-1].type == "error" and closed.value.rcvd.code == 1011
    assert second_pid != first_pid and after == before  # a new replica, the same greedy answer
    assert server.output().count("A model replica went away") == 3
    for response in (ready, refused):
        assert (response.status_code, response.headers["retry-after"]) == (503, "5")
        assert response.json()["error"]["message"] == "The server is shutting down and takes no new requests."
    assert shut_down.value.body["code"] == "unavailable" and "shut down" in shut_down.value.body["message"]
    assert "Stopped (1 request(s) cut after the drain time)" in server.output()
