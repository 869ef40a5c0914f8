"""`fac-chat --live` (a recorded conversation played through the live engine) and the CLI's friendly edges: files
checked before the model loads, the reply text printed once."""

import re
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
from conftest import AUDIO_FILES
from live_testing import two_questions

from transformers_fac import cli


def test_live_recording_with_two_questions_prints_two_turns_and_writes_the_replies(tiny_e2e_dir, tmp_path):
    recording = tmp_path / "conversation.wav"
    sf.write(recording, two_questions(), 16000)
    out = tmp_path / "replies"
    command = ["--live", "--input", recording, "--model", tiny_e2e_dir, "--output-dir", out, "--fast"]
    result = subprocess.run(
        [sys.executable, "-m", "transformers_fac.cli", *map(str, command), "--max-new-tokens", "12"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    for turn in (1, 2):  # every event line starts with the session clock
        assert any(re.match(rf"\[ *\d+\.\d\d s\] turn {turn}  speech started$", line) for line in lines), lines
        assert any(
            re.match(rf"\[ *\d+\.\d\d s\] turn {turn}  first reply audio, \d+\.\d\d s after", line) for line in lines
        )
    heard = float(re.search(r"turn 1  interrupted after (\d+\.\d+) s heard", result.stdout).group(1))
    assert re.search(r"turn 2  reply done: ", result.stdout)
    summary = lines[lines.index("turn latencies (end of your turn decided -> first reply output):") + 1 :]
    assert re.fullmatch(r"  turn 1: \d+\.\d\d s \(interrupted after \d\.\d s\)", summary[0]), summary
    assert re.fullmatch(r"  turn 2: \d+\.\d\d s", summary[1]) and len(summary) == 2
    # one reply per answered turn; the interrupted one as far as it was played
    assert sorted(path.name for path in out.iterdir()) == ["reply_1.wav", "reply_2.wav"]
    first, rate = sf.read(out / "reply_1.wav")
    second, _ = sf.read(out / "reply_2.wav")
    assert rate == 24000 and abs(len(first) / rate - heard) <= 0.005
    assert len(second) > 0 and len(second) % 960 == 0  # whole: 960 samples per speech code


def test_live_without_a_microphone_package_says_what_to_install(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "sounddevice", None)  # not installed (or, like here, no PortAudio library)
    assert cli.main(["--live", "--model", "tiny"]) == 2
    stderr = capsys.readouterr().err
    assert "Loading" not in stderr and len(stderr.splitlines()) == 1, stderr
    assert 'pip install "transformers-fac[live]"' in stderr and "--input FILE" in stderr


@pytest.mark.parametrize(
    ("make", "message", "bad_recording"),
    [
        (lambda d: (d / "empty.wav").write_bytes(b"") or d / "empty.wav", r"empty\.wav is empty \(0 bytes\)", True),
        (lambda d: (d / "notes.wav").write_text("hi") and d / "notes.wav", r"could not decode .*notes\.wav", True),
        (
            lambda d: sf.write(d / "long.wav", np.full(301 * 8000, 0.1, np.float32), 8000) or d / "long.wav",
            r"long\.wav is 301\.0 s long, but the model hears at most 300 s per question",
            False,  # a long recording is fine for --live: its turns are cut by the engine
        ),
    ],
)
def test_bad_files_are_refused_before_the_model_loads(tmp_path, capsys, make, message, bad_recording):
    path = make(tmp_path)
    assert cli.main([str(AUDIO_FILES["en"]), str(path), "--model", "tiny", "-o", str(tmp_path / "r.wav")]) == 2
    stderr = capsys.readouterr().err
    assert "Loading" not in stderr and len(stderr.splitlines()) == 1 and re.search(message, stderr), stderr
    if bad_recording:
        assert cli.main(["--live", "--input", str(path), "--model", "tiny"]) == 2
        stderr = capsys.readouterr().err
        assert "Loading" not in stderr and re.search(message.split(" ")[0], stderr), stderr


def test_live_usage_errors(capsys):
    for argv, message in (
        (["--live", "--fast"], "--fast plays a recording"),
        (["--input", "x.wav"], "--input goes with --live"),
        ([str(AUDIO_FILES["en"]), "--live"], "--live takes no question files"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            cli.main(argv)
        assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_reply_text_is_printed_once(tiny_e2e_dir, tmp_path, capsys):
    argv = [str(AUDIO_FILES["en"]), "--model", str(tiny_e2e_dir), "-o", str(tmp_path / "r.wav")]
    assert cli.main([*argv, "--max-new-tokens", "6"]) == 0
    captured = capsys.readouterr()
    text = captured.out.strip()
    assert text and captured.out.count(text) == 1 and text not in captured.err
