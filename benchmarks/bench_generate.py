"""Generation benchmark of Fun-Audio-Chat on a random-weight model (issue 3, item 8).

How to run
----------
    # Mid-size random model on CPU (float32), 50 greedy steps, audio and text mode, 5 interleaved repeats:
    python benchmarks/bench_generate.py

    # The same, interleaved with the official implementation (transformers 4.52.3) run from its own environment on the
    # same random weights and inputs; checks that both produce identical text and speech ids:
    python benchmarks/bench_generate.py --reference-python /tmp/ref-venv/bin/python --reference-code /tmp/fac-official

    # Real Fun-Audio-Chat-8B shapes (random weights) on a GPU:
    python benchmarks/bench_generate.py --preset 8b --device cuda --dtype bfloat16

    # Only the eager module path, or only the static compiled step (`cache_implementation="static"`); tiny model:
    python benchmarks/bench_generate.py --paths eager
    python benchmarks/bench_generate.py --preset tiny --paths compiled

`--reference-code` is a folder holding the official `funaudiochat/` package; it is imported by a worker process
started with `--reference-python` (this file in `--reference-worker` mode), never copied. The random weights are
handed to it through `save_pretrained` in a temporary folder (about 19 GB with `--preset 8b`). On a shared machine,
`--threads 1` gives the steadiest numbers.

What is measured
----------------
The prompt is the 6 s real recording `tests/fixtures/audio/real_zh_6s.wav` laid out as in the golden `s2m_long`
scenario (72 prompt positions, 30 of them audio slots; with `--preset 8b` its special ids are mapped to the real
Qwen3 ids). Every call does exactly `--steps` LLM steps, greedy, `repetition_penalty=1.0`: the text EOS id is set to
the vocabulary size, an id the LLM cannot produce. Audio mode forces `<|audio_bos|>` as the first text token (our
default, the official `force_text_abos=True`) and yields 5 speech codes per following step; text mode is our
`generation_mode="text"` and the official `text_greedy=True, disable_speech=True`.

- total: wall-clock time of the `generate` call; CPU: the process's CPU time during it (steadier on a shared machine).
- prefill: from the call to the first text token (audio encoders, LLM and speech-head prefill).
- ms/step, LLM steps/s and speech codes/s: over the decoding phase (after the first text token).
- RTF: seconds of compute (whole call) per second of 24 kHz speech that the codes represent (1 code = 40 ms); below 1
  is faster than real time. "× real time" is its inverse (seconds of speech per second of compute).
- first code: from the call to the first speech group.
- peak memory: CUDA `max_memory_allocated`; on CPU the peak resident set of the process during the call
  (`resource.getrusage`, its high-water mark reset before each call through `/proc/self/clear_refs` on Linux).
  Both include the weights.
- eager / compiled: our `generate` as is (dynamic caches, the module path), and with `cache_implementation="static"`
  (preallocated caches, one `torch.compile`d step per position; CUDA graphs on a GPU). "compile s" is the extra time
  of the compiled variant's first (warm-up) call over its steady-state median: tracing, code generation and (on a
  GPU) graph recording. It depends on the on-disk inductor cache (`TORCHINDUCTOR_CACHE_DIR`): a cold cache compiles
  every kernel, a warm one only traces.
- 25 Hz single resolution: the same LLM backbone run at 25 Hz positions (each prompt audio slot ×5, then one LLM step
  per speech code, as many codes as the audio-mode call produced): the single-resolution design that the dual
  resolution (5 Hz LLM + 25 Hz speech head) avoids. It runs the LLM alone (no audio encoders, no speech head).

After one warm-up call each, variants run interleaved (A, B, C, A, B, C, ...); the table shows medians over the
repeats (minimum total in brackets), and the ratios are medians of the per-round ratios. No timing is asserted. On a
shared machine the CPU-time column and the ratios are the steadier numbers.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"
TINY_FAC = FIXTURES / "golden" / "tiny-fac"
GOLDEN_INPUTS = FIXTURES / "golden" / "fac-golden.safetensors"
PROMPT_AUDIO = FIXTURES / "audio" / "real_zh_6s.wav"
SCENARIO = "s2m_long"
SECONDS_PER_CODE = 0.04
# Seconds for 50 steps of the official implementation on the project's 2-core machines (issue 3, mid-size preset).
ISSUE_REFERENCE_SECONDS = {"audio": 1.32, "text": 0.47}
# Text ids of the tiny tokenizer's special tokens → the real Qwen3 ids (used to lay the prompt out for the 8B preset).
REAL_SPECIAL_IDS = {400: 151645, 401: 151643, 402: 151644, 403: 151669, 404: 151670, 405: 151671, 406: 151672}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
MID_SIZE = {
    "text_config": dict(
        hidden_size=512, num_hidden_layers=8, num_attention_heads=8, num_key_value_heads=4, head_dim=64,
        intermediate_size=1536,
    ),
    "audio_config": dict(
        d_model=256, encoder_layers=4, num_hidden_layers=4, encoder_attention_heads=4, encoder_ffn_dim=1024,
        output_dim=512,
    ),
    "crq_transformer_config": dict(
        hidden_size=256, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2, head_dim=64,
        intermediate_size=768,
    ),
}  # fmt: skip


# ------------------------------------------------------------------------------------------------------------------
# Measuring one generate call (shared by our runs and the reference worker, so that both are timed the same way)
# ------------------------------------------------------------------------------------------------------------------
class Clock:
    """A streamer that records when the first text token and the first speech group arrive.

    It understands both APIs: ours (`put(text [B])` + `put_speech(codes [B, 5], speaking)`) and the official one
    (`put` of the text ids [B], then of the speech group [B, 5]). The first `put` is the prompt. With
    `tokens_are_codes`, every generated token counts as a speech code (the 25 Hz single-resolution run).
    """

    def __init__(self, tokens_are_codes: bool = False):
        self.tokens_are_codes = tokens_are_codes
        self.prompt_seen = False
        self.first_text = self.first_speech = None

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
        elif value.dim() == 2:
            self.put_speech(value, None)
        elif self.first_text is None:
            self.first_text = time.perf_counter()
            if self.tokens_are_codes:
                self.first_speech = self.first_text

    def put_speech(self, codes: torch.Tensor, speaking: torch.Tensor | None) -> None:
        if self.first_speech is None:
            self.first_speech = time.perf_counter()

    def end(self) -> None:
        pass


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        Path("/proc/self/clear_refs").write_text("5")  # Linux: resets the RSS high-water mark to the current RSS
    except OSError:
        pass  # elsewhere the process's peak since it started is reported


def _peak_memory(device: torch.device) -> int:
    """Bytes: CUDA memory allocated by tensors, or the process's resident set (ru_maxrss is in KiB on Linux)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def timed(run: Callable, device: torch.device, prompt_length: int, tokens_are_codes: bool = False) -> dict:
    """Calls `run(clock)` → (sequences [1, S], speech ids [1, T] or None); returns timings, counts and the new ids."""
    clock = Clock(tokens_are_codes)
    _synchronize(device)
    _reset_peak_memory(device)
    start, cpu_start = time.perf_counter(), time.process_time()
    sequences, speech_ids = run(clock)
    _synchronize(device)
    end, cpu_end = time.perf_counter(), time.process_time()
    new_tokens = sequences[0, prompt_length:].tolist()
    speech = speech_ids[0].tolist() if speech_ids is not None else []
    return {
        "total": end - start,
        "cpu": cpu_end - cpu_start,
        "prefill": clock.first_text - start,
        "decode": end - clock.first_text,
        "first_code": None if clock.first_speech is None else clock.first_speech - start,
        "steps": len(new_tokens),
        "codes": len(new_tokens) if tokens_are_codes else len(speech),
        "peak_bytes": _peak_memory(device),
        "text_ids": new_tokens,
        "speech_ids": speech,
    }


