"""`fac-serve` on the tiny checkpoint, driven by the official `openai` client (Chat Completions and Realtime) and plain
HTTP: spoken and streamed replies, text and tool calls, batching under load, disconnects, full queue, bad inputs."""

import base64
import concurrent.futures
import contextlib
import io
import json
import re
import threading
import urllib.request

import httpx
import numpy as np
import openai
import pytest
import soundfile as sf

from tests.serving_utils import (
    MODEL,
    QUESTION,
    TOOLS,
    audio_b64,
    build_tool_calling_checkpoint,
    openai_client,
    pcm16_24k,
    question,
    running_server,
    save_test_voice,
)

API_KEY = "test-key-3f9a"
SAMPLES_PER_CODE = 960
MAX_QUEUE = 8
MAX_ROWS = 2
pytestmark = pytest.mark.filterwarnings(  # raised inside the openai package's realtime client
    "ignore:connect\\(\\) must be used as a context manager:DeprecationWarning"
)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    checkpoint = build_tool_calling_checkpoint(tmp_path_factory.mktemp("serving") / "tiny-tools")
    voices = tmp_path_factory.mktemp("voices")
    save_test_voice(voices)
    args = ["--model", str(checkpoint), "--max-batch-size", str(MAX_ROWS), "--max-queue", str(MAX_QUEUE)]
    args += ["--voice-dir", str(voices)]
    args += ["--max-body-mb", "1", "--max-new-tokens", "80"]
    log = tmp_path_factory.mktemp("serving-log") / "server.log"
    with running_server(args, log, env={"FAC_API_KEY": API_KEY}) as process:
        yield process


@pytest.fixture(scope="module")
def client(server):
    return openai_client(server, API_KEY)


def spoken(client, messages, **kwargs):
    settings = dict(modalities=["text", "audio"], audio={"voice": "中文女", "format": "wav"}, temperature=0)
    return client.chat.completions.create(model=MODEL, messages=messages, **{**settings, **kwargs})


def stream_spoken(client, voice: str, tokens: int = 8) -> tuple[bytes, str, str | None, object]:
    """Concatenated PCM16 audio, transcript, finish reason and usage of a streamed spoken reply."""
    stream = spoken(
        client,
        question(),
        max_completion_tokens=tokens,
        audio={"voice": voice, "format": "pcm16"},
        stream=True,
        stream_options={"include_usage": True},
    )
    audio, transcript, finish, usage = bytearray(), "", None, None
    for chunk in stream:
        usage = chunk.usage or usage
        for choice in chunk.choices:
            piece = choice.delta.audio
            if piece is not None:
                audio += base64.b64decode(piece.data) if piece.data else b""
                transcript += piece.transcript or ""
            finish = choice.finish_reason or finish
    return bytes(audio), transcript, finish, usage


# ------------------------------------------------------------------------------------------------ the openai client
def test_models_and_health(server, client):
    assert {model.id for model in client.models.list()} >= {MODEL}
    with urllib.request.urlopen(f"{server.url}/ready") as response:
        assert json.load(response)["status"] == "ready"


def test_spoken_reply_is_a_24khz_wav_of_960_samples_per_code(client):
    reply = spoken(client, question(), max_completion_tokens=8)
    choice = reply.choices[0]
    audio = choice.message.audio
    waveform, rate = sf.read(io.BytesIO(base64.b64decode(audio.data)))
    codes = reply.usage.completion_tokens_details.audio_tokens
    assert rate == 24000 and codes > 0
    assert len(waveform) == codes * SAMPLES_PER_CODE
    assert audio.id.startswith("audio_") and audio.transcript and choice.message.content is None
    assert choice.finish_reason == "length" and reply.usage.completion_tokens == 8
    assert reply.usage.prompt_tokens_details.audio_tokens == 26  # 5.1 s of question: one slot per 0.2 s
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + 8


