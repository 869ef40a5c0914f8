"""Stopping a reply early is safe and immediate, checked in child processes (what a user's script or `fac-chat` does):
the exit status is the expected one, nothing aborts the interpreter, no `fac-generate` thread is left, generation stops
within a bounded number of decoding steps, and the next reply on the same model equals a fresh model's."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from conftest import AUDIO_FILES

LONG_REPLY = 400  # LLM steps: tens of seconds on CPU unless the reply is cancelled

PRELUDE = textwrap.dedent(
    f"""
    import json, sys, threading
    import numpy as np, torch
    torch.set_flush_denormal(True)
    import transformers_fac
    from transformers import AutoModelForMultimodalLM, AutoProcessor, StoppingCriteria
    from transformers_fac import S2M_SYSTEM_PROMPT, FunAudioChatConversation, stream_reply

    MODEL = sys.argv[1]
    report = {{}}

    class StepCounter(StoppingCriteria):
        '''Counts the decoding steps (one stopping-criteria check each) done after `mark()`.'''

        def __init__(self):
            self.after = None

        def mark(self):
            self.after = 0

        def __call__(self, input_ids, scores=None, **kwargs):
            if self.after is not None:
                self.after += 1
            return torch.zeros(input_ids.shape[0], dtype=torch.bool)

    def generation_threads():
        return [thread.name for thread in threading.enumerate() if thread.name == "fac-generate"]

    def load():
        return AutoModelForMultimodalLM.from_pretrained(MODEL).eval()

    model, processor = load(), AutoProcessor.from_pretrained(MODEL)
    chat = FunAudioChatConversation(system_prompt=S2M_SYSTEM_PROMPT)
    chat.add_user_audio({str(AUDIO_FILES["en"])!r})
    inputs = chat.model_inputs(processor)
    """
)

BREAK_AND_REUSE = textwrap.dedent(
    f"""
    def reply(model):
        chunks = list(stream_reply(model, processor, inputs, max_new_tokens=8, do_sample=False))
        text = "".join(chunk.text for chunk in chunks)
        return text, np.concatenate([chunk.audio for chunk in chunks if chunk.audio is not None])

    # 1. break out of the loop (the README pattern: the stream is not kept in a variable)
    counter, texts = StepCounter(), 0
    for chunk in stream_reply(model, processor, inputs, max_new_tokens={LONG_REPLY}, stopping_criteria=[counter]):
        texts += bool(chunk.text)
        if texts == 3:
            counter.mark()
            break
    report["break"] = {{"steps_after": counter.after, "threads": generation_threads()}}

    # 2. close() while chunks are still queued: nothing more is yielded
    counter = StepCounter()
    stream = stream_reply(model, processor, inputs, max_new_tokens={LONG_REPLY}, stopping_criteria=[counter])
    next(stream), next(stream)
    counter.mark()
    stream.close()
    report["close"] = {{"steps_after": counter.after, "threads": generation_threads(), "more": list(stream)}}

    # 3. cancel() from another thread while this one iterates; then garbage collection of a stream being iterated
    counter = StepCounter()
    stream = stream_reply(model, processor, inputs, max_new_tokens={LONG_REPLY}, stopping_criteria=[counter])
    next(stream)
    def cancel():
        counter.mark()
        stream.cancel()
    threading.Timer(0.2, cancel).start()
    rest = sum(1 for _ in stream)
    report["cancel"] = {{"steps_after": counter.after, "threads": generation_threads(), "ended": True}}
    counter = StepCounter()
    stream = stream_reply(model, processor, inputs, max_new_tokens={LONG_REPLY}, stopping_criteria=[counter])
    next(stream)
    counter.mark()
    del stream
    report["gc"] = {{"steps_after": counter.after, "threads": generation_threads()}}

    # 4. the model is ready: the next (greedy) reply equals a fresh model's
    text, audio = reply(model)
    fresh_text, fresh_audio = reply(load())
    report["reuse"] = {{
        "same_text": text == fresh_text and bool(text),
        "audio_diff": float(np.abs(audio - fresh_audio).max()) if audio.shape == fresh_audio.shape else None,
    }}
    print(json.dumps(report))
    """
)

RAISE_IN_LOOP = textwrap.dedent(
    f"""
    def excepthook(kind, error, traceback):  # runs when the error leaves the script, before the interpreter exits
        report["threads"] = generation_threads()
        report["steps_after"] = counter.after
        print("REPORT " + json.dumps(report), file=sys.stderr, flush=True)
        sys.__excepthook__(kind, error, traceback)

    sys.excepthook = excepthook
    counter, texts = StepCounter(), 0
    for chunk in stream_reply(model, processor, inputs, max_new_tokens={LONG_REPLY}, stopping_criteria=[counter]):
        texts += bool(chunk.text)
        if texts == 3:
            counter.mark()
            raise RuntimeError("the consumer failed")
    """
)


def run_child(code: str, model_dir) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", PRELUDE + code, str(model_dir)], capture_output=True, text=True, timeout=300
    )


def assert_clean(stderr: str) -> None:
    assert "terminate called" not in stderr and "Fatal Python error" not in stderr, stderr


def test_break_close_cancel_and_gc_stop_within_a_step_and_the_model_is_reusable(tiny_e2e_dir):
    result = run_child(BREAK_AND_REUSE, tiny_e2e_dir)
    assert result.returncode == 0, result.stderr
    assert_clean(result.stderr)
    report = json.loads(result.stdout.strip().splitlines()[-1])
    for case in ("break", "close", "cancel", "gc"):
        assert report[case]["threads"] == [], case
        # the step in progress when the stream was left may still finish; then the stopping criterion ends it
        assert report[case]["steps_after"] is not None and report[case]["steps_after"] <= 2, (case, report)
    assert report["close"]["more"] == []
    assert report["reuse"] == {"same_text": True, "audio_diff": 0.0}


def test_an_error_in_the_loop_ends_the_process_normally(tiny_e2e_dir):
    result = run_child(RAISE_IN_LOOP, tiny_e2e_dir)
    assert result.returncode == 1
    assert_clean(result.stderr)
    assert "RuntimeError: the consumer failed" in result.stderr
    line = next(line for line in result.stderr.splitlines() if line.startswith("REPORT "))
    report = json.loads(line.removeprefix("REPORT "))
    assert report["threads"] == [] and report["steps_after"] <= 2, report


CLI_CHILD = textwrap.dedent(
    """
    import atexit, json, sys, threading
    from transformers_fac.cli import main

    def report():  # registered before the package's own exit hook, so it runs after it, just before exiting
        names = [thread.name for thread in threading.enumerate() if thread.name == "fac-generate"]
        with open(sys.argv[1], "w") as handle:
            json.dump(names, handle)

    atexit.register(report)
    sys.exit(main(sys.argv[2:]))
    """
)


def test_ctrl_c_in_fac_chat_mid_reply_exits_130_with_one_line(tiny_e2e_dir, tmp_path):
    threads = tmp_path / "threads.json"
    argv = [AUDIO_FILES["en"], "--model", tiny_e2e_dir, "-o", tmp_path / "r.wav", "--max-new-tokens", LONG_REPLY]
    process = subprocess.Popen(
        [sys.executable, "-c", CLI_CHILD, str(threads), *map(str, argv)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        first = process.stdout.read(1)  # the reply text streams to stdout: the reply is under way
        assert first, process.stderr.read().decode()
        time.sleep(0.3)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    stderr = stderr.decode()
    assert process.returncode == 130, stderr
    assert_clean(stderr)
    assert "Traceback" not in stderr and stderr.rstrip().splitlines()[-1] == "fac-chat: interrupted"
    assert json.loads(threads.read_text()) == []
    assert not (tmp_path / "r.wav").exists()


@pytest.mark.parametrize("generation_mode", ["audio", "text"])
def test_leaving_a_with_block_cancels(tiny_e2e_model, tiny_e2e_dir, generation_mode):
    """In-process: the context manager, both modes (the text mode runs transformers' own loop)."""
    import threading

    import torch
    from transformers import AutoProcessor, StoppingCriteria

    from transformers_fac import S2M_SYSTEM_PROMPT, FunAudioChatConversation, stream_reply

    class Steps(StoppingCriteria):
        after = None  # decoding steps after the interruption

        def __call__(self, input_ids, scores=None, **kwargs):
            if Steps.after is not None:
                Steps.after += 1
            return torch.zeros(input_ids.shape[0], dtype=torch.bool)

    processor = AutoProcessor.from_pretrained(tiny_e2e_dir)
    chat = FunAudioChatConversation(system_prompt=S2M_SYSTEM_PROMPT)
    chat.add_user_audio(AUDIO_FILES["en"])
    inputs = chat.model_inputs(processor)
    with pytest.raises(KeyboardInterrupt):
        with stream_reply(
            tiny_e2e_model,
            processor,
            inputs,
            generation_mode=generation_mode,
            max_new_tokens=LONG_REPLY,
            stopping_criteria=[Steps()],
        ) as stream:
            for _ in zip(range(3), stream):
                pass
            Steps.after = 0
            raise KeyboardInterrupt
    assert stream.cancelled and Steps.after <= 2
    assert not [thread for thread in threading.enumerate() if thread.name == "fac-generate"]


def test_readme_streaming_snippet_runs_as_written(tiny_e2e_model, tiny_e2e_dir, tmp_path, monkeypatch):
    import re
    from pathlib import Path

    import soundfile as sf
    from transformers import AutoProcessor

    import transformers_fac
    from transformers_fac import S2M_SYSTEM_PROMPT, FunAudioChatConversation

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    snippet = re.search(r"\n(# Streaming:.*?)\n\n# Pipelines", readme, re.DOTALL).group(1)
    processor = AutoProcessor.from_pretrained(tiny_e2e_dir)
    chat = FunAudioChatConversation(system_prompt=S2M_SYSTEM_PROMPT)
    chat.add_user_audio(AUDIO_FILES["en"])

    def short_stream_reply(*args, **kwargs):  # the tiny model never ends by itself: keep its reply short
        return transformers_fac.stream_reply(*args, **{**kwargs, "max_new_tokens": 8})

    monkeypatch.chdir(tmp_path)
    namespace = {"model": tiny_e2e_model, "processor": processor, "inputs": chat.model_inputs(processor)}
    exec(snippet, {**namespace, "stream_reply": short_stream_reply})  # noqa: S102 - the README's own code
    audio, rate = sf.read(tmp_path / "reply_stream.wav")
    assert rate == 24000 and audio.size > 0 and audio.size % 960 == 0


def test_cancel_criteria_stops_one_row_or_all():
    import threading

    import torch

    from transformers_fac.streaming import CancelCriteria

    criteria, ids = CancelCriteria(), torch.zeros(3, 5, dtype=torch.long)
    assert criteria(ids).tolist() == [False, False, False]
    criteria.cancel(row=1)
    assert criteria(ids).tolist() == [False, True, False] and not criteria.cancelled
    switch = threading.Event()
    shared = CancelCriteria(switch)  # e.g. a stop button's switch
    switch.set()
    assert shared(ids).tolist() == [True, True, True] and shared.cancelled
