"""Throughput and latency of `fac-serve` under concurrent load: batched serving against one request at a time.

How to run (prints a markdown table; no assertions):

    python benchmarks/bench_server.py                                   # tiny and mid presets, CPU
    python benchmarks/bench_server.py --preset tiny --requests 32 --concurrency 8 --tokens 13
    python benchmarks/bench_server.py --preset mid --token2wav full
    python benchmarks/bench_server.py --preset 8b --device cuda         # the real model (GPU, downloads it)
    python benchmarks/bench_server.py --space --users 8                 # the Gradio Space's replies (tiny)

Each configuration starts a real `fac-serve` process on 127.0.0.1 (`--max-batch-size 8`, or `1` for one at a time)
and sends `--requests` streamed requests for spoken replies (the 5 s English question, or with `--question text` a
written one, which skips the audio front end; greedy, `--tokens` LLM steps, 5 steps per second of speech) from
`--concurrency` clients with the official `openai` client. Per request it records the time to
the first audio chunk and to the end; overall the requests and seconds of audio served per second of wall time.

`--space` measures the Gradio Space instead (`spaces_demo/engine.py`, in-process): `--users` users ask at the same
moment and each waits for its spoken reply; with the Space's batching engine (`FAC_BATCH_SIZE=8`) and as before,
one reply at a time (`FAC_BATCH_SIZE=1`, Gradio's concurrency limit 1, emulated by a lock).

Presets:
- `tiny`: the built-in tiny random end-to-end checkpoint.
- `mid`: the generation benchmark's mid-size LLM (`bench_generate.MID_SIZE`, random weights) on the tiny
  checkpoint's processor, with a random CosyVoice3 decoder of the real size (`--token2wav full`) or a small one.
- `8b`: FunAudioLLM/Fun-Audio-Chat-8B and its decoder (needs a GPU).
"""

import argparse
import base64
import concurrent.futures
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from tests.serving_utils import MODEL, question, running_server  # noqa: E402


def mid_checkpoint(folder: Path, token2wav: str) -> Path:
    """The tiny checkpoint (processor, voices) with a mid-size random LLM and a random decoder of the chosen size."""
    import torch
    from bench_generate import MID_SIZE

    from transformers_fac import (
        FunAudioChatConfig,
        FunAudioChatForConditionalGeneration,
        FunAudioChatToken2Wav,
        FunAudioChatToken2WavConfig,
    )
    from transformers_fac.tiny import tiny_checkpoint

    shutil.copytree(tiny_checkpoint(), folder)
    config = json.loads((folder / "config.json").read_text())
    for part, sizes in ((config["text_config"], "text_config"), (config["audio_config"], "audio_config")):
        part.update(MID_SIZE[sizes])
        part.pop("layer_types", None)  # derived from the number of layers
    config["audio_config"]["crq_transformer_config"].update(MID_SIZE["crq_transformer_config"])
    config["audio_config"]["crq_transformer_config"].pop("layer_types", None)
    torch.manual_seed(0)
    model = FunAudioChatForConditionalGeneration(FunAudioChatConfig.from_dict(config)).eval()
    model.save_pretrained(folder)
    sizes = {} if token2wav == "full" else {"dit_dim": 256, "dit_depth": 4, "dit_heads": 4, "hift_base_channels": 128}
    decoder = FunAudioChatToken2Wav(FunAudioChatToken2WavConfig(**sizes)).eval()
    with torch.no_grad():
        decoder.hift.f0_predictor.classifier.bias.fill_(150.0)  # voiced frames, like real speech
    voices = folder / "token2wav" / "spk2info.pt"
    kept = voices.read_bytes()
    shutil.rmtree(folder / "token2wav")
    decoder.save_pretrained(folder / "token2wav")
    (folder / "token2wav" / "spk2info.pt").write_bytes(kept)
    return folder


TEXT_QUESTION = [{"role": "user", "content": "Hello! What is the weather like in Hangzhou in spring?"}]


def one_request(client, tokens: int, spoken_question: bool) -> dict:
    start = time.perf_counter()
    first_audio, samples = None, 0
    stream = client.chat.completions.create(
        model=MODEL,
        messages=question() if spoken_question else TEXT_QUESTION,
        modalities=["text", "audio"],
        audio={"voice": "中文女", "format": "pcm16"},
        max_completion_tokens=tokens,
        temperature=0,
        stream=True,
    )
    for chunk in stream:
        for choice in chunk.choices:
            audio = choice.delta.audio
            if audio is not None and audio.data:
                first_audio = first_audio or time.perf_counter() - start
                samples += len(base64.b64decode(audio.data)) // 2
    return {"first_audio": first_audio, "total": time.perf_counter() - start, "audio_s": samples / 24000}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def measure(url: str, requests: int, concurrency: int, tokens: int, spoken_question: bool) -> dict:
    import openai

    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=3600)
    one_request(client, tokens, spoken_question)  # warm-up
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        runs = list(pool.map(lambda _: one_request(client, tokens, spoken_question), range(requests)))
    wall = time.perf_counter() - start
    totals = [run["total"] for run in runs]
    firsts = [run["first_audio"] for run in runs]
    return {
        "wall": wall,
        "req_per_s": requests / wall,
        "audio_per_s": sum(run["audio_s"] for run in runs) / wall,
        "p50": statistics.median(totals),
        "p90": percentile(totals, 0.9),
        "p99": percentile(totals, 0.99),
        "first_p50": statistics.median(firsts),
        "first_max": max(firsts),
    }