def test_streamed_audio_chunks_add_up_to_the_codes(client):
    whole = spoken(client, question(), max_completion_tokens=8)
    audio, transcript, finish, usage = stream_spoken(client, "中文女")
    codes = usage.completion_tokens_details.audio_tokens
    assert len(audio) // 2 == codes * SAMPLES_PER_CODE
    assert finish == "length" and transcript == whole.choices[0].message.audio.transcript
    streamed = np.frombuffer(audio, dtype="<i2")
    offline, _ = sf.read(io.BytesIO(base64.b64decode(whole.choices[0].message.audio.data)), dtype="int16")
    assert np.array_equal(streamed, offline)  # the same greedy reply, the same decoder schedule


def test_a_cloned_voice_given_at_start(client):
    """`--voice-dir`: a saved voice with a prompt speaks, alone or batched with a stock voice, streamed or not."""
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        futures = [
            pool.submit(spoken, client, question(), max_completion_tokens=8, audio={"voice": voice, "format": "wav"})
            for voice in ("my-voice", "中文女")
        ]
        cloned, stock = (future.result() for future in futures)
    waveforms = [sf.read(io.BytesIO(base64.b64decode(r.choices[0].message.audio.data)))[0] for r in (cloned, stock)]
    codes = cloned.usage.completion_tokens_details.audio_tokens
    assert len(waveforms[0]) == len(waveforms[1]) == codes * SAMPLES_PER_CODE
    assert not np.allclose(waveforms[0], waveforms[1], atol=1e-3)  # the same codes in another voice
    audio, _, _, usage = stream_spoken(client, "my-voice")
    assert len(audio) // 2 == usage.completion_tokens_details.audio_tokens * SAMPLES_PER_CODE


def test_text_only_and_multi_turn(client):
    messages = question("Answer briefly.")
    first = client.chat.completions.create(model=MODEL, messages=messages, max_completion_tokens=6, temperature=0)
    assert first.choices[0].message.audio is None and first.choices[0].message.content
    messages += [{"role": "assistant", "content": first.choices[0].message.content}]
    messages += [{"role": "system", "content": "Be kind."}, *question()]
    second = client.chat.completions.create(model=MODEL, messages=messages, max_completion_tokens=6, temperature=0)
    assert second.usage.prompt_tokens_details.audio_tokens == 2 * 26
    assert second.usage.prompt_tokens > first.usage.prompt_tokens + 26


def test_tool_calls(client):
    reply = client.chat.completions.create(model=MODEL, messages=question(), tools=TOOLS, temperature=0)
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.function.name == "get_weather" and call.id.startswith("call_")
    assert json.loads(call.function.arguments) == {"location": "杭州"}
    stream = client.chat.completions.create(model=MODEL, messages=question(), tools=TOOLS, temperature=0, stream=True)
    deltas = [choice.delta for chunk in stream for choice in chunk.choices if choice.delta.tool_calls]
    assert [d.tool_calls[0].function.name for d in deltas] == ["get_weather"]
    # the tool's answer goes back as a tool message; the model then replies (here: text)
    messages = question() + [
        {"role": "assistant", "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": '{"weather": "sunny"}'},
    ]
    follow_up = client.chat.completions.create(model=MODEL, messages=messages, tools=TOOLS, max_completion_tokens=4)
    assert follow_up.usage.prompt_tokens > reply.usage.prompt_tokens + reply.usage.completion_tokens


# ------------------------------------------------------------------------------------------------ realtime
def events_until(connection, last: str) -> list:
    events = []
    for event in connection:
        events.append(event)
        if event.type == last:
            return events
    raise AssertionError(f"the connection closed before {last}")


def expect_committed(connection):
    """The `input_audio_buffer.committed` event of a turn, then its `conversation.item.added` / `done`."""
    committed, added, done = connection.recv(), connection.recv(), connection.recv()
    assert committed.type == "input_audio_buffer.committed" and committed.item_id
    assert (added.type, done.type) == ("conversation.item.added", "conversation.item.done")
    assert added.item.id == committed.item_id and added.item.content[0].type == "input_audio"
    return committed


