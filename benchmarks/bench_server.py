"""Serving under open-loop load: continuous batching (the reply engine) against today's static batches, side by side.

How to run (prints markdown tables; no assertions):

    python benchmarks/bench_server.py                                 # tiny and mid presets, CPU
    python benchmarks/bench_server.py --preset tiny --requests 24 --tokens 20
    python benchmarks/bench_server.py --preset mid --token2wav full
    python benchmarks/bench_server.py --space --users 8 --turns 3     # the Gradio Space's users (tiny)
    python benchmarks/bench_server.py --preset 8b-shapes --device cuda --concurrency 1,8,32   # GPU, closed loop

Requests arrive as a Poisson process (`--requests` of them, seeded) at three rates: 30 %, 70 % and 100 % of the
saturation rate: the replies per second the continuous engine serves while requests arrive at random times faster
than that (its rows taken by replies at random stages; [`saturation_rates`]). `--rows` requests arriving together are
also timed and shown: their replies run in lock-step and share every decoder call, which arrivals at random times
cannot, so that rate overstates what the engine sustains (it was this benchmark's saturation rate before; Poisson
arrivals at 70 % of it were more than the engine served). Every request is the same spoken question (the 5 s English
clip) answered greedily; replies differ in length as real ones do: each request's LLM steps (5 per second of speech)
are drawn from `--tokens` ± `--length-spread` (seeded, the same draws for both schedulers; `--length-spread 0` gives
every reply `--tokens` steps). Both schedulers run on the same engine code in this process, so only the scheduling
differs:

- `continuous`: `transformers_fac.engine.ReplyEngine`: a request is prefilled and joins the running batch at the next
  decoding step; a finished row leaves at once.
- `static`: the scheduler the package had before (reconstructed here, it is not in the package): a batch forms from
  the requests that arrive within `--max-wait-ms` of the first, up to `--rows`, and runs until its longest reply ends;
  requests arriving meanwhile wait for the whole batch.

Per request: the time from its arrival to its first audio chunk and to its last event; overall the seconds of audio
served per second of wall time (first arrival to last reply done). The idle first-audio time (one request alone on
a fresh engine, the median of 3) is the reference of the target "first-audio p90 at 70 % load ≤ 2× idle"; it is
measured again before every run, and each run's p90 is divided by the idle time measured just before it, so that a
shared machine's speed drifting during the benchmark does not bias the ratio (the header shows the median of 5 taken
at the start). On a shared machine the timings are noisy: `--repeat N` runs each rate and scheduler N times
(alternating which goes first) and reports the medians.

`--space` measures the Space instead (`spaces_demo/engine.py`, in-process, tiny): `--users` users talk at once, each
for `--turns` turns (a turn starts when the user's previous reply has ended), with the Space's shared engine
(`FAC_BATCH_SIZE=8`) and with one reply at a time (Gradio's concurrency limit 1, emulated by a lock).

Presets:
- `tiny`: the built-in tiny random end-to-end checkpoint.
- `mid`: the generation benchmark's mid-size LLM (`bench_generate.MID_SIZE`, random weights) on the tiny
  checkpoint's processor, with a random CosyVoice3 decoder of the real size (`--token2wav full`) or a small one.
- `8b-shapes`: random weights of Fun-Audio-Chat-8B's shapes (LLM, audio encoder, speech head; the tiny processor's
  vocabulary) in bf16, built on the device, with a random full-size decoder (for a GPU).

`--concurrency 1,8,32` runs closed loops instead of the Poisson arrivals: that many clients, each asking
`--per-client` questions one after the other, on the continuous engine with each of its batches (`--engines`: eager,
and compiled: fixed slots on static caches through one compiled step); it reports first audio p50 / p90, reply done
p50 and the real-time streams served (seconds of audio per second).
"""

import argparse
import json
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from transformers_fac.engine import AudioDelta, ReplyDone, ReplyEngine, ReplyRequest  # noqa: E402

QUESTION = REPO / "tests" / "fixtures" / "audio" / "question_en.wav"


# Fun-Audio-Chat-8B's sizes (hub_configs/Fun-Audio-Chat-8B/config.json), for `--preset 8b-shapes`.
REAL_SIZE = {
    "text_config": dict(
        hidden_size=4096, num_hidden_layers=36, num_attention_heads=32, num_key_value_heads=8, head_dim=128,
        intermediate_size=12288,
    ),
    "audio_config": dict(
        d_model=1280, encoder_layers=32, num_hidden_layers=32, encoder_attention_heads=20, encoder_ffn_dim=5120,
        output_dim=4096,
    ),
    "crq_transformer_config": dict(
        hidden_size=1024, num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8, head_dim=128,
        intermediate_size=3072,
    ),
}  # fmt: skip