def space_run(batch_size: int, users: int, tokens: int) -> dict:
    """`users` users of the Space ask at once; time to each one's first audio chunk and to the end of its reply."""
    import threading

    sys.path.insert(0, str(REPO / "spaces_demo"))
    from engine import Engine, Settings

    from transformers_fac.audio_io import load_audio
    from transformers_fac.conversation import FunAudioChatConversation
    from transformers_fac.prompts import S2M_SYSTEM_PROMPT

    engine = Engine.load(Settings(model="tiny", max_new_tokens=tokens, batch_size=batch_size, concurrency=batch_size))
    chat = FunAudioChatConversation(system_prompt=S2M_SYSTEM_PROMPT)
    chat.add_user_audio(load_audio(REPO / "tests" / "fixtures" / "audio" / "question_en.wav"))
    gate = threading.Semaphore(batch_size)  # Gradio's concurrency limit on the reply event
    barrier, runs = threading.Barrier(users), []

    def user():
        inputs = chat.model_inputs(engine.processor)
        barrier.wait()
        start, first = time.perf_counter(), None
        with gate:
            for chunk in engine.speak(inputs, spoken=True, voice="中文女"):
                if chunk.audio is not None and first is None:
                    first = time.perf_counter() - start
        runs.append({"first_audio": first, "total": time.perf_counter() - start})

    list(engine.speak(chat.model_inputs(engine.processor), spoken=True, voice="中文女"))  # warm-up
    threads = [threading.Thread(target=user) for _ in range(users)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    engine.close()
    totals, firsts = [run["total"] for run in runs], [run["first_audio"] for run in runs]
    return {"wall": wall, "p50": statistics.median(totals), "max": max(totals),
            "first_p50": statistics.median(firsts), "first_max": max(firsts)}  # fmt: skip


def space_main(users: int, tokens: int) -> None:
    rows = [(label, space_run(batch, users, tokens)) for label, batch in (("batched (8)", 8), ("one at a time", 1))]
    print(
        f"\nSpace (tiny, in-process), {users} users asking at once, {tokens} LLM steps ({tokens / 5:.1f} s of speech)\n"
    )
    print("| serving | wall (s) | reply done p50 / max (s) | first audio p50 / max (s) |")
    print("|---|---|---|---|")
    for label, m in rows:
        print(
            f"| {label} | {m['wall']:.1f} | {m['p50']:.2f} / {m['max']:.2f} | {m['first_p50']:.2f} / {m['first_max']:.2f} |"
        )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=["tiny", "mid", "8b", "both"], default="both", help="both = tiny + mid")
    parser.add_argument("--token2wav", choices=["full", "small"], default="small", help="decoder size of `mid`")
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=13, help="LLM steps per reply (13 = 2.6 s of speech)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--question", choices=["audio", "text"], default="audio", help="spoken question (5 s) or a written one"
    )
    parser.add_argument("--space", action="store_true", help="measure the Gradio Space's replies (tiny) instead")
    parser.add_argument("--users", type=int, default=8, help="--space: users asking at once")
    args = parser.parse_args(argv)
    if args.space:
        return space_main(args.users, args.tokens)

    presets = ["tiny", "mid"] if args.preset == "both" else [args.preset]
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for preset in presets:
            model = {"tiny": "tiny", "8b": "FunAudioLLM/Fun-Audio-Chat-8B"}.get(preset)
            if preset == "mid":
                model = str(mid_checkpoint(Path(scratch) / "mid", args.token2wav))
            for label, batch in (("batched (8)", 8), ("one at a time", 1)):
                server_args = ["--model", model, "--device", args.device, "--max-batch-size", str(batch)]
                server_args += ["--max-queue", str(args.requests), "--max-new-tokens", str(args.tokens)]
                with running_server(server_args, Path(scratch) / f"{preset}-{batch}.log", timeout=1800) as server:
                    result = measure(
                        server.url, args.requests, args.concurrency, args.tokens, args.question == "audio"
                    )
                    rows.append((preset, label, result))

    name = {"mid": f"mid + {args.token2wav} token2wav"}
    print(
        f"\nfac-serve, {args.requests} streamed spoken requests from {args.concurrency} clients, {args.tokens} LLM "
        f"steps each ({args.tokens / 5:.1f} s of speech), {args.question} question, greedy, {args.device}\n"
    )
    print(
        "| model | serving | wall (s) | requests/s | audio s/s | latency p50 / p90 / p99 (s) | first audio p50 / max (s) |"
    )
    print("|---|---|---|---|---|---|---|")
    for preset, label, m in rows:
        print(
            f"| {name.get(preset, preset)} | {label} | {m['wall']:.1f} | {m['req_per_s']:.2f} | {m['audio_per_s']:.2f} "
            f"| {m['p50']:.2f} / {m['p90']:.2f} / {m['p99']:.2f} | {m['first_p50']:.2f} / {m['first_max']:.2f} |"
        )


if __name__ == "__main__":
    main()
