"""Speech in, speech out on the tiny end-to-end checkpoint: pipeline, any-to-any, streaming audio, CLI."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import AUDIO_FILES, read_audio
from transformers import AutoProcessor, pipeline

from transformers_fac import S2M_SYSTEM_PROMPT, FunAudioChatConversation, stream_reply


@pytest.fixture(scope="module")
def speech_pipe(tiny_e2e_dir):
    return pipeline("speech-to-speech", model=str(tiny_e2e_dir))


@pytest.fixture(scope="module")
def processor(tiny_e2e_dir):
    return AutoProcessor.from_pretrained(tiny_e2e_dir)


def question_inputs(processor, name="long"):
    chat = FunAudioChatConversation(system_prompt=S2M_SYSTEM_PROMPT)
    chat.add_user_audio(AUDIO_FILES[name])
    return chat.model_inputs(processor)


def test_pipeline_speaks_960_samples_per_code(speech_pipe, processor):
    reply = speech_pipe(str(AUDIO_FILES["long"]), max_new_tokens=12)
    assert set(reply) == {"text", "audio", "sampling_rate"} and reply["text"]
    assert reply["sampling_rate"] == 24000 and reply["audio"].dtype == np.float32
    out = speech_pipe.model.generate(
        **question_inputs(processor), generation_mode="audio", max_new_tokens=12, return_dict_in_generate=True
    )
    codes = out.valid_speech_codes()[0]
    assert codes.numel() > 0 and len(reply["audio"]) == 960 * codes.numel()
    np.testing.assert_allclose(reply["audio"], out.audio[0].numpy(), atol=1e-6)


def test_pipeline_text_mode_and_two_turn_chat(speech_pipe):
    text_only = speech_pipe(str(AUDIO_FILES["en"]), generation_mode="text", max_new_tokens=6)
    assert set(text_only) == {"text"}
    chat = [
        {"role": "user", "content": [{"type": "audio", "path": str(AUDIO_FILES["en"])}]},
        {"role": "assistant", "content": text_only["text"]},
        {"role": "user", "content": [{"type": "audio", "audio": read_audio("zh")}]},
    ]
    second = speech_pipe(chat, max_new_tokens=8, voice="中文男")
    assert second["text"] and len(second["audio"]) % 960 == 0 and len(second["audio"]) > 0


def test_voices_change_the_audio(speech_pipe):
    female = speech_pipe(str(AUDIO_FILES["en"]), max_new_tokens=8, voice="中文女")
    male = speech_pipe(str(AUDIO_FILES["en"]), max_new_tokens=8, voice="中文男")
    assert female["text"] == male["text"] and female["audio"].shape == male["audio"].shape
    assert not np.allclose(female["audio"], male["audio"])


def test_unknown_voice_fails_before_generating(speech_pipe):
    with pytest.raises(ValueError, match="Unknown voice 'Alice'; valid voices: '中文女'"):
        speech_pipe(str(AUDIO_FILES["en"]), max_new_tokens=2, voice="Alice")


def test_the_pipeline_still_takes_speaker_with_a_future_warning(speech_pipe):
    """`speaker=` is the deprecated name of `voice=` until 0.2: same reply, a FutureWarning naming `voice=`."""
    male = speech_pipe(str(AUDIO_FILES["en"]), max_new_tokens=8, voice="中文男")
    with pytest.warns(FutureWarning, match=r"`speaker=` is deprecated .* use `voice=` instead"):
        alias = speech_pipe(str(AUDIO_FILES["en"]), max_new_tokens=8, speaker="中文男")
    assert alias["text"] == male["text"] and np.array_equal(alias["audio"], male["audio"])
    with pytest.raises(TypeError, match="give only `voice`"):
        speech_pipe(str(AUDIO_FILES["en"]), max_new_tokens=2, voice="中文男", speaker="中文女")


def test_any_to_any_pipeline_speaks_too(tiny_e2e_dir):
    pipe = pipeline("any-to-any", model=str(tiny_e2e_dir))
    chat = [
        {"role": "system", "content": S2M_SYSTEM_PROMPT},
        {"role": "user", "content": [{"type": "audio", "path": str(AUDIO_FILES["en"])}]},
    ]
    audio = pipe(text=chat, generation_mode="audio", max_new_tokens=6)
    waveform = audio[0]["generated_audio"] if isinstance(audio, list) else audio["generated_audio"]
    assert np.asarray(waveform).size > 0 and np.asarray(waveform).size % 960 == 0
    text = pipe(text=chat, generation_mode="text", max_new_tokens=4, return_full_text=False)
    assert isinstance(text[0]["generated_text"], str)


@pytest.mark.parametrize("exact", [True, False])
def test_streamed_audio_equals_decoding_the_final_codes(tiny_e2e_model, processor, exact):
    inputs = question_inputs(processor)
    chunks = list(stream_reply(tiny_e2e_model, processor, inputs, exact=exact, max_new_tokens=30))
    audio = np.concatenate([c.audio for c in chunks if c.audio is not None])
    text = "".join(c.text for c in chunks)
    out = tiny_e2e_model.generate(
        **inputs, generation_mode="audio", max_new_tokens=30, return_dict_in_generate=True, return_audio=False
    )
    codes = out.valid_speech_codes()[0]
    assert text == processor.decode(out.sequences[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert len(audio) == 960 * codes.numel()
    decoder = tiny_e2e_model.token2wav.stream_decoder(exact=exact)
    reference = torch.cat([decoder.push(codes.tolist()), decoder.finish()], dim=-1).reshape(-1).numpy()
    np.testing.assert_allclose(audio, reference, atol=1e-5)
    # Audio starts arriving while the model is still writing: text keeps coming after the first audio chunk.
    first_audio = next(i for i, c in enumerate(chunks) if c.audio is not None)
    assert any(c.text for c in chunks[first_audio + 1 :])


def test_stream_can_be_interrupted(tiny_e2e_model, processor):
    import threading

    stop = threading.Event()
    pieces = []
    for chunk in stream_reply(
        tiny_e2e_model, processor, question_inputs(processor), interrupt=stop, max_new_tokens=200
    ):
        pieces.append(chunk)
        if chunk.audio is not None:
            stop.set()
    steps = sum(1 for c in pieces if c.text)
    assert steps < 40  # stopped long before 200 steps


def run_cli(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "transformers_fac.cli", *map(str, args)], capture_output=True, text=True, cwd=cwd
    )


def test_readme_first_command_writes_a_reply_at_a_sane_level(tmp_path):
    """`fac-chat examples/question_en.wav --model tiny` (the README's first command, shorter): a playable reply in
    ./reply.wav, at a listenable level although the tiny decoder is random (no full-scale noise)."""
    question = Path(__file__).resolve().parents[1] / "examples" / "question_en.wav"
    result = run_cli(question, "--model", "tiny", "--max-new-tokens", 8, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    waveform, rate = sf.read(tmp_path / "reply.wav", dtype="float32")
    assert rate == 24000 and len(waveform) > 0 and len(waveform) % 960 == 0
    assert result.stdout.strip() and "Loading tiny" in result.stderr and "Wrote reply.wav (" in result.stderr
    rms_dbfs = 20 * np.log10(np.sqrt(np.mean(waveform.astype(np.float64) ** 2)))
    assert -30 < rms_dbfs < -10 and np.abs(waveform).max() < 0.99, (rms_dbfs, np.abs(waveform).max())


def test_cli_help_says_which_files_it_writes():
    from transformers_fac_cli.chat_arguments import build_parser

    text = build_parser().format_help()
    assert "default: reply.wav" in text and "-o r.wav writes\n  r_1.wav, r_2.wav, ... (never r.wav itself)" in text


def test_cli_multi_turn_and_text_only(tiny_e2e_dir, tmp_path):
    result = run_cli(
        AUDIO_FILES["en"], AUDIO_FILES["zh"], "-o", tmp_path / "r.wav", "--model", tiny_e2e_dir, "--max-new-tokens", 6
    )
    assert result.returncode == 0, result.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == ["r_1.wav", "r_2.wav"]
    written = [line.split(" (")[0] for line in result.stderr.splitlines() if line.startswith("Wrote ")]
    assert written == [f"Wrote {tmp_path / 'r_1.wav'}", f"Wrote {tmp_path / 'r_2.wav'}"]
    text = run_cli(AUDIO_FILES["en"], "--text-only", "--model", tiny_e2e_dir, "--max-new-tokens", 4, cwd=tmp_path)
    assert text.returncode == 0 and "Wrote" not in text.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == ["r_1.wav", "r_2.wav"]


def test_cli_interactive_mode(tiny_e2e_dir, tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "transformers_fac.cli",
            str(AUDIO_FILES["en"]),  # a first turn from the command line, then the interactive ones
            "--interactive",
            "-o",
            str(tmp_path / "i.wav"),
            "--model",
            str(tiny_e2e_dir),
            "--max-new-tokens",
            "4",
        ],
        input=f"{AUDIO_FILES['en']}\nnot-there.wav\n/reset\n{AUDIO_FILES['zh']}\n\n",
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == ["i_1.wav", "i_2.wav", "i_3.wav"]  # numbered on
    assert "error: no such audio file: not-there.wav" in result.stderr and "New conversation." in result.stderr
    assert "audio>" not in result.stdout and result.stderr.count("audio> ") == 5  # the prompts go to stderr


@pytest.mark.parametrize(
    ("make_input", "extra", "message"),
    [
        (lambda d: d / "missing.wav", [], "no such audio file"),
        (lambda d: (d / "notes.wav").write_text("hello") and d / "notes.wav", [], "notes.wav"),
        (lambda d: sf.write(d / "quiet.wav", np.zeros(16000), 16000) or d / "quiet.wav", [], "silence|silent"),
        (lambda d: AUDIO_FILES["en"], ["--voice", "Alice"], "Unknown voice 'Alice'"),
        (lambda d: AUDIO_FILES["en"], ["--text-only", "--voice", "中文女"], "text-only"),
        (lambda d: AUDIO_FILES["en"], ["--text-only", "--speaker", "中文女"], "text-only"),  # the deprecated alias
    ],
)
def test_cli_bad_inputs_give_one_line_errors(tiny_e2e_dir, tmp_path, make_input, extra, message):
    import re

    result = run_cli(make_input(tmp_path), "--model", tiny_e2e_dir, "-o", tmp_path / "x.wav", *extra)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and re.search(message, errors[0]), result.stderr