# ------------------------------------------------------------------------------------------------------------------
# The official implementation, in a worker process of its own environment (transformers 4.52.3)
# ------------------------------------------------------------------------------------------------------------------
def reference_worker(args: argparse.Namespace) -> None:
    """Loads the official model from `--model-dir`; per `audio`/`text` line on stdin, prints one JSON result."""
    from safetensors.torch import load_file

    sys.path.insert(0, str(args.reference_code))
    from funaudiochat.register import register_funaudiochat
    from transformers import AutoModelForSeq2SeqLM

    register_funaudiochat()
    folder, device = Path(args.model_dir), torch.device(args.device)
    model = AutoModelForSeq2SeqLM.from_pretrained(folder, torch_dtype=DTYPES[args.dtype]).to(device).eval()
    inputs = {key: value.to(device) for key, value in load_file(folder / "inputs.safetensors").items()}
    settings = json.loads((folder / "generate_kwargs.json").read_text())

    def run(clock):
        with torch.no_grad():
            sequences, speech_ids = model.generate(**inputs, **settings, streamer=clock)
        return sequences, None if model.sp_gen_kwargs["disable_speech"] else speech_ids

    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        audio = line.strip() == "audio"
        # Audio mode as the official S2S setting (first text token forced to <|audio_bos|>); text mode as its S2T one.
        model.sp_gen_kwargs.update(text_greedy=not audio, disable_speech=not audio, force_text_abos=audio)
        print(json.dumps(timed(run, device, inputs["input_ids"].shape[1])), flush=True)


