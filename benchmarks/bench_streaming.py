"""Time to first audio of streamed spoken replies (`transformers_fac.stream_reply`).

How to run (prints a markdown table; no assertions):

    python benchmarks/bench_streaming.py                          # tiny end-to-end checkpoint + mid-size preset
    python benchmarks/bench_streaming.py --preset tiny --steps 40
    python benchmarks/bench_streaming.py --preset mid --token2wav full --threads 1

Presets:
- `tiny`: the built-in tiny random end-to-end checkpoint (`transformers_fac.tiny`), CPU.
- `mid`: the generation benchmark's mid-size LLM (`benchmarks/bench_generate.py`, random weights, the 6 s real
  recording as prompt) with a random CosyVoice3 decoder of the real size (`--token2wav full`, default) or a small one.

Both streaming modes are measured: `exact` (the official web-demo schedule) and the default bounded one. The first
audio chunk needs 18 valid speech codes: 2 BOS groups + 4 steps of 5 codes, i.e. the 6th LLM step, then the vocoder.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))


def tiny_setup():
    from transformers import AutoModelForMultimodalLM, AutoProcessor

    from transformers_fac import S2M_SYSTEM_PROMPT, FunAudioChatConversation
    from transformers_fac.tiny import tiny_checkpoint

    path = tiny_checkpoint()
    processor = AutoProcessor.from_pretrained(path)
    model = AutoModelForMultimodalLM.from_pretrained(path).eval()
    chat = FunAudioChatConversation(system_prompt=S2M_SYSTEM_PROMPT)
    chat.add_user_audio(REPO / "tests" / "fixtures" / "audio" / "real_zh_6s.wav")
    return model, processor, chat.model_inputs(processor), {}, "中文女"


def mid_setup(token2wav: str):
    from bench_generate import TINY_FAC, build_model, generate_kwargs, hub_config, prompt_inputs
    from transformers import AutoTokenizer

    from transformers_fac import FunAudioChatToken2Wav, FunAudioChatToken2WavConfig

    config = hub_config("mid")
    model = build_model(config, torch.device("cpu"), torch.float32, seed=0)
    sizes = {} if token2wav == "full" else {"dit_dim": 256, "dit_depth": 4, "dit_heads": 4, "hift_base_channels": 128}
    torch.manual_seed(0)
    decoder = FunAudioChatToken2Wav(FunAudioChatToken2WavConfig(**sizes)).eval()
    with torch.no_grad():
        decoder.hift.f0_predictor.classifier.bias.fill_(150.0)  # voiced frames, like real speech
    model.attach_token2wav(decoder)
    settings = generate_kwargs(1, config)
    settings.pop("max_new_tokens")
    return model, AutoTokenizer.from_pretrained(TINY_FAC), prompt_inputs("mid"), settings, torch.randn(192)


def measure(model, tokenizer, inputs, settings, speaker, exact: bool, steps: int) -> dict:
    from transformers_fac import stream_reply

    start = time.perf_counter()
    first_text = first_audio = None
    audio_samples = 0
    for chunk in stream_reply(
        model, tokenizer, inputs, speaker=speaker, exact=exact, max_new_tokens=steps, **settings
    ):
        now = time.perf_counter() - start
        if chunk.text and first_text is None:
            first_text = now
        if chunk.audio is not None:
            first_audio = first_audio if first_audio is not None else now
            audio_samples += len(chunk.audio)
    total = time.perf_counter() - start
    return {"first_text": first_text, "first_audio": first_audio, "total": total, "audio_s": audio_samples / 24000}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=["tiny", "mid", "both"], default="both")
    parser.add_argument("--token2wav", choices=["full", "small"], default="full", help="decoder size of `mid`")
    parser.add_argument("--steps", type=int, default=30, help="LLM steps (5 speech codes each)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)

    presets = ["tiny", "mid"] if args.preset == "both" else [args.preset]
    rows = []
    for preset in presets:
        setup = tiny_setup() if preset == "tiny" else mid_setup(args.token2wav)
        for exact in (True, False):
            runs = [measure(*setup, exact=exact, steps=args.steps) for _ in range(args.repeats)]
            median = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
            name = preset if preset == "tiny" else f"mid + {args.token2wav} token2wav"
            rows.append((name, "exact" if exact else "bounded", median))

    print(f"\nstreaming, {args.steps} LLM steps, CPU, {torch.get_num_threads()} thread(s), median of {args.repeats}\n")
    print("| model | stream mode | first text (s) | first audio (s) | total (s) | audio produced (s) |")
    print("|---|---|---|---|---|---|")
    for name, mode, m in rows:
        print(
            f"| {name} | {mode} | {m['first_text']:.3f} | {m['first_audio']:.3f} | {m['total']:.2f} | {m['audio_s']:.2f} |"
        )


if __name__ == "__main__":
    main()
