"""`fac-chat`'s friendly edges: `--help` and usage errors answer without importing torch or transformers, a missing
extra or an unreachable Hub is one line before anything loads, and stdout holds only what the help says."""

import os
import socket
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import numpy as np
import pytest
from conftest import AUDIO_FILES

ROOT = Path(__file__).resolve().parents[1]


def run_python(code: str, *args, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


LIGHT = """
    import sys
    from transformers_fac_cli import fac_chat
    try:
        fac_chat(sys.argv[1:])
    except SystemExit as exit:
        heavy = sorted(name for name in ("torch", "transformers", "transformers_fac") if name in sys.modules)
        print("HEAVY", heavy, "STATUS", exit.code, file=sys.stderr)
"""


@pytest.mark.parametrize(
    ("argv", "status", "says"),
    [
        (["--help"], 0, "output files:"),
        (["--bogus"], 2, "unrecognized arguments: --bogus"),
        ([], 2, "give at least one audio file"),
        (["q.wav", "--save-voice", "x"], 2, "--save-voice saves the voice given with --voice"),
        (["--live", "--fast"], 2, "--fast plays a recording"),
    ],
)
def test_help_and_usage_errors_import_nothing_heavy(argv, status, says):
    result = run_python(LIGHT, *argv)
    assert f"HEAVY [] STATUS {status}" in result.stderr, result.stderr
    assert says in result.stdout + result.stderr


def test_speaker_is_the_deprecated_name_of_voice(capsys):
    """`--voice` takes a stock name, a clip or a saved voice; `--speaker` (until 0.2) becomes `--voice`, with a note."""
    from transformers_fac_cli.chat_arguments import parse_chat_arguments

    assert parse_chat_arguments(["q.wav", "--voice", "中文男"]).voice == "中文男"
    assert "deprecated" not in capsys.readouterr().err
    assert parse_chat_arguments(["q.wav", "--speaker", "中文男"]).voice == "中文男"
    assert "--speaker is deprecated and will be removed in 0.2; use --voice" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_chat_arguments(["q.wav", "--voice", "voices/missing"])  # a path, not a name: checked at once
    assert "--voice: no such file or directory: voices/missing" in capsys.readouterr().err


def test_the_console_script_is_the_light_entry_point():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["fac-chat"] == "transformers_fac_cli:fac_chat"


BLOCKED = """
    import sys
    for name in filter(None, sys.argv[1].split(",")):
        sys.modules[name] = None  # what a missing package looks like to `import`
    from transformers_fac import cli
    status = cli.main(sys.argv[2:])
    print("LOADED" if "AutoModelForMultimodalLM" in dir(sys.modules.get("transformers")) and
          any(m.startswith("transformers_fac.modeling") for m in sys.modules) else "", file=sys.stderr)
    sys.exit(status)
"""


def one_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "Loading" not in result.stderr, result.stderr  # nothing loaded
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def test_cloning_without_the_voice_extra_names_the_installs_before_loading(tmp_path):
    result = run_python(
        BLOCKED,
        "s3tokenizer",
        AUDIO_FILES["en"],
        "--model",
        "tiny",
        "--voice",
        AUDIO_FILES["zh"],
        "-o",
        tmp_path / "r.wav",
    )
    error = one_error(result)
    assert 'pip install "transformers-fac[voice]", then pip install --no-deps s3tokenizer==0.3.0' in error, error
    assert "s3tokenizer" in error.split("needs ")[1] and "assistant audio" not in error


def test_live_without_silero_vad_names_the_live_extra_before_loading(tmp_path):
    recording = tmp_path / "talk.wav"
    import soundfile as sf

    sf.write(recording, 0.1 * np.sin(np.arange(16000) / 5.0), 16000)
    result = run_python(BLOCKED, "silero_vad", "--live", "--input", recording, "--model", "tiny")
    assert 'silero-vad, which is not installed: pip install "transformers-fac[live]"' in one_error(result)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # nothing listens there once the probe is closed


@pytest.mark.parametrize(
    ("env", "reason"),
    [
        ({"HF_ENDPOINT": "http://127.0.0.1:{port}"}, "the Hub cannot be reached"),
        ({"HF_HUB_OFFLINE": "1"}, "offline mode is on"),
    ],
)
def test_an_unreachable_hub_fails_at_once_with_what_to_do(tmp_path, env, reason):
    env = {key: value.format(port=closed_port()) for key, value in env.items()}
    env["HF_HUB_CACHE"] = str(tmp_path / "empty-cache")
    result = run_python(
        BLOCKED, "", AUDIO_FILES["en"], "--model", "someone/no-such-model", "-o", tmp_path / "r.wav", env=env
    )
    error = one_error(result)
    assert f"cannot load the model someone/no-such-model: {reason}" in error and "--model tiny" in error, error
    assert "Retrying" not in result.stderr


def test_a_local_model_whose_decoder_is_unreachable_fails_at_once(tiny_e2e_dir, tmp_path):
    code = """
        import sys
        import transformers_fac
        from transformers import AutoModelForMultimodalLM
        try:
            AutoModelForMultimodalLM.from_pretrained(sys.argv[1], token2wav="FunAudioLLM/Fun-CosyVoice3-0.5B-2512")
        except OSError as error:
            print("ERROR", type(error).__name__, error, file=sys.stderr)
    """
    env = {"HF_ENDPOINT": f"http://127.0.0.1:{closed_port()}", "HF_HUB_CACHE": str(tmp_path / "empty-cache")}
    result = run_python(code, tiny_e2e_dir, env=env)
    line = next(line for line in result.stderr.splitlines() if line.startswith("ERROR"))
    assert line.startswith("ERROR HubUnavailable cannot load the speech decoder FunAudioLLM/Fun-CosyVoice3-0.5B-2512")
    assert "token2wav=DIR" in line and "Retrying" not in result.stderr


def test_a_turn_continued_by_the_next_is_said_on_both_outputs(tmp_path, capsys):
    from transformers_fac.cli_live import EventPrinter
    from transformers_fac.live import LiveEvent

    printer = EventPrinter(tmp_path)
    printer.show(LiveEvent("reply_started", time=1.0, turn=1))
    printer.show(LiveEvent("interrupted", time=1.5, turn=1, text="", heard_s=0.0))
    printer.show(LiveEvent("reply_started", time=3.0, turn=1))
    printer.summary()
    out, err = capsys.readouterr()
    assert "turn 1  nothing of the reply was heard: the next speech continues this turn" in out
    assert "note: 1 turn(s) were continued by the next one" in err and "--fast" in err


def test_quantize_choices_are_the_package_names():
    from transformers_fac.quantization import QUANTIZATIONS
    from transformers_fac_cli.chat_arguments import QUANTIZATIONS as CHOICES

    assert CHOICES == QUANTIZATIONS