def test_realtime_session(server, client):
    with client.realtime.connect(model=MODEL) as connection:
        created = connection.recv()
        assert created.type == "session.created" and created.session.audio.output.voice == "中文女"
        session = {"type": "realtime", "instructions": "Be brief.", "max_output_tokens": 8}
        connection.session.update(session={**session, "audio": {"output": {"voice": "my-voice"}}})
        updated = connection.recv()
        assert updated.type == "session.updated" and updated.session.audio.output.voice == "my-voice"
        connection.input_audio_buffer.append(audio=pcm16_24k())
        connection.input_audio_buffer.commit()
        committed = expect_committed(connection)
        connection.response.create()
        events = events_until(connection, "response.done")
        kinds = [event.type for event in events]
        assert kinds[:2] == ["response.created", "response.output_item.added"] and kinds[-1] == "response.done"
        audio = b"".join(base64.b64decode(e.delta) for e in events if e.type == "response.output_audio.delta")
        transcript = "".join(e.delta for e in events if e.type == "response.output_audio_transcript.delta")
        done = events[-1].response
        assert done.status == "incomplete" and done.status_details.reason == "max_output_tokens"
        assert len(audio) // 2 == done.usage.output_token_details.audio_tokens * SAMPLES_PER_CODE > 0
        assert done.output[0].content[0].transcript == transcript
        item_done = next(event for event in events if event.type == "response.output_item.done")
        assert item_done.item.id == events[1].item.id == done.output[0].id
        if transcript.strip():  # the reply joins the conversation, after the user's turn
            added = next(event for event in events if event.type == "conversation.item.added")
            assert added.item.id == done.output[0].id and added.previous_item_id == committed.item_id

        # a second turn; the reply is cancelled after its first audio delta
        connection.input_audio_buffer.append(audio=pcm16_24k())
        connection.input_audio_buffer.commit()
        expect_committed(connection)
        connection.response.create(response={"max_output_tokens": 80})
        for event in connection:
            if event.type == "response.output_audio.delta":
                break
        connection.response.cancel()
        after = events_until(connection, "response.done")
        assert after[-1].response.status == "cancelled"
        assert after[-1].response.status_details.reason == "client_cancelled"
        assert after[-1].response.usage.output_tokens < 80  # stopped long before its limit

        # barge-in: a new user turn while a reply streams cancels it
        connection.response.create(response={"max_output_tokens": 80})
        for event in connection:
            if event.type == "response.output_audio.delta":
                break
        connection.input_audio_buffer.append(audio=pcm16_24k())
        connection.input_audio_buffer.commit()
        interrupted = events_until(connection, "response.done")[-1].response
        assert (interrupted.status, interrupted.status_details.reason) == ("cancelled", "turn_detected")
        expect_committed(connection)

        # the session goes on: errors are events, not a closed socket
        connection.send({"type": "response.cancel"})
        error = connection.recv()
        assert error.type == "error" and error.error.code == "response_cancel_not_active"
        connection.send({"type": "input_audio_buffer.commit"})
        assert connection.recv().error.code == "input_audio_buffer_commit_empty"


