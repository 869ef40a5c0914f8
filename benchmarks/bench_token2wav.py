"""Speed of the native token2wav decoder (real-size random weights): offline real-time factor, streaming latency, peak
memory, fp32 vs bf16 DiT. Prints a markdown table; asserts nothing.

    python benchmarks/bench_token2wav.py                      # full size, CPU (a few minutes on 2 cores)
    python benchmarks/bench_token2wav.py --preset small       # a small DiT: real 60 s streams in a minute
    python benchmarks/bench_token2wav.py --device cuda        # GPU
    PYTHONPATH=/path/to/x_transformers python benchmarks/bench_token2wav.py --reference-cosyvoice /tmp/CosyVoice
                                                              # + the official modules in the same run

Streaming latency is the time of one `push` that completes a step (15 codes = 0.6 s of audio). At full size on a CPU a
real 60 s stream would take tens of minutes, so by default the decoder state after 5 s and after 60 s of codes is
constructed directly (`--prefill`; random history values, the work of a step does not depend on them) and one step is
timed there. `--preset small` streams for real and reports the same positions. The exact mode re-runs the flow and the
vocoder over the whole history, so it is timed at 5 s only unless `--exact-late` is given.
"""

import argparse
import os
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from transformers_fac.token2wav import FunAudioChatToken2Wav, FunAudioChatToken2WavConfig  # noqa: E402
from transformers_fac.token2wav.streaming import BoundedStreamDecoder, ExactStreamDecoder  # noqa: E402

SMALL = {"dit_depth": 4}
CODES_PER_SECOND = 25


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, repeats: int) -> tuple[float, object]:
    """Median wall time of `repeats` calls (after one warm-up) and the last result."""
    result = fn()
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        result = fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build_model(preset: str, device: torch.device) -> FunAudioChatToken2Wav:
    config = FunAudioChatToken2WavConfig(**(SMALL if preset == "small" else {}))
    torch.manual_seed(0)
    model = FunAudioChatToken2Wav(config).eval()
    with torch.no_grad():
        model.hift.f0_predictor.classifier.bias.fill_(150.0)  # voiced frames, like real speech
    return model.to(device)


def prefill(decoder, codes: torch.Tensor, position: int) -> None:
    """Put `decoder` in the state it has after `position` codes (steps done up to the last full hop)."""
    config, model = decoder.config, decoder.model
    hop, look_ahead, ratio = config.stream_hop_codes, config.pre_lookahead_len, config.token_mel_ratio
    offset = (position - look_ahead) // hop * hop
    frames = ratio * offset
    holdback = model.hift.holdback_frames
    device = model.device
    decoder.offset = offset
    decoder.samples_emitted = (frames - holdback) * config.samples_per_frame
    if isinstance(decoder, ExactStreamDecoder):
        decoder.codes = codes[0, :position].cpu()
        decoder.mel = torch.randn(1, config.mel_bins, frames, device=device)
        return
    assert isinstance(decoder, BoundedStreamDecoder)
    decoder.code_base = max(0, offset - config.stream_flow_context_codes)
    decoder.codes = codes[0, decoder.code_base : position].cpu()
    decoder.frames_emitted = frames - holdback
    decoder.mel_base = max(0, decoder.frames_emitted - config.stream_hift_context_frames)
    decoder.mel = torch.randn(1, config.mel_bins, frames - decoder.mel_base, device=device)
    decoder.f0_base = max(0, decoder.mel_base - 1)
    known = frames - model.hift.f0_predictor.look_ahead - decoder.f0_base
    decoder.f0 = torch.full((1, known), 150.0, device=device)
    decoder.cycles = torch.rand(1, known, config.nb_harmonics + 1, dtype=torch.float64, device=device)


