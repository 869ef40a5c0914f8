"""The decoder process on the tiny decoder: a stream moved into it decodes the audio it decodes alone; an error in it
reaches the caller and it goes on; `close` stops and joins it."""

import multiprocessing
import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from transformers_fac.engine.decoder_process import DecoderProcess, DecoderProcessError
from transformers_fac.serving import ServerSettings
from transformers_fac.serving.loading import load


@pytest.fixture(scope="module")
def token2wav():
    return load(ServerSettings(model="tiny")).model.token2wav


def test_a_stream_moved_into_the_decoder_process_decodes_as_alone(token2wav):
    """A reply's first chunk decoded here, its stream moved into the process (pickled without its model), the rest
    decoded there: the audio equals the stream decoder's alone, and closing leaves no child behind."""
    codes = torch.randint(0, 6561, (95,), generator=torch.Generator().manual_seed(3)).tolist()
    here = token2wav.stream_batch()
    here.open("a", "中文女")
    here.push("a", codes[:20])
    audio = [here.step(["a"], steps=1)["a"]]
    process = DecoderProcess(token2wav, threads=1)
    try:
        process.attach("a", here.detach("a"))
        assert process.push("a", codes[20:] + [6562]) == 75  # the end-of-speech id is not a decoder code
        assert process.next_step_codes("a") == 18 + 15
        while process.due():
            audio.append(process.step(["a"], steps=1)["a"])
        audio.append(process.finish(["a"])["a"])
        assert process.due() == {}
    finally:
        process.close()
    assert multiprocessing.active_children() == []
    alone = token2wav.stream_decoder("中文女")
    expected = torch.cat([alone.push(codes[:20]), alone.push(codes[20:]), alone.finish()], dim=1)[0].numpy()
    decoded = np.concatenate(audio)
    assert len(audio) == 2 + (95 - 18) // 15 and decoded.shape == expected.shape == (95 * 960,)
    np.testing.assert_allclose(decoded, expected, rtol=0, atol=1e-5)


def test_an_error_in_the_decoder_process_reaches_the_caller_and_a_dead_one_says_so(token2wav):
    process = DecoderProcess(token2wav, threads=1)
    try:
        with pytest.raises(DecoderProcessError, match="KeyError"):
            process.push("nobody", [1, 2, 3])
        assert process.due() == {}  # it goes on
        (child,) = multiprocessing.active_children()
        child.kill()
        child.join()
        with pytest.raises(DecoderProcessError, match="gone"):
            process.due()
    finally:
        process.close()
    assert multiprocessing.active_children() == []


def test_the_decoder_process_decodes_on_the_cpu_only():
    with pytest.raises(ValueError, match="CPU"):  # checked before any process starts
        DecoderProcess(SimpleNamespace(device=torch.device("cuda")), threads=1)


def test_a_decoder_process_that_dies_at_its_start_raises_and_leaves_nothing(token2wav, monkeypatch):
    """The child cannot build its decoder (here: no weights sent, a strict load fails): the caller gets the error and
    no child is left running."""
    monkeypatch.setattr(token2wav, "state_dict", lambda: {})
    with pytest.raises(DecoderProcessError, match="gone"):
        DecoderProcess(token2wav, threads=1)
    assert multiprocessing.active_children() == []


def test_a_child_that_cannot_import_the_main_module_fails_the_start_at_once(tmp_path):
    """A program read from standard input cannot be imported by a spawned child, which exits before it takes its end
    of the pipe (that end may then stay open in the parent): the start raises as soon as the child exits, with what to
    do (it waited for the 300 s start timeout before)."""
    program = (
        "from transformers_fac.engine.decoder_process import DecoderProcess, DecoderProcessError\n"
        "from transformers_fac.serving import ServerSettings\n"
        "from transformers_fac.serving.loading import load\n"
        "try:\n"
        "    DecoderProcess(load(ServerSettings(model='tiny')).model.token2wav, threads=1)\n"
        "except DecoderProcessError as error:\n"
        "    print('raised:', error)\n"
    )
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-"], input=program, capture_output=True, text=True, cwd=tmp_path, timeout=240
    )
    assert "raised: The decoder process exited during its start (exit code 1" in result.stdout, result.stderr[-2000:]
    assert "__main__" in result.stdout and result.returncode == 0
    assert time.monotonic() - started < 120