def test_realtime_server_turn_detection(server, client):
    """`server_vad`: the server finds the spoken turn in the appended audio (5 s question, then 1 s of silence),
    commits and answers it; speech during the reply interrupts it."""
    turn = base64.b64decode(pcm16_24k()) + bytes(2 * 24000)
    chunks = [base64.b64encode(turn[i : i + 9600]).decode() for i in range(0, len(turn), 9600)]  # 0.2 s each
    with client.realtime.connect(model=MODEL) as connection:
        connection.recv()
        detection = {"type": "server_vad", "silence_duration_ms": 500}
        session = {"type": "realtime", "audio": {"input": {"turn_detection": detection}}, "max_output_tokens": 80}
        connection.session.update(session=session)
        assert connection.recv().session.audio.input.turn_detection.silence_duration_ms == 500
        for chunk in chunks:
            connection.input_audio_buffer.append(audio=chunk)
        events = events_until(connection, "response.created")
        kinds = [event.type for event in events]
        assert kinds == [
            "input_audio_buffer.speech_started",
            "input_audio_buffer.speech_stopped",
            "input_audio_buffer.committed",
            "conversation.item.added",
            "conversation.item.done",
            "response.created",
        ]
        started, stopped, committed = events[:3]
        assert started.audio_start_ms < 500 and 4000 < stopped.audio_end_ms < 6000
        assert started.item_id == stopped.item_id == committed.item_id
        for event in connection:  # the reply streams; then the user speaks again
            if event.type == "response.output_audio.delta":
                break
        for chunk in chunks[:10]:
            connection.input_audio_buffer.append(audio=chunk)
        after = events_until(connection, "response.done")
        assert "input_audio_buffer.speech_started" in [event.type for event in after]
        assert (after[-1].response.status, after[-1].response.status_details.reason) == ("cancelled", "turn_detected")
        connection.input_audio_buffer.commit()  # the server commits the turns itself
        assert connection.recv().error.code == "turn_detection_on"


def text_part(role: str, text: str) -> dict:
    kind = "input_text" if role == "user" else "output_text"
    return {"type": "message", "role": role, "content": [{"type": kind, "text": text}]}


def prompt_tokens_of_a_reply(connection, items: list[dict]) -> tuple[list, object]:
    """Adds `items`, asks for a short written reply; the items' added events and the reply's `response.done`."""
    connection.recv()  # session.created
    added = []
    for item in items:
        connection.conversation.item.create(item=item)
        added.append((connection.recv(), connection.recv()))
    connection.response.create(response={"output_modalities": ["text"], "max_output_tokens": 3})
    events = events_until(connection, "response.done")
    assert any(event.type == "response.output_text.delta" for event in events)
    return added, events[-1].response


def test_realtime_conversation_items(server, client):
    """`conversation.item.create`: written user turns, earlier replies and audio turns join the conversation that
    the reply reads; malformed items are `error` events and the session goes on."""
    audio_turn = {"type": "message", "role": "user", "content": [{"type": "input_audio", "audio": pcm16_24k()}]}
    short = [text_part("user", "Hello."), text_part("assistant", "Fine.")]
    long = [text_part("user", "Hello there, how are you today, my friend?"), text_part("assistant", "Fine.")]
    with client.realtime.connect(model=MODEL) as connection:
        _, after_short = prompt_tokens_of_a_reply(connection, [*short, audio_turn])
    with client.realtime.connect(model=MODEL) as connection:
        added, after_long = prompt_tokens_of_a_reply(connection, [*long, audio_turn])
        kinds = [(first.type, second.type) for first, second in added]
        assert kinds == [("conversation.item.added", "conversation.item.done")] * 3
        assert added[0][0].previous_item_id is None and added[1][0].previous_item_id == added[0][0].item.id
        assert added[0][0].item.content[0].text == "Hello there, how are you today, my friend?"
        assert added[2][0].item.content[0].type == "input_audio"

        bad_items = {
            "item.role": text_part("system", "Be brief."),
            "item.type": {"type": "mcp_call", "id": "m1", "name": "x", "server_label": "s", "arguments": "{}"},
            "item.call_id": {"type": "function_call_output", "output": "{}"},
            "item.content": {"type": "message", "role": "user", "content": []},
            "item.content[0]": {"type": "message", "role": "user", "content": [{"type": "input_audio", "audio": "%"}]},
        }
        for param, item in bad_items.items():
            connection.conversation.item.create(item=item)
            error = connection.recv()
            assert error.type == "error" and error.error.param == param, (param, error)
        connection.conversation.item.create(item=text_part("user", "again"), previous_item_id="item_unknown")
        assert connection.recv().error.param == "previous_item_id"
    assert after_short.usage.input_token_details.audio_tokens == after_long.usage.input_token_details.audio_tokens > 0
    assert after_long.usage.input_tokens >= after_short.usage.input_tokens + 6  # the written words are in the prompt