def step_latency(
    model, embedding, codes, exact: bool, position: int, repeats: int, use_prefill: bool, prepare=None
) -> float:
    """Seconds of the push that completes the step right after `position` codes (`prepare(decoder)` runs before)."""
    hop = model.config.stream_hop_codes
    times = []
    for _ in range(repeats):
        decoder = model.stream_decoder(embedding, exact=exact)
        if use_prefill:
            prefill(decoder, codes, position)
        else:
            decoder.push(codes[:, :position])
        if prepare is not None:
            prepare(decoder)
        start = time.perf_counter()
        chunk = decoder.push(codes[:, position : position + hop])
        synchronize(model.device)
        times.append(time.perf_counter() - start)
        assert chunk.shape[1] > 0
    return min(times)


def full_stream(model, embedding, codes, exact: bool) -> dict[float, float]:
    """Stream all codes in pushes of one hop; seconds of each push keyed by the audio position (s) it starts at."""
    decoder = model.stream_decoder(embedding, exact=exact)
    hop, latencies, position = model.config.stream_hop_codes, {}, 0
    first = model.config.stream_hop_codes + model.config.pre_lookahead_len
    sizes = [first] + [hop] * ((codes.shape[1] - first) // hop)
    for size in sizes:
        start = time.perf_counter()
        decoder.push(codes[:, position : position + size])
        synchronize(model.device)
        latencies[position / CODES_PER_SECOND] = time.perf_counter() - start
        position += size
    return latencies


def common_arguments(description: str) -> argparse.ArgumentParser:
    """The options every decoder benchmark has: preset, device, threads, offline codes."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--preset", choices=["full", "small"], default="full")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (CPU)")
    parser.add_argument("--offline-codes", type=int, default=50, help="codes decoded offline (50 = 2 s)")
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = common_arguments(__doc__.split("\n\n")[0])
    parser.add_argument("--stream-seconds", type=float, default=60.0)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--prefill", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--exact-late", action="store_true", help="also time the exact mode at the late position")
    parser.add_argument("--skip-bf16", action="store_true")
    parser.add_argument("--skip-stream", action="store_true", help="no streaming measurements")
    parser.add_argument("--reference-cosyvoice", default=None, help="CosyVoice checkout to time the official modules")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    use_prefill = args.prefill if args.prefill is not None else args.preset == "full"

    model = build_model(args.preset, device)
    config = model.config
    generator = torch.Generator().manual_seed(0)
    if args.skip_stream:
        args.stream_seconds = 0.0
    total_codes = max(args.offline_codes, int(args.stream_seconds * CODES_PER_SECOND) + 40)
    codes = torch.randint(0, config.vocab_size, (1, total_codes), generator=generator)
    embedding = torch.randn(1, 192, generator=generator).to(device)
    rows: list[tuple[str, str]] = []
    info = f"{args.preset} (DiT depth {config.dit_depth}), {device}, {torch.get_num_threads()} threads"
    print(f"# token2wav benchmark: {info}, torch {torch.__version__}", flush=True)

    # offline (with the official modules in the same run: timings interleaved, the minimum of each kept, so that load
    # changes on a shared machine hit both sides)
    n = args.offline_codes
    offline = codes[:, :n]
    seconds = n / CODES_PER_SECOND
    candidates = {
        "flow": lambda: model.token2mel(offline, embedding),
        "hift": lambda: model.mel2wav(mel),
    }
    mel = model.token2mel(offline, embedding)  # warm-up
    if args.reference_cosyvoice:
        from reference_cosyvoice import load_reference, reference_token2mel

        ref_flow, ref_hift = load_reference(args.reference_cosyvoice, config)
        ref_flow.load_state_dict(model.flow.state_dict())
        ref_hift.load_state_dict(model.hift.state_dict())
        ref_flow.to(device), ref_hift.to(device)
        samples = mel.shape[-1] * config.samples_per_frame  # same uniform source noise as ours, for the comparison
        ref_hift.m_source.l_sin_gen.sine_waves[:, :samples] = model.noise.source(0, samples)
        candidates["ref_flow"] = lambda: reference_token2mel(ref_flow, offline.to(device), embedding)
        candidates["ref_hift"] = lambda: ref_hift.inference(mel, finalize=True)[0]
    best, outputs = {}, {}
    for _ in range(args.repeats):
        for name, fn in candidates.items():
            elapsed, outputs[name] = timed(fn, device, 1)
            best[name] = min(best.get(name, elapsed), elapsed)
    flow_s, hift_s = best["flow"], best["hift"]
    rows += [
        (f"offline {n} codes ({seconds:g} s): flow", f"{flow_s:.2f} s"),
        (f"offline {n} codes: HiFT", f"{hift_s:.2f} s"),
        ("offline real-time factor (flow + HiFT) / audio", f"{(flow_s + hift_s) / seconds:.2f}"),
    ]
    if args.reference_cosyvoice:
        mel_diff = (outputs["ref_flow"].float() - outputs["flow"]).abs().max().item()
        wav_diff = (outputs["ref_hift"].float() - outputs["hift"]).abs().max().item()
        rows += [
            ("reference (official modules) flow, same run", f"{best['ref_flow']:.2f} s"),
            ("reference HiFT, same run", f"{best['ref_hift']:.2f} s"),
            ("reference RTF", f"{(best['ref_flow'] + best['ref_hift']) / seconds:.2f}"),
            (
                "speed-up vs reference: flow / HiFT",
                f"{best['ref_flow'] / flow_s:.2f}x / {best['ref_hift'] / hift_s:.2f}x",
            ),
            ("max |mel - reference| / max |wav - reference| (same weights)", f"{mel_diff:.1e} / {wav_diff:.1e}"),
        ]
        del ref_flow, ref_hift, candidates, outputs
    print(*rows, sep="\n", flush=True)

    # streaming
    early, late = 5 * CODES_PER_SECOND, int(args.stream_seconds * CODES_PER_SECOND)
    for exact in () if args.skip_stream else (False, True):
        name = "exact" if exact else "bounded (default)"
        first = config.stream_hop_codes + config.pre_lookahead_len
        start = time.perf_counter()
        model.stream_decoder(embedding, exact=exact).push(codes[:, :first])
        synchronize(device)
        rows.append((f"{name}: time to first audio chunk ({first} codes in)", f"{time.perf_counter() - start:.2f} s"))
        positions = [early] + ([late] if (not exact or args.exact_late) else [])
        if use_prefill:
            lat = {p: step_latency(model, embedding, codes, exact, p, args.repeats, True) for p in positions}
        else:
            per_push = full_stream(model, embedding, codes[:, : positions[-1] + 18], exact)
            lat = {p: min(v for k, v in per_push.items() if abs(k - p / CODES_PER_SECOND) < 0.61) for p in positions}
        for position, value in lat.items():
            rows.append(
                (f"{name}: chunk latency at {position / CODES_PER_SECOND:g} s (0.6 s of audio)", f"{value:.2f} s")
            )
        if late in lat:
            rows.append(
                (f"{name}: latency ratio {late / CODES_PER_SECOND:g} s / 5 s", f"{lat[late] / lat[early]:.2f}")
            )
        print(rows[-1], flush=True)

    # fp32 vs bf16 DiT
    if not args.skip_bf16:
        model.flow.decoder.estimator.to(torch.bfloat16)
        bf16_s, bf16_mel = timed(lambda: model.token2mel(offline, embedding), device, args.repeats)
        error = (bf16_mel - mel).abs()
        snr = 10 * torch.log10(mel.pow(2).sum() / (bf16_mel - mel).pow(2).sum())
        rows += [
            (f"bf16 DiT: flow {n} codes", f"{bf16_s:.2f} s (fp32 {flow_s:.2f} s)"),
            (
                "bf16 DiT mel error vs fp32: max / mean abs / SNR",
                f"{error.max():.3f} / {error.mean():.4f} / {snr:.1f} dB",
            ),
        ]
    rows.append(("peak memory (process RSS on CPU, allocated on GPU)", f"{peak_memory_mb(device):.0f} MiB"))

    print(f"\n| {info} | value |\n|---|---|")
    for label, value in rows:
        print(f"| {label} | {value} |")
    if os.environ.get("OMP_NUM_THREADS"):
        print(f"\nOMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}")


if __name__ == "__main__":
    main()
