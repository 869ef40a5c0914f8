"""Time to first audio of streamed spoken replies (`transformers_fac.stream_reply`), and the latencies of live
conversations (`transformers_fac.live.VoiceSession`).

How to run (prints markdown tables; no assertions):

    python benchmarks/bench_streaming.py                          # tiny end-to-end checkpoint + mid-size preset
    python benchmarks/bench_streaming.py --preset tiny --steps 40
    python benchmarks/bench_streaming.py --preset mid --token2wav full --threads 1
    python benchmarks/bench_streaming.py --part live              # only the live-conversation latencies

Presets:
- `tiny`: the built-in tiny random end-to-end checkpoint (`transformers_fac.tiny`), CPU.
- `mid`: the generation benchmark's mid-size LLM (`benchmarks/bench_generate.py`, random weights, the 6 s real
  recording as prompt) with a random CosyVoice3 decoder of the real size (`--token2wav full`, default) or a small one.

Both streaming modes are measured: `exact` (the official web-demo schedule) and the default bounded one. The first
audio chunk needs 18 valid speech codes: 2 BOS groups + 4 steps of 5 codes, i.e. the 6th LLM step, then the decoder.

Live conversation (`--part live`): a recorded timeline (a question, a pause in which the reply starts, a second
question that interrupts it) is played through a `VoiceSession`:
- turn latency: from the end of the user's turn (the moment the VAD decides it) to the first reply audio produced
  (paced session, so the timeline runs as fast as the model; both turns counted);
- barge-in: from the interruption (the VAD deciding the user speaks again) to the old reply's generation stopped,
  and to the end of the audio chunk it was decoding at that moment (this finishes in the background: none of it is
  handed out, and the next reply does not wait for it); the old reply's audio stops at once (nothing more is handed
  out and the client drops what it has not played);
- engine overhead, without the model: the input path (resampling 48 kHz int16 20 ms chunks, Silero VAD, turn
  detection) in ms per second of audio, and the event latency: how much later than produced a reply event reaches a
  client that feeds 20 ms microphone chunks in real time.
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
    from transformers import AutoProcessor

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
    return model, AutoProcessor.from_pretrained(TINY_FAC), prompt_inputs("mid"), settings, torch.randn(192)


def measure(model, tokenizer, inputs, settings, voice, exact: bool, steps: int) -> dict:
    from transformers_fac import stream_reply

    start = time.perf_counter()
    first_text = first_audio = None
    audio_samples = 0
    for chunk in stream_reply(model, tokenizer, inputs, voice=voice, exact=exact, max_new_tokens=steps, **settings):
        now = time.perf_counter() - start
        if chunk.text and first_text is None:
            first_text = now
        if chunk.audio is not None:
            first_audio = first_audio if first_audio is not None else now
            audio_samples += len(chunk.audio)
    total = time.perf_counter() - start
    return {"first_text": first_text, "first_audio": first_audio, "total": total, "audio_s": audio_samples / 24000}


def live_timeline():
    """Question, a pause in which the reply starts, a second question that interrupts it, a pause (16 kHz)."""
    import numpy as np
    import soundfile

    def clip(name):
        return soundfile.read(REPO / "tests" / "fixtures" / "audio" / f"question_{name}.wav", dtype="float32")[0]

    def silence(seconds):
        return np.zeros(round(seconds * 16000), np.float32)

    return np.concatenate([silence(0.5), clip("en"), silence(1.5), clip("zh"), silence(1.0)])


def feed(session, audio, chunk: int = 320, realtime: bool = False) -> list:
    events, start = [], time.perf_counter()
    for offset in range(0, len(audio), chunk):
        if realtime:
            time.sleep(max(0.0, start + offset / 16000 - time.perf_counter()))
        events += session.feed(audio[offset : offset + chunk], 16000)
    return events


def measure_live(model, processor, settings, voice) -> dict:
    """One run of the timeline through a paced session: turn latencies and the barge-in stop latency."""
    from transformers_fac.live import VoiceSession

    # long replies: the first one is still being generated when the second question interrupts it
    session = VoiceSession(model, processor, voice=voice, realtime=False, **{**settings, "max_new_tokens": 1000})
    with session:
        events = feed(session, live_timeline())
    first_audio = {}
    for event in events:
        if event.type == "audio" and event.latency is not None:
            first_audio[event.turn] = event.latency
    interrupted = [event for event in events if event.type == "interrupted"]
    return {
        "turns": list(first_audio.values()),
        "stop": session.stop_latencies,
        "drain": session.drain_latencies,
        "interrupted": len(interrupted),
    }


def measure_engine(seconds: float = 30.0) -> dict:
    """The input path without the model: 48 kHz int16 chunks -> windows -> VAD -> turn decisions."""
    import numpy as np

    from transformers_fac.audio_io import resample
    from transformers_fac.live import AudioWindows, TurnDetector, TurnSettings, VoiceActivity
    from transformers_fac.live.vad import WINDOW, level_db

    timeline = live_timeline()
    audio = np.tile(timeline, int(np.ceil(seconds * 16000 / len(timeline))))[: int(seconds * 16000)]
    pcm = (resample(audio, 16000, 48000) * 32767).astype(np.int16)
    windows, vad, detector = AudioWindows(), VoiceActivity(), TurnDetector(TurnSettings())
    for window in windows.push(pcm[:48000], 48000):  # warm-up (TorchScript's first calls)
        vad(window)
    windows, position = AudioWindows(), 0
    start = time.perf_counter()
    for offset in range(0, len(pcm), 960):
        for window in windows.push(pcm[offset : offset + 960], 48000):
            detector.push(vad(window), level_db(window), position)
            position += WINDOW
    return {"ms_per_s": 1000 * (time.perf_counter() - start) / seconds}


def measure_event_latency(model, processor, settings, voice) -> list[float]:
    """Real-time feeding (20 ms chunks): seconds between the first reply audio being produced and being handed out."""
    import numpy as np

    from transformers_fac.live import VoiceSession

    timeline = live_timeline()[: 16000 * 8]  # the first question and the start of its reply
    delays = []
    with VoiceSession(model, processor, voice=voice, **{**settings, "max_new_tokens": 40}) as session:
        events = feed(session, np.asarray(timeline), realtime=True)
    stopped = {event.turn: event.wall for event in events if event.type == "speech_stopped"}
    for event in events:
        if event.type == "audio" and event.latency is not None:
            delays.append(event.wall - stopped[event.turn] - event.latency)
    return delays


def live_rows(presets: list[str], setups: dict, repeats: int) -> None:
    median = statistics.median
    print(f"\nlive conversation, CPU, {torch.get_num_threads()} thread(s), {repeats} run(s) of the timeline\n")
    print(
        "| model | turn latency: end of turn -> first reply audio (s) | barge-in -> generation stopped (s) |"
        " barge-in -> its audio decoding in progress finished, in the background (s) |"
    )
    print("|---|---|---|---|")
    for preset in presets:
        model, processor, _, settings, voice = setups[preset]
        runs = [measure_live(model, processor, settings, voice) for _ in range(repeats)]
        turns = [latency for run in runs for latency in run["turns"]]
        stops = [latency for run in runs for latency in run["stop"]]
        drains = [latency for run in runs for latency in run["drain"]]
        print(
            f"| {preset} | {median(turns):.3f} (min {min(turns):.3f}, max {max(turns):.3f}, n={len(turns)}) "
            f"| {median(stops):.3f} (max {max(stops):.3f}, n={len(stops)}) "
            f"| {median(drains):.3f} (max {max(drains):.3f}) |"
        )
    engine = [measure_engine() for _ in range(repeats)]
    tiny = setups[presets[0]]
    delays = measure_event_latency(tiny[0], tiny[1], tiny[3], tiny[4])
    print("\nengine overhead (no model work counted)\n")
    print("| input path: resample + Silero VAD + turn detection | event latency (20 ms chunks, real time) |")
    print("|---|---|")
    print(
        f"| {median(run['ms_per_s'] for run in engine):.1f} ms per second of audio "
        f"({median(run['ms_per_s'] for run in engine) / 10:.2f} % of real time) "
        f"| {1000 * median(delays):.1f} ms (n={len(delays)}, {presets[0]}) |"
    )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=["tiny", "mid", "both"], default="both")
    parser.add_argument("--token2wav", choices=["full", "small"], default="full", help="decoder size of `mid`")
    parser.add_argument("--steps", type=int, default=30, help="LLM steps (5 speech codes each)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--part", choices=["first-audio", "live", "all"], default="all")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)

    presets = ["tiny", "mid"] if args.preset == "both" else [args.preset]
    setups = {preset: tiny_setup() if preset == "tiny" else mid_setup(args.token2wav) for preset in presets}
    if args.part in ("first-audio", "all"):
        rows = []
        for preset in presets:
            for exact in (True, False):
                runs = [measure(*setups[preset], exact=exact, steps=args.steps) for _ in range(args.repeats)]
                median = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
                name = preset if preset == "tiny" else f"mid + {args.token2wav} token2wav"
                rows.append((name, "exact" if exact else "bounded", median))

        print(
            f"\nstreaming, {args.steps} LLM steps, CPU, {torch.get_num_threads()} thread(s), median of {args.repeats}\n"
        )
        print("| model | stream mode | first text (s) | first audio (s) | total (s) | audio produced (s) |")
        print("|---|---|---|---|---|---|")
        for name, mode, m in rows:
            print(
                f"| {name} | {mode} | {m['first_text']:.3f} | {m['first_audio']:.3f} | {m['total']:.2f} | {m['audio_s']:.2f} |"
            )
    if args.part in ("live", "all"):
        live_rows(presets, setups, args.repeats)


if __name__ == "__main__":
    main()
