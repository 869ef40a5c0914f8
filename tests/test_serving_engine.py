"""The batching engine in-process on the tiny checkpoint: batches assembled from single requests, per-row stops,
failure isolation, the bounded queue, reproducible seeds; and a server process drained by SIGTERM."""

import base64
import signal
import threading
import time

import httpx
import numpy as np
import pytest
import torch

from tests.serving_utils import AUDIO, MODEL, QUESTION, question, running_server
from transformers_fac.audio_io import load_audio
from transformers_fac.prompts import AUDIO_TEMPLATE, S2M_SYSTEM_PROMPT, S2T_SYSTEM_PROMPT
from transformers_fac.serving import (
    AudioDelta,
    BatchingEngine,
    EngineClosed,
    QueueFull,
    ReplyDone,
    ReplyFailed,
    ReplyRequest,
    RequestError,
    ServerSettings,
    TextDelta,
)
from transformers_fac.serving.collate import collate
from transformers_fac.serving.loading import load


@pytest.fixture(scope="module")
def loaded():
    return load(ServerSettings(model="tiny"))


def prompt(processor, system: str = S2T_SYSTEM_PROMPT, audios: int = 1, text: str = "") -> str:
    content = "\n".join([AUDIO_TEMPLATE] * audios + ([text] if text else []))
    messages = [{"role": "system", "content": system}, {"role": "user", "content": content}]
    return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def finish(reply) -> tuple[str, list, ReplyDone | ReplyFailed]:
    text, audio, final = "", [], None
    for event in reply:
        if isinstance(event, TextDelta):
            text += event.text
        elif isinstance(event, AudioDelta):
            audio.append(event.samples)
        else:
            final = event
    return text, audio, final


def test_collated_batch_gives_the_processor_batch_outputs(loaded):
    """Single-request outputs joined by `collate` give the same logits as the processor's own batch, also with a
    text-only row and audio longer than 30 s (whose features are padded differently)."""
    processor, model = loaded.processor, loaded.model
    short = load_audio(QUESTION)
    long = np.concatenate([load_audio(AUDIO / "real_zh_6s.wav")] * 6)  # 36 s
    rows = [
        (prompt(processor), [short]),
        (prompt(processor, audios=0, text="hello"), []),
        (prompt(processor, audios=2), [long, short]),
    ]
    singles = [processor(text=text, audio=audios or None, return_tensors="pt") for text, audios in rows]
    ours = collate(singles, processor.tokenizer.pad_token_id, processor.speech_tokenizer.pad_token_id)
    theirs = processor(
        text=[text for text, _ in rows], audio=[a for _, audios in rows for a in audios], return_tensors="pt"
    )
    assert torch.equal(ours["input_ids"], theirs["input_ids"]) and torch.equal(
        ours["speech_ids"], theirs["speech_ids"]
    )
    assert ours["input_features"].shape == theirs["input_features"].shape  # 60 s windows for all
    with torch.no_grad():
        logits = [model(**batch, output_speech_logits=False).logits for batch in (ours, theirs)]
    mask = ours["attention_mask"].bool()
    torch.testing.assert_close(logits[0][mask], logits[1][mask], rtol=1e-4, atol=1e-4)


def test_cancel_stops_one_row_and_the_other_goes_on(loaded):
    engine = BatchingEngine(loaded.model, loaded.processor, max_batch_size=2, max_wait_ms=2000).start()
    try:
        text = prompt(loaded.processor, system=S2M_SYSTEM_PROMPT)
        request = ReplyRequest(text, [load_audio(QUESTION)], speaker="中文男", max_new_tokens=40, temperature=0)
        first, second = engine.submit(request), engine.submit(request)
        for event in first:
            if isinstance(event, TextDelta):
                first.cancel()
                break
        done = [event for event in first if isinstance(event, ReplyDone)]
        _, audio, other = finish(second)
    finally:
        assert engine.close(timeout=120)
    assert engine.stats.batches == 1 and engine.stats.largest_batch == 2
    assert done[0].finish_reason == "cancelled" and done[0].completion_tokens < 40
    assert other.finish_reason == "length" and other.completion_tokens == 40
    assert sum(piece.size for piece in audio) == other.speech_codes * 960 == other.audio_samples
    assert engine.stats.cancelled == 1 and engine.stats.completed == 1


class BrokenPromptEngine(BatchingEngine):
    """Corrupts the prompt of requests asking for 'break': generating their batch fails at the first step."""

    def prepare(self, request):
        inputs = super().prepare(request)
        if "break" in request.prompt:
            inputs["input_ids"][0, -1] = 10**6  # no such token: the embedding lookup fails
        return inputs