def test_realtime_function_call_round_trip_and_truncate(server, client):
    """An agent's turn: with `tools` the model calls get_weather (a `function_call` item, its arguments in
    `response.function_call_arguments.delta` / `.done`); the client sends the tool's output and asks for a spoken
    reply, which reads the call and its output; the user barges in and the client truncates the interrupted reply to
    what was heard (`conversation.item.truncate`), which is all the conversation keeps of it."""
    flat_tools = [{"type": "function", **tool["function"]} for tool in TOOLS]
    with client.realtime.connect(model=MODEL) as connection:
        connection.recv()
        session = {"type": "realtime", "tools": flat_tools, "temperature": 0, "max_output_tokens": 80}
        connection.session.update(session=session)
        assert connection.recv().session.tools[0].name == "get_weather"
        connection.input_audio_buffer.append(audio=pcm16_24k())
        connection.input_audio_buffer.commit()
        expect_committed(connection)
        connection.response.create()
        events = events_until(connection, "response.done")
        call = next(event for event in events if event.type == "response.function_call_arguments.done")
        delta = next(event for event in events if event.type == "response.function_call_arguments.delta")
        assert call.name == "get_weather" and json.loads(call.arguments) == {"location": "杭州"}
        assert delta.delta == call.arguments and delta.call_id == call.call_id
        called = events[-1].response
        assert called.status == "completed" and [item.type for item in called.output] == ["function_call"]
        assert called.output[0].call_id == call.call_id and called.output[0].arguments == call.arguments
        added = next(event for event in events if event.type == "conversation.item.added")
        assert added.item.type == "function_call" and added.item.id == call.item_id

        output = {"type": "function_call_output", "call_id": call.call_id, "output": '{"weather": "sunny"}'}
        connection.conversation.item.create(item=output)
        added, done = connection.recv(), connection.recv()
        assert (added.type, done.type) == ("conversation.item.added", "conversation.item.done")
        assert added.item.type == "function_call_output" and added.previous_item_id == call.item_id
        connection.response.create(response={"tool_choice": "none", "output_modalities": ["audio"]})
        heard = []
        for event in connection:
            if event.type == "response.output_audio_transcript.delta":
                heard.append(event.delta)
            if event.type == "response.output_audio.delta":
                break
        connection.input_audio_buffer.append(audio=pcm16_24k())  # barge-in
        connection.input_audio_buffer.commit()
        rest = events_until(connection, "response.done")
        interrupted = rest[-1].response
        assert (interrupted.status, interrupted.status_details.reason) == ("cancelled", "turn_detected")
        assert interrupted.usage.input_tokens > spoken_prompt_tokens_of_the_question(client) + 65  # + call, output
        expect_committed(connection)
        heard += [event.delta for event in rest if event.type == "response.output_audio_transcript.delta"]

        reply_id = interrupted.output[0].id
        connection.conversation.item.truncate(item_id=reply_id, content_index=0, audio_end_ms=10**7)
        assert connection.recv().error.param == "audio_end_ms"  # more than was sent
        connection.conversation.item.truncate(item_id=reply_id, content_index=0, audio_end_ms=200)
        truncated = connection.recv()
        assert (truncated.type, truncated.item_id, truncated.audio_end_ms) == (
            "conversation.item.truncated",
            reply_id,
            200,
        )
        connection.conversation.item.retrieve(item_id=reply_id)
        kept = connection.recv().item
        assert kept.content[0].transcript == heard[0]  # the first 0.2 s: one LLM step of text
        connection.conversation.item.delete(item_id=reply_id)
        assert connection.recv().type == "conversation.item.deleted"
        connection.conversation.item.retrieve(item_id=reply_id)
        assert connection.recv().error.code == "item_not_found"


