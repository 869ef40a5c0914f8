"""Custom voices: cloning time of a 10 s clip, and the token2wav decoder with a 10 s voice prompt vs none (offline
real-time factor, bounded-stream chunk latency at 5 s and 60 s). Real-size random decoder weights, as in
`bench_token2wav.py`. Prints a markdown table; asserts nothing.

    python benchmarks/bench_voice.py                  # full size, CPU (several minutes on 2 cores)
    python benchmarks/bench_voice.py --preset small   # a small DiT
    python benchmarks/bench_voice.py --device cuda

Cloning runs the real frontend code on CPU: Kaldi fbank (kaldi-native-fbank), the speaker model through ONNX Runtime,
the v3 speech tokenizer (`SpeechCodeTokenizer`: a real-size `S3TokenizerV3` with random weights, no download) and the
prompt mel. The real `campplus.onnx` cannot be fetched here: the small stand-in with its signature is timed instead
(CAM++ itself has a few million parameters). Stream steps are timed from a decoder state constructed at the position
(`bench_token2wav.prefill`) with the prompt already sampled; the prompt's one-off sampling is timed separately (it is
part of the first chunk's latency).
"""

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

from bench_token2wav import (  # noqa: E402
    CODES_PER_SECOND,
    build_model,
    common_arguments,
    step_latency,
    synchronize,
    timed,
)

from transformers_fac.audio_io import load_audio  # noqa: E402
from transformers_fac.speech_tokenizer import SpeechCodeTokenizer  # noqa: E402
from transformers_fac.voice import FunAudioChatVoice, VoiceFrontend, prompt_mel  # noqa: E402
from transformers_fac.voice.stand_ins import build_stand_in_campplus  # noqa: E402

CLIPS = [HERE.parent / "tests" / "fixtures" / "audio" / name for name in ("real_zh_6s.wav", "question_en.wav")]


def ten_second_clip() -> np.ndarray:
    """10 s of real speech at 16 kHz (the repository's recordings, concatenated)."""
    return np.concatenate([load_audio(str(path)) for path in CLIPS])[: 10 * 16000]


def clone_rows(clip: np.ndarray, repeats: int) -> list[tuple[str, str]]:
    folder = Path(tempfile.mkdtemp())
    # the real-size S3TokenizerV3 with random weights (no download)
    frontend = VoiceFrontend(build_stand_in_campplus(folder / "campplus.onnx"), SpeechCodeTokenizer.random(seed=0))
    audio = (clip, 16000)
    total, voice = timed(lambda: frontend.clone(audio), torch.device("cpu"), repeats)
    vector, _ = timed(lambda: frontend.speaker_vector(audio), torch.device("cpu"), repeats)
    codes, _ = timed(lambda: frontend.speech_tokenizer(clip), torch.device("cpu"), repeats)
    return [
        ("clone a 10 s clip (CPU): total", f"{total:.2f} s"),
        ("  of which speaker vector (fbank + stand-in CAM++ ONNX)", f"{vector:.2f} s"),
        ("  of which v3 speech tokenizer (real size, random weights)", f"{codes:.2f} s"),
        ("  prompt", f"{voice.prompt_codes.shape[1]} codes, {voice.prompt_mel.shape[1]} mel frames"),
    ]


def prompt_voice(clip: np.ndarray, embedding: torch.Tensor) -> FunAudioChatVoice:
    """A 10 s voice: the clip's mel (24 kHz) and random codes of the same length."""
    mel = prompt_mel(load_audio((clip, 16000), target_sampling_rate=24000))
    codes = torch.randint(0, 6561, (1, mel.shape[1] // 2), generator=torch.Generator().manual_seed(5))
    return FunAudioChatVoice(embedding, codes, mel, name="10 s prompt")


def sample_prompt(model, voice, codes):
    """Give a bounded stream decoder its prompt prefix (what its first step does), so that a step can be timed alone."""

    def prepare(decoder) -> None:
        if voice.has_prompt:
            device = model.device
            decoder.prefix = model.flow.prompt_prefix(
                voice.prompt_codes.to(device),
                voice.prompt_mel.to(device),
                codes[:, :3].to(device),
                voice.speaker_embedding.to(device),
                model.noise.flow(0, voice.prompt_mel.shape[1], device=device),
            )

    return prepare


def main(argv: list[str] | None = None) -> None:
    parser = common_arguments(__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--skip-clone", action="store_true")
    parser.add_argument("--skip-stream", action="store_true")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    device = torch.device(args.device)
    clip = ten_second_clip()
    rows = [] if args.skip_clone else clone_rows(clip, args.repeats)
    print(*rows, sep="\n", flush=True)

    model = build_model(args.preset, device)
    config = model.config
    generator = torch.Generator().manual_seed(0)
    codes = torch.randint(0, config.vocab_size, (1, 60 * CODES_PER_SECOND + 40), generator=generator)
    embedding = torch.randn(1, 192, generator=generator)
    voices = {"no prompt": FunAudioChatVoice(embedding), "10 s prompt": prompt_voice(clip, embedding)}
    info = f"{args.preset} (DiT depth {config.dit_depth}), {device}, {torch.get_num_threads()} threads"
    n, seconds = args.offline_codes, args.offline_codes / CODES_PER_SECOND
    offline = {}
    for name, voice in voices.items():
        elapsed, _ = timed(lambda voice=voice: model.decode(codes[:, :n], voice=voice), device, args.repeats)
        offline[name] = elapsed
        rows.append((f"offline decode {n} codes ({seconds:g} s), {name}: RTF", f"{elapsed / seconds:.2f}"))
        print(rows[-1], flush=True)
    rows.append(("offline: 10 s prompt / no prompt", f"{offline['10 s prompt'] / offline['no prompt']:.2f}x"))

    if not args.skip_stream:
        voice = voices["10 s prompt"]
        first = config.stream_hop_codes + config.pre_lookahead_len
        for name, stream_voice in voices.items():
            start = time.perf_counter()
            model.stream_decoder(stream_voice).push(codes[:, :first])
            synchronize(device)
            rows.append(
                (f"bounded stream, {name}: first chunk ({first} codes in)", f"{time.perf_counter() - start:.2f} s")
            )
            print(rows[-1], flush=True)
        latency = {}
        for name, stream_voice in voices.items():
            for position in (5 * CODES_PER_SECOND, 60 * CODES_PER_SECOND):
                prepare = sample_prompt(model, stream_voice, codes)
                latency[name, position] = step_latency(
                    model, stream_voice, codes, False, position, args.repeats, use_prefill=True, prepare=prepare
                )
                label = f"bounded stream, {name}: chunk latency at {position // CODES_PER_SECOND} s (0.6 s of audio)"
                rows.append((label, f"{latency[name, position]:.2f} s"))
                print(rows[-1], flush=True)
        late = 60 * CODES_PER_SECOND
        rows.append(
            (
                "bounded: 10 s prompt / no prompt, at 60 s",
                f"{latency[voice.name, late] / latency['no prompt', late]:.2f}x",
            )
        )
        rows.append(
            ("bounded, 10 s prompt: latency 60 s / 5 s", f"{latency[voice.name, late] / latency[voice.name, 125]:.2f}")
        )

    print(f"\n| {info} | value |\n|---|---|")
    for label, value in rows:
        print(f"| {label} | {value} |")


if __name__ == "__main__":
    main()