class Reference:
    """Drives a `reference_worker` subprocess: one measured `generate` per `run(mode)` call."""

    def __init__(self, args: argparse.Namespace, model_dir: Path):
        command = [args.reference_python, str(Path(__file__).resolve()), "--reference-worker"]
        command += ["--reference-code", str(args.reference_code), "--model-dir", str(model_dir)]
        command += ["--device", args.device, "--dtype", args.dtype, "--threads", str(torch.get_num_threads())]
        self.log = open(model_dir / "worker.log", "w+")  # noqa: SIM115 (closed in `close`)
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True
        )
        self._read()

    def _read(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            self.log.seek(0)
            error = self.log.read().strip().splitlines()[-15:]
            raise RuntimeError(f"the reference worker exited (code {self.process.wait()}):\n" + "\n".join(error))
        return json.loads(line)

    def run(self, mode: str) -> dict:
        self.process.stdin.write(mode + "\n")
        self.process.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()
            self.process.wait()
        self.log.close()


# ------------------------------------------------------------------------------------------------------------------
# Model, inputs and our runs
# ------------------------------------------------------------------------------------------------------------------
def hub_config(preset: str) -> dict:
    """The config in the hub layout (readable by the official code): the 8B one, the tiny one, or it resized."""
    if preset == "8b":
        return json.loads((REPO / "hub_configs" / "Fun-Audio-Chat-8B" / "config.json").read_text())
    config = json.loads((TINY_FAC / "config.json").read_text())
    if preset == "tiny":
        return config
    config["hidden_size"] = MID_SIZE["text_config"]["hidden_size"]
    config["text_config"].update(MID_SIZE["text_config"])
    config["audio_config"].update(MID_SIZE["audio_config"])
    config["audio_config"]["crq_transformer_config"].update(MID_SIZE["crq_transformer_config"])
    return config


def prompt_inputs(preset: str) -> dict[str, torch.Tensor]:
    """The golden `s2m_long` processor outputs plus the Whisper features of its recording (as tests/conftest.py)."""
    import soundfile
    from safetensors.torch import load_file
    from transformers import WhisperFeatureExtractor

    prefix = f"{SCENARIO}.in."
    inputs = {key[len(prefix) :]: value for key, value in load_file(GOLDEN_INPUTS).items() if key.startswith(prefix)}
    waveform, rate = soundfile.read(PROMPT_AUDIO, dtype="float32")
    features = WhisperFeatureExtractor.from_pretrained(TINY_FAC)(
        [waveform], sampling_rate=rate, return_attention_mask=True, padding="max_length", return_tensors="pt"
    )
    inputs["input_features"] = features["input_features"]
    inputs["feature_attention_mask"] = features["attention_mask"]
    if preset == "8b":
        tiny_ids = inputs["input_ids"]
        for tiny, real in REAL_SPECIAL_IDS.items():
            inputs["input_ids"] = torch.where(tiny_ids == tiny, real, inputs["input_ids"])
    return inputs


def build_model(config_dict: dict, device: torch.device, dtype: torch.dtype, seed: int):
    from transformers_fac import FunAudioChatConfig, FunAudioChatForConditionalGeneration

    torch.manual_seed(seed)
    config = FunAudioChatConfig.from_dict(config_dict)
    with torch.device(device):
        model = FunAudioChatForConditionalGeneration._from_config(config, dtype=dtype)
    return model.eval()


def generate_kwargs(steps: int, config_dict: dict) -> dict:
    """Greedy, exactly `steps` steps: the EOS id is the vocabulary size, which the LLM cannot produce."""
    text = config_dict["text_config"]
    return dict(
        max_new_tokens=steps,
        do_sample=False,
        repetition_penalty=1.0,
        eos_token_id=text["vocab_size"],
        pad_token_id=text.get("pad_token_id", text["eos_token_id"]),  # the 8B config leaves it to <|endoftext|>
    )


def save_for_reference(model, config_dict: dict, inputs: dict, settings: dict, folder: Path, dtype: str) -> None:
    """Our random weights in the checkpoint layout, with the hub-layout config that the official code reads."""
    from safetensors.torch import save_file

    model.save_pretrained(folder)
    (folder / "config.json").write_text(json.dumps({**config_dict, "torch_dtype": dtype}, indent=2))
    save_file({key: value.contiguous() for key, value in inputs.items()}, folder / "inputs.safetensors")
    (folder / "generate_kwargs.json").write_text(json.dumps(settings))


@dataclass
class Variant:
    """One measured configuration: our `run(clock)`, or a mode of the reference worker."""

    name: str
    prompt_length: int
    run: Callable | None = None
    reference_mode: str | None = None
    tokens_are_codes: bool = False


def ours(model, inputs: dict, settings: dict, mode: str, path: str) -> Variant:
    """Our `generate` in `mode`, on the eager module path or the static compiled step."""
    extra = {"cache_implementation": "static"} if path == "compiled" else {}

    def run(clock):
        output = model.generate(**inputs, **settings, **extra, generation_mode=mode, streamer=clock)
        return output if mode == "audio" else (output, None)

    return Variant(f"ours, {mode} mode, {path}", inputs["input_ids"].shape[1], run)


def single_resolution(model, inputs: dict, settings: dict, codes: int) -> Variant:
    """The bare LLM at 25 Hz positions: each audio slot of the prompt ×5, then one step per speech code."""
    prompt = inputs["input_ids"][0]
    repeats = torch.where(prompt == model.config.audio_token_index, model.config.audio_config.group_size, 1)
    input_ids = prompt.repeat_interleave(repeats)[None]
    kwargs = {**settings, "max_new_tokens": codes}

    def run(clock):
        return model.language_model.generate(input_ids, **kwargs, streamer=clock), None

    return Variant("25 Hz single resolution (LLM only)", input_ids.shape[1], run, tokens_are_codes=True)


# ------------------------------------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------------------------------------
def summarize(results: list[dict]) -> dict:
    keys = ("total", "cpu", "prefill", "decode", "peak_bytes")
    median = {key: statistics.median(r[key] for r in results) for key in keys}
    first = results[0]
    decode_steps = first["steps"] - 1
    speech_seconds = first["codes"] * SECONDS_PER_CODE
    first_codes = [r["first_code"] for r in results if r["first_code"] is not None]
    return {
        **median,
        "min_total": min(r["total"] for r in results),
        "steps": first["steps"],
        "codes": first["codes"],
        "ms_per_step": 1000 * median["decode"] / decode_steps,
        "steps_per_s": decode_steps / median["decode"],
        "codes_per_s": first["codes"] / median["decode"] if first["codes"] else None,
        "rtf": median["total"] / speech_seconds if speech_seconds else None,
        "realtime": speech_seconds / median["total"] if speech_seconds else None,
        "first_code": 1000 * statistics.median(first_codes) if first_codes else None,
    }


def _number(value: float | None, digits: int) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def table(
    summaries: dict[str, dict], prompt_lengths: dict[str, int], device: torch.device, compile_seconds: dict[str, float]
) -> str:
    memory = "peak GPU MB" if device.type == "cuda" else "peak RSS MB"
    columns = [
        "variant", "prompt pos.", "LLM steps", "speech codes (s)", "total s (min)", "CPU s", "prefill ms", "ms/step",
        "LLM steps/s", "codes/s", "RTF", "× real time", "first code ms", memory, "compile s",
    ]  # fmt: skip
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for name, s in summaries.items():
        cells = [
            name,
            str(prompt_lengths[name]),
            str(s["steps"]),
            f"{s['codes']} ({s['codes'] * SECONDS_PER_CODE:.1f})" if s["codes"] else "0",
            f"{s['total']:.3f} ({s['min_total']:.3f})",
            f"{s['cpu']:.3f}",
            f"{1000 * s['prefill']:.1f}",
            f"{s['ms_per_step']:.2f}",
            f"{s['steps_per_s']:.1f}",
            _number(s["codes_per_s"], 0),
            _number(s["rtf"], 3),
            _number(s["realtime"], 2),
            _number(s["first_code"], 1),
            f"{s['peak_bytes'] / 2**20:.0f}",
            _number(compile_seconds.get(name), 1),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _median_ratio(slower: list[dict], faster: list[dict], key: str) -> float:
    return statistics.median(s[key] / f[key] for s, f in zip(slower, faster))


def reference_notes(mode: str, ours_runs: list[dict], reference_runs: list[dict]) -> list[str]:
    same_text = ours_runs[0]["text_ids"] == reference_runs[0]["text_ids"]
    same_speech = ours_runs[0]["speech_ids"] == reference_runs[0]["speech_ids"]
    minima = min(r["total"] for r in reference_runs) / min(o["total"] for o in ours_runs)
    return [
        f"- {mode} mode: ours is {_median_ratio(reference_runs, ours_runs, 'total'):.2f}× as fast as the reference "
        f"(median of {len(ours_runs)} interleaved pairs; {minima:.2f}× on the minima; "
        f"{_median_ratio(reference_runs, ours_runs, 'cpu'):.2f}× in CPU time; "
        f"{_median_ratio(reference_runs, ours_runs, 'decode'):.2f}× on the decoding phase)",
        f"- {mode} mode outputs vs the reference: text ids {'identical' if same_text else 'DIFFERENT'}, "
        f"speech ids {'identical' if same_speech else 'DIFFERENT'} ({len(ours_runs[0]['speech_ids'])} codes)",
    ]


def path_notes(mode: str, eager: list[dict], compiled: list[dict]) -> list[str]:
    same = eager[0]["text_ids"] == compiled[0]["text_ids"] and eager[0]["speech_ids"] == compiled[0]["speech_ids"]
    return [
        f"- {mode} mode, compiled vs eager: {_median_ratio(eager, compiled, 'total'):.2f}× as fast in total, "
        f"{_median_ratio(eager, compiled, 'cpu'):.2f}× in CPU time, {_median_ratio(eager, compiled, 'decode'):.2f}× on "
        f"the decoding phase (medians of {len(eager)} interleaved pairs); outputs "
        f"{'identical' if same else 'DIFFERENT'}"
    ]


def issue_notes(mode: str, ours_runs: list[dict]) -> list[str]:
    seconds = ISSUE_REFERENCE_SECONDS[mode]
    best = min(o["total"] for o in ours_runs)
    return [
        f"- {mode} mode vs the issue's number for the official implementation ({seconds} s, another machine): "
        f"ours {statistics.median(o['total'] for o in ours_runs):.3f} s median, {best:.3f} s min "
        f"({seconds / best:.2f}× on the minimum; not a same-machine comparison)"
    ]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--preset", choices=("tiny", "mid", "8b"), default="mid", help="tiny or mid-size CPU model, or real 8B shapes"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=tuple(DTYPES), default=None, help="default: float32 (mid), bfloat16 (8b)")
    parser.add_argument("--steps", type=int, default=50, help="LLM steps (5 Hz) per generate call")
    parser.add_argument("--mode", choices=("audio", "text", "both"), default="both")
    parser.add_argument(
        "--paths", default="eager,compiled", help="comma-separated: eager (module path), compiled (static step)"
    )
    parser.add_argument("--repeats", type=int, default=5, help="measured calls per variant, after one warm-up")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    parser.add_argument("--threads", type=int, default=None, help="torch threads, here and in the reference worker")
    parser.add_argument("--no-single-resolution", action="store_true", help="skip the 25 Hz single-resolution run")
    parser.add_argument("--reference-python", help="python of an environment with transformers 4.52.3")
    parser.add_argument("--reference-code", type=Path, help="folder holding the official `funaudiochat/` package")
    parser.add_argument("--reference-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.dtype is None:
        args.dtype = "bfloat16" if args.preset == "8b" else "float32"
    if not args.reference_worker and bool(args.reference_python) != bool(args.reference_code):
        parser.error("--reference-python and --reference-code go together")
    if args.steps < 2 or args.repeats < 1:
        parser.error("--steps must be at least 2 and --repeats at least 1")
    args.paths = args.paths.split(",")
    if not args.paths or not set(args.paths) <= {"eager", "compiled"}:
        parser.error("--paths is a comma-separated list of eager and compiled")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.reference_worker:
        reference_worker(args)
        return
    try:
        import transformers_fac  # noqa: F401
    except ImportError:  # running from a checkout without installing it
        sys.path.insert(0, str(REPO / "src"))

    load_before = os.getloadavg()
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    if device.type == "cpu":
        torch.set_flush_denormal(True)  # float32 denormals make CPU matrix products up to ~60x slower
    config_dict = hub_config(args.preset)
    model = build_model(config_dict, device, dtype, args.seed)
    inputs = prompt_inputs(args.preset)
    settings = generate_kwargs(args.steps, config_dict)
    on_device = {key: value.to(device) for key, value in inputs.items()}
    prompt_length = inputs["input_ids"].shape[1]
    modes = ("audio", "text") if args.mode == "both" else (args.mode,)
    variants = [ours(model, on_device, settings, mode, path) for mode in modes for path in args.paths]

    reference, workdir, reference_error = None, tempfile.TemporaryDirectory(prefix="fac-bench-"), None
    if args.reference_python:
        try:
            save_for_reference(model, config_dict, inputs, settings, Path(workdir.name), args.dtype)
            reference = Reference(args, Path(workdir.name))
        except (OSError, RuntimeError) as error:
            reference_error = str(error)
        else:
            variants += [Variant(f"reference, {mode} mode", prompt_length, reference_mode=mode) for mode in modes]

    def measure(variant: Variant) -> dict:
        if variant.reference_mode is not None:
            return reference.run(variant.reference_mode)
        return timed(variant.run, device, variant.prompt_length, variant.tokens_are_codes)

    warmup = {variant.name: measure(variant) for variant in variants}
    if "audio" in modes and not args.no_single_resolution:
        codes = warmup[f"ours, audio mode, {args.paths[0]}"]["codes"]
        variants.append(single_resolution(model, on_device, settings, codes))
        warmup[variants[-1].name] = measure(variants[-1])
    results = {variant.name: [] for variant in variants}
    for _ in range(args.repeats):
        for variant in variants:
            results[variant.name].append(measure(variant))
    if reference is not None:
        reference.close()
    workdir.cleanup()

    summaries = {name: summarize(runs) for name, runs in results.items()}
    compile_seconds = {
        name: warmup[name]["total"] - summaries[name]["total"] for name in summaries if name.endswith("compiled")
    }
    load_after = os.getloadavg()
    print(f"## Fun-Audio-Chat generation benchmark: preset {args.preset}, {args.device}, {args.dtype}\n")
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs; load average "
        f"{load_before[0]:.2f} before, {load_after[0]:.2f} after; {args.steps} greedy LLM steps per call; "
        f"{args.repeats} interleaved repeats after a warm-up; medians (min total in brackets)\n"
    )
    print(table(summaries, {variant.name: variant.prompt_length for variant in variants}, device, compile_seconds))
    print()
    notes = []
    for mode in modes:
        ours_runs = results[f"ours, {mode} mode, {args.paths[0]}"]
        if len(args.paths) == 2:
            notes += path_notes(mode, results[f"ours, {mode} mode, eager"], results[f"ours, {mode} mode, compiled"])
        if f"reference, {mode} mode" in results:
            notes += reference_notes(mode, ours_runs, results[f"reference, {mode} mode"])
        elif args.preset == "mid" and args.steps == 50:
            notes += issue_notes(mode, ours_runs)
    if reference_error is not None:
        notes.append(f"- the reference could not run: {reference_error}")
    single = summaries.get("25 Hz single resolution (LLM only)")
    if single is not None:
        dual = summaries[f"ours, audio mode, {args.paths[0]}"]
        notes.append(
            f"- dual resolution: for the same {dual['codes']} speech codes the 25 Hz single-resolution backbone takes "
            f"{single['total'] / dual['total']:.2f}× the time of our 5 Hz LLM + 25 Hz speech head "
            f"({single['decode'] / dual['decode']:.2f}× on the decoding phase; first code "
            f"{single['first_code']:.0f} vs {dual['first_code']:.0f} ms)"
        )
    print("\n".join(notes))


if __name__ == "__main__":
    main()