def spoken_prompt_tokens_of_the_question(client) -> int:
    """Prompt tokens of a spoken reply to the question alone (a fresh session)."""
    with client.realtime.connect(model=MODEL) as connection:
        connection.recv()
        connection.input_audio_buffer.append(audio=pcm16_24k())
        connection.input_audio_buffer.commit()
        expect_committed(connection)
        connection.response.create(response={"max_output_tokens": 1})
        return events_until(connection, "response.done")[-1].response.usage.input_tokens


def test_realtime_input_transcription(server, client):
    """`audio.input.transcription`: a committed turn is transcribed by the model itself (text mode, its speech
    recognition instruction); deltas add up to the transcript, which the item then carries."""
    with client.realtime.connect(model=MODEL) as connection:
        connection.recv()
        audio = {"input": {"transcription": {"model": "whisper-1"}}}
        connection.session.update(session={"type": "realtime", "audio": audio})
        assert connection.recv().session.audio.input.transcription.model == "whisper-1"
        connection.input_audio_buffer.append(audio=pcm16_24k())
        connection.input_audio_buffer.commit()
        committed = expect_committed(connection)
        events = events_until(connection, "conversation.item.input_audio_transcription.completed")
        deltas = [event.delta for event in events if event.type.endswith("transcription.delta")]
        completed = events[-1]
        assert completed.item_id == committed.item_id and completed.transcript == "".join(deltas).strip()
        assert completed.usage.input_token_details.audio_tokens == 26 and completed.usage.output_tokens > 0
        connection.conversation.item.retrieve(item_id=committed.item_id)
        assert connection.recv().item.content[0].transcript == completed.transcript


def test_realtime_needs_the_key(server):
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    with pytest.raises(InvalidStatus) as refused:
        connect(f"ws://127.0.0.1:{server.port}/v1/realtime", additional_headers={"Authorization": "Bearer nope"})
    assert refused.value.response.status_code == 403
    # browsers pass the key as a subprotocol
    protocols = ["realtime", f"openai-insecure-api-key.{API_KEY}"]
    with connect(f"ws://127.0.0.1:{server.port}/v1/realtime", subprotocols=protocols) as websocket:
        assert json.loads(websocket.recv(timeout=30))["type"] == "session.created"


# ------------------------------------------------------------------------------------------------ load and faults
def test_concurrent_requests_are_batched_and_equal_unbatched(server, client):
    """32 greedy requests, 8 at a time, over two different questions: every answer equals the one-at-a-time answer."""
    questions = [question(), question(path=QUESTION.with_name("question_zh.wav"))]
    alone = [spoken(client, messages, max_completion_tokens=5) for messages in questions]
    before = metrics(server)

    def ask(index: int):
        return index % 2, spoken(client, questions[index % 2], max_completion_tokens=5)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(ask, range(32), timeout=600))
    after = metrics(server)
    assert len(answers) == 32
    for which, answer in answers:
        reference = alone[which].choices[0].message.audio
        audio = answer.choices[0].message.audio
        assert audio.transcript == reference.transcript
        assert (
            answer.usage.completion_tokens_details.audio_tokens
            == alone[which].usage.completion_tokens_details.audio_tokens
        )
        ours, theirs = (sf.read(io.BytesIO(base64.b64decode(a.data)))[0] for a in (audio, reference))
        assert ours.shape == theirs.shape and snr_db(theirs, ours) > 40  # the same codes, decoded in a batch
    assert after["fac_batch_rows_total"] - before["fac_batch_rows_total"] == 32
    # decoding steps (each one batch): fewer than the 32 × 5 steps of the replies one after the other
    assert after["fac_batches_total"] - before["fac_batches_total"] < 32 * 5
    assert after["fac_batch_rows_max"] > 1