def real_shapes(folder: Path, device: str):
    """A `LoadedModel` with random weights of the 8B shapes (bf16, built on `device`) and a random full decoder."""
    import torch
    from transformers import AutoProcessor

    from transformers_fac import (
        FunAudioChatConfig,
        FunAudioChatForConditionalGeneration,
        FunAudioChatToken2Wav,
        FunAudioChatToken2WavConfig,
    )
    from transformers_fac.serving.loading import LoadedModel
    from transformers_fac.tiny import tiny_checkpoint

    config = json.loads((Path(tiny_checkpoint()) / "config.json").read_text())
    config["hidden_size"] = REAL_SIZE["text_config"]["hidden_size"]
    for part in ("text_config", "audio_config"):
        config[part].update(REAL_SIZE[part])
        config[part].pop("layer_types", None)
    config["audio_config"]["crq_transformer_config"].update(REAL_SIZE["crq_transformer_config"])
    config["audio_config"]["crq_transformer_config"].pop("layer_types", None)
    config.pop("token2wav_source", None)
    torch.manual_seed(0)
    with torch.device(device):
        model = FunAudioChatForConditionalGeneration._from_config(
            FunAudioChatConfig.from_dict(config), dtype=torch.bfloat16
        ).eval()
    decoder = FunAudioChatToken2Wav(FunAudioChatToken2WavConfig()).eval()
    with torch.no_grad():
        decoder.hift.f0_predictor.classifier.bias.fill_(150.0)  # voiced frames, like real speech
    decoder.save_pretrained(folder / "token2wav")
    shutil.copy(Path(tiny_checkpoint()) / "token2wav" / "spk2info.pt", folder / "token2wav" / "spk2info.pt")
    model.attach_token2wav(str(folder / "token2wav"))
    processor = AutoProcessor.from_pretrained(tiny_checkpoint())
    return LoadedModel(model=model, processor=processor, voices=model.token2wav.voice_names)


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


