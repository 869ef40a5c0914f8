"""A server process drained by SIGTERM, the server's configuration and Ray options, and the batched bounded streams
of the decoder that the reply engine uses."""

import base64
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest
import torch

from tests.serving_utils import AUDIO, MODEL, openai_client, question, running_server
from transformers_fac.serving import ServerSettings
from transformers_fac.serving.loading import load


@pytest.fixture(scope="module")
def loaded():
    return load(ServerSettings(model="tiny"))


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
    from transformers_fac.token2wav.stream_batch import finish_together, step_together  # (StreamBatch runs these)

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


def _spawned_children(pid: int) -> set[int]:
    """The processes `pid` spawned with multiprocessing (their command line runs `spawn_main`)."""
    children = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = (entry / "cmdline").read_bytes().decode(errors="replace")
        except (OSError, IndexError, ValueError):
            continue
        if parent == pid and "spawn_main" in command:
            children.add(int(entry.name))
    return children


def test_fac_serve_with_a_decoder_process_speaks_and_stops_it(tmp_path):
    """`fac-serve --decoder-process`: a streamed spoken reply through the `openai` client has 960 samples per code,
    decoded (after its first chunk) by the server's child process, which SIGTERM stops with the server."""
    with running_server(["--decoder-process", "--max-new-tokens", "30"], tmp_path / "server.log") as server:
        children = _spawned_children(server.process.pid)
        assert len(children) == 1
        client = openai_client(server)
        stream = client.chat.completions.create(
            model=MODEL,
            messages=question(),
            modalities=["text", "audio"],
            audio={"voice": "中文女", "format": "pcm16"},
            max_completion_tokens=30,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
        samples, pieces, usage = 0, 0, None
        for chunk in stream:
            usage = chunk.usage or usage
            for choice in chunk.choices:
                if choice.delta.audio is not None and choice.delta.audio.data:
                    samples += len(base64.b64decode(choice.delta.audio.data)) // 2
                    pieces += 1
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(120) == 0
    codes = usage.completion_tokens_details.audio_tokens
    assert samples == codes * 960 > 0 and pieces > 1
    assert not any(Path(f"/proc/{child}").exists() for child in children)