def snr_db(reference: np.ndarray, other: np.ndarray) -> float:
    error = np.mean((reference - other) ** 2)
    return float("inf") if error == 0 else 10 * np.log10(np.mean(reference**2) / error)


def metrics(server) -> dict[str, float]:
    request = urllib.request.Request(f"{server.url}/metrics", headers={"Authorization": f"Bearer {API_KEY}"})
    with urllib.request.urlopen(request) as response:
        text = response.read().decode()
    return {name: float(value) for name, value in re.findall(r"^(\w+) ([\d.]+)$", text, re.MULTILINE)}


def test_full_queue_and_disconnect(server, client):
    """Long streamed replies occupy every row of the engine; short text requests (quick to prepare) fill the queue
    and the ones beyond are refused with 429 and Retry-After; the long replies' clients disconnect, their rows are
    freed and the queued requests are served."""
    before = metrics(server)
    headers = {"Authorization": f"Bearer {API_KEY}"}
    body = {"model": MODEL, "messages": question(), "modalities": ["text", "audio"], "temperature": 0}
    long_body = {**body, "stream": True, "audio": {"voice": "中文男", "format": "pcm16"}, "max_completion_tokens": 80}
    short_body = {"model": MODEL, "messages": [{"role": "user", "content": "Hi!"}], "max_completion_tokens": 2}

    def short():
        return httpx.post(f"{server.url}/v1/chat/completions", json=short_body, headers=headers, timeout=180)

    with contextlib.ExitStack() as stack:
        longs = []
        for _ in range(MAX_ROWS):
            long = stack.enter_context(
                httpx.stream("POST", f"{server.url}/v1/chat/completions", json=long_body, headers=headers, timeout=180)
            )
            lines = long.iter_lines()  # (keep it: closing this iterator closes the connection)
            assert next(lines).startswith("data:")  # the reply is being generated
            longs.append((long, lines))
        with concurrent.futures.ThreadPoolExecutor(MAX_QUEUE + 4) as pool:
            futures = [pool.submit(short) for _ in range(MAX_QUEUE + 4)]
            first = next(concurrent.futures.as_completed(futures, timeout=180)).result()
            assert first.status_code == 429  # no row is free: the first answer is a refusal
            assert int(first.headers["retry-after"]) >= 1 and first.json()["error"]["code"] == "queue_full"
            for long, _ in longs:
                long.close()  # the clients of the long replies go away
            statuses = sorted(future.result().status_code for future in futures)
    assert set(statuses) == {200, 429} and statuses.count(200) >= MAX_QUEUE
    after = metrics(server)
    assert after["fac_replies_cancelled_total"] == before["fac_replies_cancelled_total"] + MAX_ROWS
    assert after["fac_requests_rejected_total"] == before["fac_requests_rejected_total"] + statuses.count(429)
    assert spoken(client, question(), max_completion_tokens=2).choices[0].finish_reason == "length"