def test_a_failing_request_fails_alone(loaded):
    engine = BrokenPromptEngine(loaded.model, loaded.processor, max_batch_size=3, max_wait_ms=2000).start()
    try:
        good = ReplyRequest(prompt(loaded.processor, audios=0, text="hi"), spoken=False, max_new_tokens=3)
        bad = ReplyRequest(prompt(loaded.processor, audios=0, text="break"), spoken=False, max_new_tokens=3)
        replies = [engine.submit(good), engine.submit(bad), engine.submit(good)]
        finals = [finish(reply)[2] for reply in replies]
        after = finish(engine.submit(good))[2]
    finally:
        engine.close(timeout=60)
    assert isinstance(finals[1], ReplyFailed) and "model failed" in finals[1].message
    assert [final.completion_tokens for final in (finals[0], finals[2], after)] == [3, 3, 3]
    assert engine.stats.failed == 1


def test_queue_limit_bad_requests_and_closing(loaded):
    engine = BatchingEngine(loaded.model, loaded.processor, max_queue=1)  # not started: nothing leaves the queue
    request = ReplyRequest(prompt(loaded.processor, audios=0, text="hi"), spoken=False, max_new_tokens=2)
    engine.submit(request)
    with pytest.raises(QueueFull) as full:
        engine.submit(request)
    assert full.value.retry_after >= 1 and engine.stats.rejected == 1
    with pytest.raises(RequestError, match="at most"):
        too_long = ReplyRequest(prompt(loaded.processor, audios=0, text="x" * 5000), spoken=False)
        BatchingEngine(loaded.model, loaded.processor, max_prompt_tokens=1000).submit(too_long)
    with pytest.raises(RequestError, match="speaker|voice"):
        engine.prepare(ReplyRequest(prompt(loaded.processor, audios=0), speaker="nobody"))
    engine.start()
    assert engine.close(timeout=60)  # the queued request is finished first
    with pytest.raises(EngineClosed):
        engine.submit(request)


def test_seeded_sampling_is_reproducible_and_unbatched(loaded):
    engine = BatchingEngine(loaded.model, loaded.processor, max_batch_size=4, max_wait_ms=500).start()
    try:
        text = prompt(loaded.processor, audios=0, text="hi")
        seeded = ReplyRequest(text, spoken=False, max_new_tokens=12, temperature=1.0, seed=7)
        replies = [engine.submit(seeded) for _ in range(2)]
        texts = [finish(reply)[0] for reply in replies]
        other = finish(engine.submit(ReplyRequest(text, spoken=False, max_new_tokens=12, temperature=1.0, seed=8)))[0]
    finally:
        engine.close(timeout=60)
    assert texts[0] == texts[1] != other
    assert engine.stats.largest_batch == 1


def test_sigterm_drains_in_flight_requests(tmp_path):
    """SIGTERM while a reply streams: the server stops taking requests, finishes the reply, and exits with 0."""
    with running_server(["--max-new-tokens", "30"], tmp_path / "server.log") as server:
        body = {
            "model": MODEL,
            "messages": question(),
            "modalities": ["text", "audio"],
            "audio": {"voice": "中文女", "format": "pcm16"},
            "stream": True,
            "max_completion_tokens": 30,
            "stream_options": {"include_usage": True},
        }
        samples, lines = 0, []
        with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body, timeout=180) as response:
            for line in filter(None, response.iter_lines()):
                lines.append(line)
                if len(lines) == 4:
                    server.process.send_signal(signal.SIGTERM)
                    refused = threading.Event()
                    threading.Thread(target=_refused_later, args=(server.url, refused)).start()
                if '"data"' in line:
                    audio = line.split('"data": "')[1].split('"')[0]
                    samples += len(base64.b64decode(audio)) // 2
        assert server.process.wait(120) == 0
        assert refused.wait(30)
    assert lines[-1] == "data: [DONE]"
    usage = next(line for line in lines if '"usage"' in line and '"choices": []' in line)
    codes = int(usage.split('"completion_tokens_details": {"audio_tokens": ')[1].split(",")[0])
    assert samples == codes * 960 > 0
    assert "Stopped (drained)" in server.output()


def _refused_later(url: str, refused: threading.Event) -> None:
    """After SIGTERM, new requests are refused soon (connection refused, or 503 while draining)."""
    for _ in range(100):
        try:
            if httpx.get(f"{url}/ready", timeout=10).status_code == 503:
                break
        except httpx.HTTPError:
            break
        time.sleep(0.05)
    else:
        return
    refused.set()