class StaticBatchEngine(ReplyEngine):
    """Today's scheduler before the reply engine, on the engine's own decoding: requests join only an empty batch, a
    batch forms from those arriving within `max_wait_ms` of the first (up to `max_batch_size`), and nothing joins it
    until its last row has finished."""

    def __init__(self, *args, max_wait_ms: float = 20.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.max_wait = max_wait_ms / 1000

    def _admit(self) -> None:
        if self._rows:
            return  # the batch runs to its longest reply
        with self._cond:
            if not self._pending:
                return
            wait = self._pending[0].arrived + self.max_wait - time.monotonic()
            full = len(self._pending) >= self.max_batch_size
        if wait > 0 and not full and not self._closing:
            time.sleep(min(wait, 0.005))
            return
        super()._admit()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def request(loaded, tokens: int) -> ReplyRequest:
    from transformers_fac.audio_io import load_audio
    from transformers_fac.conversation import FunAudioChatConversation
    from transformers_fac.prompts import S2M_SYSTEM_PROMPT

    chat = FunAudioChatConversation(system_prompt=S2M_SYSTEM_PROMPT)
    chat.add_user_audio(load_audio(QUESTION))
    inputs = chat.model_inputs(loaded.processor)
    return ReplyRequest(inputs=dict(inputs), voice="中文女", max_new_tokens=tokens, temperature=0)


def follow(reply, arrived: float, runs: list) -> None:
    """Reads a reply to its end, recording when its first audio came and when it ended (from its arrival)."""
    first, audio = None, 0
    for event in reply:
        if isinstance(event, AudioDelta):
            first = first if first is not None else time.perf_counter() - arrived
            audio += event.audio.size
        elif isinstance(event, ReplyDone):
            runs.append({"first_audio": first, "done": time.perf_counter() - arrived, "audio_s": audio / 24000,
                         "ended": time.perf_counter()})  # fmt: skip


def open_loop(
    engine: ReplyEngine, template: ReplyRequest, arrivals: list[float], lengths: list[int] | None = None
) -> dict:
    """Submits one request at each arrival time (seconds from now), with `lengths[i]` LLM steps (default: the
    template's), and follows every reply to its end."""
    runs, readers = [], []
    lengths = lengths or [template.max_new_tokens] * len(arrivals)
    start = time.perf_counter()
    for at, length in zip(arrivals, lengths):
        delay = start + at - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        arrived = time.perf_counter()
        reply = engine.submit(ReplyRequest(**{**template.__dict__, "max_new_tokens": length}))
        reader = threading.Thread(target=follow, args=(reply, arrived, runs))
        reader.start()
        readers.append(reader)
    for reader in readers:
        reader.join()
    firsts = [run["first_audio"] for run in runs]
    dones = [run["done"] for run in runs]
    wall = max(run["ended"] for run in runs) - start
    return {
        "first_p50": statistics.median(firsts),
        "first_p90": percentile(firsts, 0.9),
        "first_p99": percentile(firsts, 0.99),
        "done_p50": statistics.median(dones),
        "done_p90": percentile(dones, 0.9),
        "audio_per_s": sum(run["audio_s"] for run in runs) / wall,
    }


def scheduler(name: str, loaded, rows: int, max_wait_ms: float, process: bool = False) -> ReplyEngine:
    """The `static` or the `continuous` engine (not started); `process`: the engine's `decoder_process`."""
    if name == "static":
        return StaticBatchEngine(loaded.model, loaded.processor, max_batch_size=rows, max_queue=10_000,
                                 max_wait_ms=max_wait_ms, decoder_process=process)  # fmt: skip
    return ReplyEngine(loaded.model, loaded.processor, max_batch_size=rows, max_queue=10_000, decoder_process=process)


def reply_lengths(tokens: int, spread: float, count: int, generator: random.Random) -> list[int]:
    """`count` reply lengths (LLM steps) drawn uniformly from `tokens` ± `spread` × `tokens` (all `tokens` when the
    spread is 0), at least 4: the steps a reply's first audio chunk needs (18 codes)."""
    low, high = round(tokens * (1 - spread)), round(tokens * (1 + spread))
    return [generator.randint(max(4, low), max(4, high)) for _ in range(count)]


def idle_first_audio(loaded, template: ReplyRequest, times: int = 3, process: bool = False) -> tuple[float, float]:
    """One request alone on a fresh engine, after a warm-up request: the medians of `times` first audios and reply
    ends (s)."""
    solo = ReplyEngine(loaded.model, loaded.processor, decoder_process=process).start()
    try:
        open_loop(solo, template, [0.0])
        alone = [open_loop(solo, template, [0.0]) for _ in range(times)]
    finally:
        solo.close()
    return statistics.median(run["first_p50"] for run in alone), statistics.median(run["done_p50"] for run in alone)


def saturation_rates(
    loaded, template: ReplyRequest, rows: int, spread: float, requests: int = 48, process: bool = False
) -> tuple[float, float]:
    """The continuous engine's saturation rate (requests/s) and, for reference, the rate of `rows` requests arriving
    together (median of 3 bursts).

    Saturation: the replies per second served (first arrival to last reply done) when `requests` arrive as a Poisson
    process at three times the burst rate, more than the engine serves: its rows stay taken by replies at random
    stages, as under any load it cannot keep up with (the drain at the end, with fewer rows, is included). A burst's
    replies run in lock-step and share every decoder call, which arrivals at random times cannot: the burst rate
    overstates what the engine sustains."""
    engine = ReplyEngine(
        loaded.model, loaded.processor, max_batch_size=rows, max_queue=10_000, decoder_process=process
    )
    engine.start()
    try:
        bursts = []
        for _ in range(3):
            burst_start = time.perf_counter()
            open_loop(engine, template, [0.0] * rows)
            bursts.append(rows / (time.perf_counter() - burst_start))
        burst = statistics.median(bursts)
        generator = random.Random(1)
        gaps = [generator.expovariate(3 * burst) for _ in range(requests)]
        lengths = reply_lengths(template.max_new_tokens, spread, requests, generator)
        start = time.perf_counter()
        open_loop(engine, template, [sum(gaps[:index]) for index in range(requests)], lengths)
        sustained = requests / (time.perf_counter() - start)
    finally:
        engine.close()
    return sustained, burst


def run_preset(loaded, label: str, args) -> list[str]:
    template = request(loaded, args.tokens)
    process = args.decoder_process
    idle_first, idle_done = idle_first_audio(loaded, template, times=5, process=process)
    saturation, burst = saturation_rates(loaded, template, args.rows, args.length_spread, process=process)
    lengths_said = f"{args.tokens} ± {args.length_spread:.0%}" if args.length_spread else f"{args.tokens}"
    lines = [
        f"\n{label}: idle first audio {idle_first:.2f} s, reply {idle_done:.2f} s; saturation "
        f"≈ {saturation:.2f} requests/s (rows kept full by arrivals at random times; {args.rows} requests arriving "
        f"together: {burst:.2f} requests/s); {args.requests} Poisson arrivals per rate, "
        f"{lengths_said} LLM steps per reply (5 per second of speech), up to {args.rows} rows"
        f"{'; audio after first chunks decoded in a child process' if process else ''}; medians of "
        f"{args.repeat} run(s) per rate and scheduler; p90 / idle: each run's p90 over the idle first audio measured "
        f"just before it\n",
        "| load | scheduler | first audio p50 / p90 / p99 (s) | reply done p50 / p90 (s) | audio s/s | p90 / idle |",
        "|---|---|---|---|---|---|",
    ]
    generator = random.Random(args.seed)
    for fraction in (0.3, 0.7, 1.0):
        rate = fraction * saturation
        gaps = [generator.expovariate(rate) for _ in range(args.requests)]
        arrivals = [sum(gaps[: index + 1]) - gaps[0] for index in range(len(gaps))]
        lengths = reply_lengths(args.tokens, args.length_spread, args.requests, generator)
        measured: dict[str, list[dict]] = {}
        for repeat in range(args.repeat):
            idle, _ = idle_first_audio(loaded, template, process=process)
            names = ["static", "continuous"][:: 1 if repeat % 2 == 0 else -1]  # alternating order
            for name in names:
                engine = scheduler(name, loaded, args.rows, args.max_wait_ms, process).start()
                try:
                    run = open_loop(engine, template, arrivals, lengths)
                finally:
                    engine.close()
                measured.setdefault(name, []).append({**run, "p90_over_idle": run["first_p90"] / idle})
        for name, runs in measured.items():
            m = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
            lines.append(
                f"| {fraction:.0%} ({rate:.2f} req/s) | {name} | {m['first_p50']:.2f} / {m['first_p90']:.2f} / "
                f"{m['first_p99']:.2f} | {m['done_p50']:.2f} / {m['done_p90']:.2f} | {m['audio_per_s']:.2f} | "
                f"{m['p90_over_idle']:.2f}× |"
            )
    return lines


def closed_loop(
    loaded, template: ReplyRequest, clients: int, per_client: int, rows: int, compiled: bool = False
) -> dict:
    """`clients` clients, each asking `per_client` questions one after the other, on the continuous engine (eager, or
    `compiled`: fixed slots on static caches, one compiled step)."""
    static = {"cache_implementation": "static", "max_length": 512} if compiled else {"cache_implementation": "eager"}
    engine = ReplyEngine(loaded.model, loaded.processor, max_batch_size=rows, max_queue=10_000, **static).start()
    runs: list = []

    def client():
        for _ in range(per_client):
            follow(engine.submit(ReplyRequest(**{**template.__dict__})), time.perf_counter(), runs)

    start = time.perf_counter()
    try:
        threads = [threading.Thread(target=client) for _ in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - start
    finally:
        engine.close()
    firsts, dones = [run["first_audio"] for run in runs], [run["done"] for run in runs]
    return {"first_p50": statistics.median(firsts), "first_p90": percentile(firsts, 0.9),
            "done_p50": statistics.median(dones), "streams": sum(run["audio_s"] for run in runs) / wall}  # fmt: skip


def concurrency_preset(loaded, label: str, args) -> list[str]:
    template = request(loaded, args.tokens)
    lines = [
        f"\n{label}: closed loops, {args.per_client} questions per client, {args.tokens} LLM steps "
        f"({args.tokens / 5:.1f} s of speech), up to {args.rows} rows\n",
        "| engine | clients | first audio p50 / p90 (s) | reply done p50 (s) | real-time streams (audio s/s) |",
        "|---|---|---|---|---|",
    ]
    for engine in args.engines:
        compiled = engine == "compiled"
        started = time.perf_counter()
        closed_loop(loaded, template, 1, 1, args.rows, compiled)  # warm-up (compiles the slots' step)
        lines.append(f"| {engine} (warm-up {time.perf_counter() - started:.1f} s) | | | | |")
        for clients in args.concurrency:
            m = closed_loop(loaded, template, clients, args.per_client, args.rows, compiled)
            lines.append(
                f"| {engine} | {clients} | {m['first_p50']:.2f} / {m['first_p90']:.2f} | {m['done_p50']:.2f} "
                f"| {m['streams']:.2f} |"
            )
    return lines


def space_run(batch_size: int, users: int, turns: int, tokens: int) -> dict:
    """`users` users of the Space talk at once, `turns` turns each; first audio and reply time of every turn."""
    sys.path.insert(0, str(REPO / "spaces_demo"))
    from engine import Engine, Settings

    from transformers_fac.audio_io import load_audio
    from transformers_fac.conversation import FunAudioChatConversation
    from transformers_fac.prompts import S2M_SYSTEM_PROMPT

    engine = Engine.load(Settings(model="tiny", max_new_tokens=tokens, batch_size=batch_size, concurrency=batch_size))
    question = load_audio(QUESTION)
    gate = threading.Semaphore(batch_size)  # Gradio's concurrency limit on the reply event
    barrier, runs = threading.Barrier(users), []

    def user():
        chat = FunAudioChatConversation(system_prompt=S2M_SYSTEM_PROMPT)
        barrier.wait()
        for _ in range(turns):
            chat.add_user_audio(question)
            inputs = chat.model_inputs(engine.processor)
            start, first, text = time.perf_counter(), None, ""
            with gate:
                for event in engine.speak(inputs, spoken=True, voice="中文女"):
                    if event.audio is not None and first is None:
                        first = time.perf_counter() - start
                    text += event.text
            chat.add_assistant_reply(text)
            runs.append({"first_audio": first, "total": time.perf_counter() - start})

    warm = FunAudioChatConversation(system_prompt=S2M_SYSTEM_PROMPT)
    warm.add_user_audio(question)
    list(engine.speak(warm.model_inputs(engine.processor), spoken=True, voice="中文女"))
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


def space_main(users: int, turns: int, tokens: int) -> None:
    rows = [(label, space_run(batch, users, turns, tokens)) for label, batch in (("engine (8 rows)", 8), ("one at a time", 1))]  # fmt: skip
    print(
        f"\nSpace (tiny, in-process): {users} users × {turns} turns, {tokens} LLM steps ({tokens / 5:.1f} s of speech)\n"
    )
    print("| serving | wall (s) | turn p50 / max (s) | first audio p50 / max (s) |")
    print("|---|---|---|---|")
    for label, m in rows:
        print(
            f"| {label} | {m['wall']:.1f} | {m['p50']:.2f} / {m['max']:.2f} | {m['first_p50']:.2f} / {m['first_max']:.2f} |"
        )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--preset", choices=["tiny", "mid", "8b-shapes", "both"], default="both", help="both = tiny + mid"
    )
    parser.add_argument("--token2wav", choices=["full", "small"], default="small", help="decoder size of `mid`")
    parser.add_argument("--requests", type=int, default=24, help="Poisson arrivals per rate")
    parser.add_argument("--rows", type=int, default=8, help="the engines' max batch size")
    parser.add_argument("--tokens", type=int, default=20, help="LLM steps per reply (20 = 4 s of speech)")
    parser.add_argument(
        "--length-spread", type=float, default=0.5,
        help="replies vary in length: LLM steps drawn uniformly from --tokens ± this fraction (0: all equal)",
    )  # fmt: skip
    parser.add_argument("--max-wait-ms", type=float, default=20.0, help="static scheduler's batching wait")
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs per rate and scheduler (alternating order; medians reported)"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--decoder-process",
        action="store_true",
        help="open-loop presets: every engine decodes audio after first chunks in a child process (CPU)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--concurrency", default=None, help="closed loops of these client counts, e.g. 1,8,32")
    parser.add_argument("--per-client", type=int, default=2, help="--concurrency: questions per client")
    parser.add_argument(
        "--engines", default="eager,compiled", help="--concurrency: the engine's batches (eager, compiled slots)"
    )
    parser.add_argument("--space", action="store_true", help="measure the Gradio Space's users (tiny) instead")
    parser.add_argument("--users", type=int, default=8, help="--space: users talking at once")
    parser.add_argument("--turns", type=int, default=3, help="--space: turns per user")
    args = parser.parse_args(argv)
    args.engines = args.engines.split(",")
    if not set(args.engines) <= {"eager", "compiled"}:
        parser.error("--engines is a comma-separated list of eager and compiled")
    if args.concurrency:
        args.concurrency = [int(value) for value in args.concurrency.split(",")]
        args.rows = max(args.rows, *args.concurrency)
    if args.space:
        return space_main(args.users, args.turns, args.tokens)

    from transformers_fac.serving import ServerSettings
    from transformers_fac.serving.loading import load

    presets = ["tiny", "mid"] if args.preset == "both" else [args.preset]
    lines = []
    with tempfile.TemporaryDirectory() as scratch:
        for preset in presets:
            if preset == "8b-shapes":
                loaded = real_shapes(Path(scratch), args.device)
            else:
                model = "tiny" if preset == "tiny" else str(mid_checkpoint(Path(scratch) / "mid", args.token2wav))
                loaded = load(ServerSettings(model=model, device=args.device))
            label = {"mid": f"mid + {args.token2wav} token2wav"}.get(preset, preset)
            measure = concurrency_preset if args.concurrency else run_preset
            lines += measure(loaded, f"{label} ({args.device})", args)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