def test_a_request_during_a_long_reply_speaks_before_it_ends(client):
    """While a 60-step spoken reply streams, a second question gets its first audio before that reply ends (it joins
    the running batch at the next step), and the same words and audio as when asked alone."""
    alone = spoken(client, question(path=QUESTION.with_name("question_zh.wav")), max_completion_tokens=6)
    long = spoken(
        client,
        question(),
        max_completion_tokens=60,
        audio={"voice": "中文男", "format": "pcm16"},
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = iter(long)
    while not any(choice.delta.audio and choice.delta.audio.data for choice in next(chunks).choices):
        pass  # the long reply is speaking
    events, done = [], threading.Event()

    def ask_second():
        stream = spoken(
            client,
            question(path=QUESTION.with_name("question_zh.wav")),
            max_completion_tokens=6,
            audio={"voice": "中文女", "format": "pcm16"},
            stream=True,
        )
        transcript = ""
        for chunk in stream:
            for choice in chunk.choices:
                audio = choice.delta.audio
                if audio is not None and audio.data:
                    events.append(("second audio", done.is_set()))
                transcript += (audio.transcript or "") if audio is not None else ""
        events.append(("second transcript", transcript))

    second = threading.Thread(target=ask_second)
    second.start()
    usage = None
    for chunk in chunks:
        usage = chunk.usage or usage
    done.set()
    second.join(180)
    assert usage.completion_tokens == 60
    first_audio = next(event for event in events if event[0] == "second audio")
    assert first_audio == ("second audio", False)  # it spoke while the long reply was still streaming
    assert events[-1] == ("second transcript", alone.choices[0].message.audio.transcript)


def long_silence_flac() -> str:
    buffer = io.BytesIO()
    sf.write(buffer, np.zeros(8000 * 130, dtype=np.float32), 8000, format="FLAC")  # 130 s in a few kB
    return base64.b64encode(buffer.getvalue()).decode()


@pytest.mark.parametrize(
    ("change", "status", "code", "words"),
    [
        ({"key": "wrong"}, 401, "invalid_api_key", "API key"),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "A" * 2_000_000}}]}
                ]
            },
            413,
            "request_too_large",
            "larger than",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "input_audio",
                                "input_audio": {
                                    "data": base64.b64encode(b"plain text, not a sound" * 20).decode(),
                                    "format": "wav",
                                },
                            }
                        ],
                    }
                ]
            },
            400,
            "invalid_audio",
            "not an audio file",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "input_audio", "input_audio": {"data": long_silence_flac(), "format": "flac"}}
                        ],
                    }
                ]
            },
            400,
            "audio_too_long",
            "120 s",
        ),
        ({"audio": {"voice": "alloy", "format": "wav"}}, 400, "unknown_voice", "中文女, 中文男, my-voice"),
        ({"n": 2}, 400, None, "one choice"),
        ({"max_completion_tokens": 5000}, 400, "too_many_tokens", "at most 80"),
        ({"model": "gpt-4o-audio-preview"}, 404, "model_not_found", "fun-audio-chat"),
        ({"audio": {"voice": "中文女", "format": "wav"}, "stream": True}, 400, None, "pcm16"),
    ],
)
def test_bad_requests_get_the_right_4xx(server, change, status, code, words):
    change = dict(change)
    key = change.pop("key", API_KEY)
    body = {
        "model": MODEL,
        "messages": question(),
        "modalities": ["text", "audio"],
        "audio": {"voice": "中文女", "format": "wav"},
        "max_completion_tokens": 2,
        **change,
    }
    response = httpx.post(
        f"{server.url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=120
    )
    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == code and words in error["message"]
    assert response.headers["x-fac-replica"]


def test_openai_client_raises_its_own_errors(server):
    wrong = openai.OpenAI(base_url=f"{server.url}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.models.list()


def test_nothing_secret_is_logged(server):
    log = server.output()
    assert "POST /v1/chat/completions" in log  # the access log is on
    assert API_KEY not in log and audio_b64()[100:160] not in log
    assert "Traceback" not in log


def test_concurrent_realtime_and_chat(server, client):
    """A realtime reply and chat completions at the same time share the engine."""
    results = {}

    def chat():
        results["chat"] = spoken(client, question(), max_completion_tokens=4).choices[0].finish_reason

    worker = threading.Thread(target=chat)
    with client.realtime.connect(model=MODEL) as connection:
        connection.recv()
        connection.input_audio_buffer.append(audio=pcm16_24k())
        connection.input_audio_buffer.commit()
        connection.recv()
        connection.response.create(response={"max_output_tokens": 4, "output_modalities": ["text"]})
        worker.start()
        events = events_until(connection, "response.done")
    worker.join(120)
    assert results["chat"] == "length" and events[-1].response.status == "incomplete"
    assert any(event.type == "response.output_text.delta" for event in events)
