"""`fac-serve` against hostile clients: every bad input gets an OpenAI-shaped refusal (an HTTP status with an `error`
body, or a realtime `error` event) that says what is wrong, cheap checks come before expensive work, sessions and
connections are bounded, and after each case the same server (or session) answers a normal request correctly.
Also: the published OpenAPI schema describes the answers, `/metrics` counts refusals apart from successes, and a
SIGTERM keeps the OpenAI error contract while it drains."""

import base64
import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import httpx
import jsonschema
import pytest
from websockets.sync.client import connect

from tests.serving_utils import MODEL, QUESTION, openai_client, pcm16_24k, question, running_server

API_KEY = "hostile-key-7c1d"
MAX_AUDIO_S = 20
IDLE_S = 4
# the request head / body deadlines: long enough that a pause of this process between connecting and sending (a full
# garbage collection of the whole suite's heap) never makes a normal client late; 1 s failed a CI run that way
SLOW_CLIENT_S = 4
HEADERS = {"Authorization": f"Bearer {API_KEY}"}
pytestmark = pytest.mark.filterwarnings("ignore:connect\\(\\) must be used as a context manager:DeprecationWarning")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    args = ["--max-body-mb", "8", "--max-audio-seconds", str(MAX_AUDIO_S), "--max-new-tokens", "8"]
    args += ["--realtime-idle-seconds", str(IDLE_S), "--header-timeout-seconds", str(SLOW_CLIENT_S)]
    args += ["--body-timeout-seconds", str(SLOW_CLIENT_S)]
    log = tmp_path_factory.mktemp("hostile") / "server.log"
    with running_server(args, log, env={"FAC_API_KEY": API_KEY}) as process:
        yield process


@pytest.fixture(scope="module")
def client(server):
    return openai_client(server, API_KEY)


def normal_reply_works(client) -> None:
    """A normal request right after: a text reply of its 2 tokens."""
    reply = client.chat.completions.create(model=MODEL, messages=question(), max_completion_tokens=2, temperature=0)
    assert reply.choices[0].finish_reason == "length" and reply.usage.completion_tokens == 2


def nested(depth: int) -> str:
    return '{"a": ' * depth + "1" + "}" * depth


def body(**change) -> dict:
    return {"model": MODEL, "messages": [{"role": "user", "content": "Hello"}], "max_completion_tokens": 2, **change}


# ------------------------------------------------------------------------------------------------ HTTP bodies
HTTP_CASES = {
    "nested 5000 deep": ("[" * 5000 + "]" * 5000, 400, "invalid_json", "nests more than 64 levels"),
    "nested 1000 deep in a tool": (
        json.dumps(body(tools=[{"type": "function", "function": {"name": "f", "parameters": "X"}}])).replace(
            '"X"', nested(1000)
        ),
        400,
        "invalid_json",
        "nests more than 64 levels",
    ),
    "seed 2**70": (json.dumps(body(seed=2**70)), 400, None, "seed: Input should be less than 9223372036854775808"),
    "seed -2**64": (json.dumps(body(seed=-(2**64))), 400, None, "seed: Input should be greater than or equal"),
    "1 MB of text": (
        json.dumps(body(messages=[{"role": "user", "content": "word " * 200_000}])),
        400,
        "context_length_exceeded",
        "1000000 characters",
    ),
    "4 MiB of text": (
        json.dumps(body(messages=[{"role": "user", "content": "x" * (4 << 20)}])),
        400,
        "context_length_exceeded",
        "at most 131072",
    ),
    "not JSON": ("{'model': ", 400, "invalid_json", "not valid JSON"),
    "wrong key": (json.dumps(body()), 401, "invalid_api_key", "API key"),
}


@pytest.mark.parametrize("case", list(HTTP_CASES))
def test_bad_bodies_get_openai_errors(server, client, case):
    payload, status, code, words = HTTP_CASES[case]
    headers = {"Authorization": "Bearer wrong"} if status == 401 else HEADERS
    response = httpx.post(
        f"{server.url}/v1/chat/completions",
        content=payload,
        headers={**headers, "Content-Type": "application/json"},
        timeout=60,
    )
    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == code and words in error["message"], error
    normal_reply_works(client)


