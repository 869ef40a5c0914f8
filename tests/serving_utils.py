"""Helpers of the server tests: a real `fac-serve` process on 127.0.0.1, and a tiny checkpoint that calls a tool.

The tiny random checkpoint never writes a tool call by itself. `build_tool_calling_checkpoint` fits the output layer of
a copy of it (a few hundred steps on cached hidden states, about a second) so that, asked for the weather with
`TOOLS` and `question_en.wav` (as a file, or as the Realtime API's 24 kHz PCM16), it answers `TOOL_CALL` (65 tokens):
a real model that really emits the tokens the server parses.
"""

import base64
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

AUDIO = Path(__file__).resolve().parent / "fixtures" / "audio"
QUESTION = AUDIO / "question_en.wav"
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Get the current weather of a city.",
            "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]},
        },
    }
]
MODEL = "fun-audio-chat"
TOOL_CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"location": "杭州"}}\n</tool_call>'


def audio_b64(path: Path = QUESTION) -> str:
    return base64.b64encode(path.read_bytes()).decode("ascii")


def question(text: str | None = None, path: Path = QUESTION) -> list[dict]:
    """Chat messages: one user turn with the audio of `path` (and `text` after it)."""
    parts = [{"type": "input_audio", "input_audio": {"data": audio_b64(path), "format": "wav"}}]
    if text:
        parts.append({"type": "text", "text": text})
    return [{"role": "user", "content": parts}]


def pcm16_24k(path: Path = QUESTION) -> str:
    """The audio of `path` as the Realtime API sends it: base64 PCM16 mono at 24 kHz."""
    import numpy as np
    import soundfile as sf

    from transformers_fac.audio_io import resample

    waveform, rate = sf.read(path, dtype="float32")
    samples = (resample(waveform, rate, 24000) * 32767).astype("<i2")
    return base64.b64encode(np.ascontiguousarray(samples).tobytes()).decode("ascii")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """A `fac-serve` child process; its output goes to `log` (read it with `output()`)."""

    def __init__(self, args: list[str], log: Path, port: int, env: dict | None = None):
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        self._log_file = open(log, "wb")  # noqa: SIM115 - closed in stop()
        command = [sys.executable, "-m", "transformers_fac.serving.cli", "--port", str(port), *args]
        self.process = subprocess.Popen(command, stdout=self._log_file, stderr=subprocess.STDOUT, env=env)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"fac-serve exited with {self.process.returncode}:\n{self.output()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.25)
        self.stop()
        raise TimeoutError(f"fac-serve did not answer /health within {timeout} s:\n{self.output()[-3000:]}")

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signum)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log_file.close()
        return self.process.returncode


@contextlib.contextmanager
def running_server(args: list[str], log: Path, timeout: float = 240, env: dict | None = None):
    """Starts `fac-serve ARGS` on a free port, waits for `GET /health`, yields it, and stops it with SIGTERM."""
    env = {**os.environ, **(env or {})}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[1] / "src"), env.get("PYTHONPATH", "")])
    server = ServerProcess(args, log, free_port(), env)
    try:
        server.wait_healthy(timeout)
        yield server
    finally:
        server.stop()


def openai_client(server: ServerProcess, api_key: str = "unused", timeout: float = 180):
    """The official client for `server` (no retries: the tests see every answer)."""
    import openai

    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=api_key, max_retries=0, timeout=timeout)


def save_test_voice(folder: Path, name: str = "my-voice") -> Path:
    """A saved voice with a 2 s prompt (random speaker vector, prompt codes and mel, like the tiny model itself)."""
    import torch

    from transformers_fac.voice import FunAudioChatVoice

    generator = torch.Generator().manual_seed(3)
    codes = torch.randint(0, 6561, (50,), generator=generator)
    voice = FunAudioChatVoice(torch.randn(192, generator=generator), codes, torch.randn(100, 80, generator=generator))
    voice.name = name
    return voice.save(folder / name)


def build_tool_calling_checkpoint(out_dir: Path) -> Path:
    """A copy of the tiny checkpoint whose output layer is fitted to answer `TOOL_CALL` to the weather question."""
    import torch
    from transformers import AutoModelForMultimodalLM, AutoProcessor

    from transformers_fac.audio_io import load_audio
    from transformers_fac.prompts import AUDIO_TEMPLATE
    from transformers_fac.serving.prompting import system_prompt
    from transformers_fac.tiny import tiny_checkpoint

    shutil.copytree(tiny_checkpoint(), out_dir)
    processor = AutoProcessor.from_pretrained(out_dir)
    model = AutoModelForMultimodalLM.from_pretrained(out_dir).eval()
    messages = [
        {"role": "system", "content": system_prompt(False, TOOLS)},
        {"role": "user", "content": AUDIO_TEMPLATE},
    ]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    target = TOOL_CALL + processor.tokenizer.eos_token
    inputs = processor(text=prompt + target, audio=[load_audio(QUESTION)], return_tensors="pt")
    ids = inputs["input_ids"][0]
    start = len(ids) - len(processor.tokenizer(target)["input_ids"])
    with torch.no_grad():
        hidden = model(**inputs, output_speech_logits=False).last_hidden_state[0, start - 1 : -1]
    targets = ids[start:]
    # the checkpoint's repetition penalty rescales the logits of every token already in the sequence: fit through it
    penalty = model.generation_config.repetition_penalty or 1.0
    seen = torch.zeros(len(targets), model.config.text_config.vocab_size, dtype=torch.bool)
    for step in range(len(targets)):
        seen[step, ids[: start + step]] = True
    head = model.language_model.lm_head.weight
    weight = head.detach().clone().requires_grad_(True)
    optimizer = torch.optim.Adam([weight], lr=0.1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: one thread is much faster on a busy machine
    try:
        for _ in range(1500):
            logits = hidden @ weight.T
            logits = torch.where(seen, torch.where(logits > 0, logits / penalty, logits * penalty), logits)
            loss = torch.nn.functional.cross_entropy(logits, targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if loss.item() < 1e-3:
                break
    finally:
        torch.set_num_threads(threads)
    with torch.no_grad():
        head.copy_(weight)
    model.save_pretrained(out_dir)
    return out_dir


def ray_env() -> dict:
    """The environment of a `fac-serve --ray` test: a local Ray instance of its own, no usage reports."""
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    return {**env, "RAY_USAGE_STATS_ENABLED": "0", "RAY_ADDRESS": ""}