@pytest.mark.filterwarnings("ignore::DeprecationWarning:ray")  # pydantic deprecations inside Ray Serve
def test_config_file_flags_and_ray_options(tmp_path, monkeypatch):
    from transformers_fac.serving.cli import build_parser, resolve
    from transformers_fac.serving.extras import require
    from transformers_fac.serving.ray_serve import build_app, deployment_options

    config = tmp_path / "serve.yaml"
    config.write_text("model: tiny\nmax_batch_size: 4\nray:\n  num_replicas: 3\n  ray_actor_options: {num_cpus: 2}\n")
    monkeypatch.setenv("FAC_API_KEY", "from-env")
    settings, ray = resolve(build_parser().parse_args(["--config", str(config), "--max-batch-size", "6"]))
    assert (settings.max_batch_size, settings.api_key, ray["num_replicas"]) == (6, "from-env", 3)
    options = deployment_options(settings, ray, gpu=True)
    assert options["ray_actor_options"] == {"num_gpus": 1, "num_cpus": 2} and options["max_ongoing_requests"] == 12
    settings, ray = resolve(build_parser().parse_args(["--min-replicas", "1", "--max-replicas", "4", "--ray"]))
    scaling = deployment_options(settings, ray, gpu=False)
    assert scaling["autoscaling_config"] == {"min_replicas": 1, "max_replicas": 4} and "num_replicas" not in scaling
    assert resolve(build_parser().parse_args([]))[1] is None  # no Ray unless asked
    assert type(build_app({"model": "tiny", "max_batch_size": "4"})).__name__ == "Application"  # `serve run` builder
    with pytest.raises(ImportError, match=r'pip install "transformers-fac\[ray\]"'):
        require("ray.not_a_module")  # a missing optional dependency names its extra
    config.write_text("max_batch: 4\n")
    with pytest.raises(ValueError, match="max_batch_size"):
        resolve(build_parser().parse_args(["--config", str(config)]))


def test_streams_decoded_together_equal_streams_decoded_alone(loaded):
    """Four streams (two voices, an embedding, a cloned voice with its prompt; replies of different lengths) fed 5
    codes per step, then finished together: one flow call per step for the three without a prompt, one vocoder call
    per step for all four, and the audio of each stream decoded alone (to float rounding)."""
    from transformers_fac.serving.stream_batch import finish_together, step_together

    decoder = loaded.model.token2wav
    generator = torch.Generator().manual_seed(0)
    cloned = decoder.clone_voice(str(AUDIO / "question_zh.wav"), name="clip")
    voices = ["中文女", "中文男", torch.randn(192, generator=generator), cloned]
    replies = [torch.randint(0, 6561, (length,), generator=generator).tolist() for length in (90, 65, 90, 90)]
    calls, vocoder_calls = [], []
    hook = decoder.flow.register_forward_hook(lambda module, args, output: calls.append(args[0].shape[0]))
    vocoder_hook = decoder.hift.conv_pre.register_forward_hook(
        lambda module, args, output: vocoder_calls.append(args[0].shape[0])
    )
    try:
        alone = []
        for voice, codes in zip(voices, replies):
            stream = decoder.stream_decoder(voice)
            pieces = [stream.push(codes[i : i + 5]) for i in range(0, len(codes), 5)] + [stream.finish()]
            alone.append(torch.cat(pieces, dim=1))
        calls_alone, calls[:] = list(calls), []
        vocoder_calls_alone, vocoder_calls[:] = list(vocoder_calls), []
        streams = [decoder.stream_decoder(voice) for voice in voices]
        together = [[] for _ in streams]
        for i in range(0, 90, 5):
            for stream, codes in zip(streams, replies):
                if i < len(codes):
                    stream.add(codes[i : i + 5])
            for pieces, chunk in zip(together, step_together(streams)):
                pieces.append(chunk)
        tails = finish_together(streams)  # the last steps of all four together
        together = [torch.cat([*pieces, tail], dim=1) for pieces, tail in zip(together, tails)]
    finally:
        hook.remove()
        vocoder_hook.remove()
    assert len(calls) < len(calls_alone) and max(calls) == 3  # the three streams without a prompt shared flow calls
    assert len(vocoder_calls) < len(vocoder_calls_alone) and max(vocoder_calls) == 4  # all four shared the vocoder
    for reference, ours in zip(alone, together):
        assert ours.shape == reference.shape
        error = (ours - reference).pow(2).mean()
        assert error == 0 or 10 * torch.log10(reference.pow(2).mean() / error) > 40


def test_compiled_engine_answers_a_batch_like_the_eager_one(loaded):
    """`fac-serve --compile`: the model decodes with static caches and the compiled step (warmed up while loading);
    a batch of two different spoken questions gets the same words, codes and audio as from the eager engine."""
    compiled = load(ServerSettings(model="tiny", compile=True, max_new_tokens=20))
    assert compiled.model.generation_config.cache_implementation == "static"
    assert loaded.model.generation_config.cache_implementation is None  # the default model stays eager
    text = prompt(loaded.processor, system=S2M_SYSTEM_PROMPT)
    questions = [load_audio(QUESTION), load_audio(AUDIO / "real_zh_6s.wav")]
    answers = []
    for model in (loaded.model, compiled.model):
        engine = BatchingEngine(model, loaded.processor, max_batch_size=2, max_wait_ms=2000).start()
        try:
            replies = [
                engine.submit(ReplyRequest(text, [audio], max_new_tokens=15, temperature=0)) for audio in questions
            ]
            answers.append([finish(reply) for reply in replies])
        finally:
            assert engine.close(timeout=120)
        assert engine.stats.largest_batch == 2
    for (eager_text, eager_audio, eager_done), (text_, audio, done) in zip(*answers):
        assert text_ == eager_text and done.speech_codes == eager_done.speech_codes > 0
        torch.testing.assert_close(np.concatenate(audio), np.concatenate(eager_audio), rtol=1e-4, atol=1e-5)