def raw_exchange(server, data: bytes) -> bytes:
    """Sends `data` on a fresh connection and reads until the server closes it (bounded by a 30 s socket timeout)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(data)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


@pytest.mark.parametrize(
    "data",
    [
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: appl",  # headers never finished
        b"",  # connected, nothing sent
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        + API_KEY.encode()
        + b'\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"model"',  # body never finished
    ],
    ids=["partial headers", "silent", "partial body"],
)
def test_slow_clients_get_408_and_are_disconnected(server, client, data):
    answer = raw_exchange(server, data)
    head, _, rest = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408")
    assert json.loads(rest)["error"]["code"] == "request_timeout"
    normal_reply_works(client)


# ------------------------------------------------------------------------------------------------ realtime
class Session:
    """A raw realtime WebSocket (the official client cannot send binary frames or broken JSON)."""

    def __init__(self, server):
        self.socket = connect(f"ws://127.0.0.1:{server.port}/v1/realtime", additional_headers=HEADERS)
        assert self.recv()["type"] == "session.created"

    def send(self, event) -> None:
        self.socket.send(event if isinstance(event, (str, bytes)) else json.dumps(event))

    def recv(self) -> dict:
        return json.loads(self.socket.recv(timeout=120))

    def until(self, kind: str) -> list[dict]:
        events = [self.recv()]
        while events[-1]["type"] != kind:
            events.append(self.recv())
        return events

    def answers(self) -> dict:
        """A normal text response on this session: its `response.done`."""
        self.send({"type": "response.create", "response": {"output_modalities": ["text"], "max_output_tokens": 2}})
        done = self.until("response.done")[-1]["response"]
        assert done["status"] == "incomplete" and done["usage"]["output_tokens"] == 2
        return done


def seconds_of_pcm16(seconds: float) -> str:
    return base64.b64encode(bytes(2 * int(24000 * seconds))).decode()


def user_audio(seconds: float, audio: str | None = None) -> dict:
    part = {"type": "input_audio", "audio": audio or seconds_of_pcm16(seconds)}
    return {"type": "conversation.item.create", "item": {"type": "message", "role": "user", "content": [part]}}


REALTIME_CASES = {
    "binary frame": (b"\x00\x01binary", "invalid_event", "Binary frames"),
    "response not an object": ({"type": "response.create", "response": "x"}, "invalid_value", "response must be"),
    "response.audio not an object": (
        {"type": "response.create", "response": {"audio": "x"}},
        "invalid_value",
        "response.audio must be an object",
    ),
    "nested 5000 deep": ('{"type": ' + "[" * 5000 + "]" * 5000 + "}", "invalid_json", "nests more than 64"),
    "not JSON": ("{type: 1", "invalid_json", "not valid JSON"),
    "160 s audio item": (user_audio(160), "audio_too_long", f"at most {MAX_AUDIO_S} s per item"),
    "buffer beyond the limit": (
        {"type": "input_audio_buffer.append", "audio": seconds_of_pcm16(MAX_AUDIO_S + 1)},
        "input_audio_buffer_full",
        f"exceed {MAX_AUDIO_S} s",
    ),
    "instructions of 1 MB": (
        {"type": "session.update", "session": {"type": "realtime", "instructions": "x" * 1_000_000}},
        "context_length_exceeded",
        "1000000 characters",
    ),
    "session.audio a string": (
        {"type": "session.update", "session": {"type": "realtime", "audio": "loud"}},
        "invalid_value",
        "session.audio must be an object",
    ),
    "truncate an unknown item": (
        {"type": "conversation.item.truncate", "item_id": "nope", "content_index": 0, "audio_end_ms": 10},
        "item_not_found",
        "no item 'nope'",
    ),
}


def test_malformed_realtime_events_get_error_events(server):
    """One session: each bad event gets an `error` event naming the problem, and the session answers right after."""
    session = Session(server)
    for case, (event, code, words) in REALTIME_CASES.items():
        session.send(event)
        error = session.recv()
        assert error["type"] == "error" and error["error"]["code"] == code, (case, error)
        assert words in error["error"]["message"], (case, error)
        session.answers()
    session.socket.close()


def test_realtime_history_is_bounded(server):
    """30 items of 8 s: the conversation keeps at most MAX_AUDIO_S seconds (older items are deleted with events), so
    a response reads at most that much audio."""
    session = Session(server)
    speech = pcm16_24k(QUESTION)  # 5.1 s of speech (silence would be refused as all zeros)
    deleted = 0
    for _ in range(30):
        session.send(user_audio(0, speech))
        item = session.until("conversation.item.done")[-1]["item"]
        session.send({"type": "conversation.item.retrieve", "item_id": item["id"]})  # after the deletions, if any
        events = session.until("conversation.item.retrieved")
        deleted += sum(event["type"] == "conversation.item.deleted" for event in events)
    assert deleted == 27  # 5.1 s each: 3 fit in MAX_AUDIO_S
    done = session.answers()
    assert done["usage"]["input_token_details"]["audio_tokens"] == 3 * 26  # 3 questions of 26 slots
    session.socket.close()


def test_idle_realtime_session_is_closed(server):
    session = Session(server)
    error = session.recv()  # (no event sent: the session is idle from the start)
    assert error["type"] == "error" and error["error"]["code"] == "session_expired"
    with pytest.raises(Exception) as closed:
        session.socket.recv(timeout=30)
    assert getattr(closed.value, "rcvd", None) is not None and closed.value.rcvd.code == 1000


# ------------------------------------------------------------------------------------------------ schema, metrics
def metrics(server) -> str:
    request = urllib.request.Request(f"{server.url}/metrics", headers=HEADERS)
    with urllib.request.urlopen(request) as response:
        return response.read().decode()


def responses_of(text: str, status: int) -> int:
    pattern = rf'^fac_http_responses_total{{route="/v1/chat/completions",status="{status}"}} (\d+)$'
    found = re.search(pattern, text, re.MULTILINE)
    return int(found.group(1)) if found else 0


def test_openapi_schema_describes_requests_answers_and_errors(server, client):
    schema = httpx.get(f"{server.url}/openapi.json", timeout=30).json()
    route = schema["paths"]["/v1/chat/completions"]["post"]
    assert route["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/ChatCompletionRequest")
    assert {"200", "400", "401", "408", "413", "429", "503"} <= set(route["responses"])
    components = schema["components"]["schemas"]

    def validator(name):
        return jsonschema.Draft202012Validator({**components[name], "components": schema["components"]})

    request = body(messages=question(), modalities=["text"], temperature=0)
    validator("ChatCompletionRequest").validate(request)
    with pytest.raises(jsonschema.ValidationError):
        validator("ChatCompletionRequest").validate({**request, "messages": []})
    answer = httpx.post(f"{server.url}/v1/chat/completions", json=request, headers=HEADERS, timeout=120)
    validator("ChatCompletion").validate(answer.json())
    refusal = httpx.post(f"{server.url}/v1/chat/completions", json=body(n=3), headers=HEADERS, timeout=60)
    assert refusal.status_code == 400
    validator("ErrorResponse").validate(refusal.json())
    assert httpx.get(f"{server.url}/docs", timeout=30).status_code == 404  # no page that loads from a CDN


def test_metrics_count_refusals_apart_from_successes(server, client):
    before = metrics(server)
    normal_reply_works(client)
    httpx.post(f"{server.url}/v1/chat/completions", json=body(n=2), headers=HEADERS, timeout=60)
    httpx.post(f"{server.url}/v1/chat/completions", json=body(), headers={"Authorization": "Bearer no"}, timeout=60)
    after = metrics(server)
    assert [responses_of(after, status) - responses_of(before, status) for status in (200, 400, 401)] == [1, 1, 1]


def test_fuzzing_the_published_schema_finds_no_server_error(server, client):
    """schemathesis, a bounded seeded run from `/openapi.json`: no 5xx, and every answer has a documented status,
    content type and body shape (valid and invalid requests alike)."""
    checks = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"
    command = [sys.executable, "-m", "schemathesis.cli", "run", f"{server.url}/openapi.json", "--checks", checks]
    command += [
        "-n",
        "60",
        "-w",
        "1",
        "--seed",
        "20261207",
        "--request-timeout",
        "60",
        "-H",
        f"Authorization: Bearer {API_KEY}",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:]
    assert re.search(r"\b([1-9]\d+) generated", result.stdout), result.stdout[-2000:]
    normal_reply_works(client)


# ------------------------------------------------------------------------------------------------ shutdown
def test_sigterm_keeps_the_error_contract(tmp_path):
    """SIGTERM while a streamed and a whole reply run: `/ready` answers 503 and new requests a 503 with Retry-After
    while the port stays open; when the drain time is over, the whole reply gets a 503 with Retry-After, the stream
    an `error` event, and the log says how many requests were cut."""
    args = ["--drain-seconds", "2", "--max-new-tokens", "600"]
    long = {"model": MODEL, "messages": question(), "modalities": ["text", "audio"], "max_completion_tokens": 600}
    long["audio"] = {"voice": "中文女", "format": "pcm16"}
    results: dict = {}
    with running_server(args, tmp_path / "drain.log") as server:
        url = f"{server.url}/v1/chat/completions"
        first_chunk = threading.Event()

        def streamed():
            with httpx.stream("POST", url, json={**long, "stream": True}, timeout=120) as response:
                lines = [line for line in response.iter_lines() if line.startswith("data: ")]
                first_chunk.set()
                results["stream"] = [json.loads(line[6:]) for line in lines if line != "data: [DONE]"]

        def whole():
            response = httpx.post(url, json={**long, "audio": {"voice": "中文女", "format": "wav"}}, timeout=120)
            results["whole"] = (response.status_code, response.headers.get("retry-after"), response.json())

        workers = [threading.Thread(target=streamed), threading.Thread(target=whole)]
        for worker in workers:
            worker.start()
        deadline = time.monotonic() + 120
        while "fac_requests_in_flight 2" not in metrics_open(server) and time.monotonic() < deadline:
            time.sleep(0.2)
        server.process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        ready = httpx.get(f"{server.url}/ready", timeout=30)
        refused = httpx.post(url, json=body(), timeout=30)
        for worker in workers:
            worker.join(120)
        assert server.process.wait(60) == 0
    assert ready.status_code == 503 and ready.json()["status"] == "draining"
    assert refused.status_code == 503 and refused.headers["retry-after"] and refused.json()["error"]["code"]
    status, retry_after, answer = results["whole"]
    assert status == 503 and int(retry_after) >= 1 and "shut down" in answer["error"]["message"]
    assert results["stream"][-1]["error"]["code"] == "unavailable"
    assert any(chunk.get("choices") for chunk in results["stream"][:-1])  # it had started streaming
    assert "cutting 2 request(s) in flight" in server.output()
    assert "Stopped (2 request(s) cut after the drain time)" in server.output()


def metrics_open(server) -> str:
    with urllib.request.urlopen(f"{server.url}/metrics") as response:
        return response.read().decode()
