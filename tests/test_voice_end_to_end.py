"""Custom voices on the tiny end-to-end checkpoint (stand-in CAM++ and speech tokenizer): generate, streams, the CLI,
a voice built from a dataset and saved next to an adapter, picked up by `pipeline(model=adapter_dir)`."""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import AUDIO_FILES, save_random_adapter, spoken_example
from transformers import AutoProcessor, pipeline

from tests.token2wav_testing import single_thread  # noqa: F401
from transformers_fac import S2M_SYSTEM_PROMPT, FunAudioChatConversation, FunAudioChatVoice, stream_reply
from transformers_fac.token2wav_loading import VOICE_DIR


@pytest.fixture(scope="module")
def decoder(tiny_e2e_model):
    return tiny_e2e_model.token2wav


@pytest.fixture(scope="module")
def voices(decoder):
    return decoder.clone_voice(str(AUDIO_FILES["en"]), name="en"), decoder.clone_voice(
        str(AUDIO_FILES["zh"]), name="zh"
    )


@pytest.fixture(scope="module")
def processor(tiny_e2e_dir):
    return AutoProcessor.from_pretrained(tiny_e2e_dir)


@pytest.fixture(scope="module")
def inputs(processor):
    chat = FunAudioChatConversation(system_prompt=S2M_SYSTEM_PROMPT)
    chat.add_user_audio(AUDIO_FILES["en"])
    return chat.model_inputs(processor)


def test_generate_speaks_in_a_cloned_voice(tiny_e2e_model, decoder, voices, inputs, tmp_path):
    english, chinese = voices
    out = tiny_e2e_model.generate(
        **inputs, generation_mode="audio", voice=english, max_new_tokens=8, return_dict_in_generate=True
    )
    codes = out.valid_speech_codes()[0]
    assert torch.equal(out.audio[0], decoder.decode(codes, voice=english)[0])
    # the same codes in two cloned voices differ; a saved voice's path speaks like the voice
    other = decoder.decode(codes, voice=chinese)[0]
    assert other.shape == out.audio[0].shape and not torch.allclose(other, out.audio[0], atol=1e-3)
    path = english.save(tmp_path / "en")
    by_path = tiny_e2e_model.generate(
        **inputs, generation_mode="audio", voice=str(path), max_new_tokens=8, return_dict_in_generate=True
    )
    assert torch.equal(by_path.audio[0], out.audio[0])


def test_exact_stream_with_a_voice_equals_the_web_demo_reference(decoder, voices):
    """The web-demo pattern written out: every 15 codes (+3 look-ahead) the flow re-runs prompt + all codes so far
    (finalize=False) keeping the new frames, the vocoder re-runs the whole mel and only new samples are emitted."""
    voice = voices[1]
    codes = torch.randint(0, 6561, (1, 50), generator=torch.Generator().manual_seed(3))
    stream = decoder.stream_decoder(voice, exact=True)
    streamed = torch.cat([stream.push(codes[:, :20]), stream.push(codes[:, 20:]), stream.finish()], dim=1)
    mel, offset, emitted, pieces = torch.zeros(1, 80, 0), 0, 0, []
    while codes.shape[1] >= offset + 18:
        mel = torch.cat(
            [mel, decoder.token2mel(codes[:, : offset + 18], voice, finalize=False)[..., 2 * offset :]], -1
        )
        pieces.append(decoder.mel2wav(mel, finalize=False)[:, emitted:])
        emitted, offset = emitted + pieces[-1].shape[1], offset + 15
    mel = torch.cat([mel, decoder.token2mel(codes, voice)[..., 2 * offset :]], -1)
    pieces.append(decoder.mel2wav(mel)[:, emitted:])
    assert torch.equal(streamed, torch.cat(pieces, dim=1)) and streamed.shape == (1, 960 * 50)


def test_stream_reply_in_a_cloned_voice(tiny_e2e_model, decoder, voices, processor, inputs):
    voice = voices[0]
    chunks = list(stream_reply(tiny_e2e_model, processor, inputs, voice=voice, max_new_tokens=16))
    audio = np.concatenate([c.audio for c in chunks if c.audio is not None])
    out = tiny_e2e_model.generate(
        **inputs, generation_mode="audio", max_new_tokens=16, return_dict_in_generate=True, return_audio=False
    )
    stream = decoder.stream_decoder(voice)
    reference = torch.cat([stream.push(out.valid_speech_codes()[0]), stream.finish()], dim=-1).reshape(-1).numpy()
    np.testing.assert_allclose(audio, reference, atol=1e-5)


def test_cli_replies_in_the_voice_of_a_clip(tiny_e2e_dir, decoder, tmp_path):
    """`fac-chat --model tiny --voice clip.wav --save-voice DIR` (the tiny checkpoint taken from the cache)."""
    from transformers_fac.tiny import TINY_VERSION

    cache = tmp_path / "hub"
    (cache / "transformers_fac").mkdir(parents=True)
    os.symlink(tiny_e2e_dir, cache / "transformers_fac" / f"tiny-fac-v{TINY_VERSION}-seed0")
    command = [sys.executable, "-m", "transformers_fac.cli", str(AUDIO_FILES["en"]), "--model", "tiny"]
    options = ["--voice", str(AUDIO_FILES["zh"]), "--save-voice", str(tmp_path / "me"), "--max-new-tokens", "8"]
    result = subprocess.run(
        [*command, *options, "-o", str(tmp_path / "reply.wav")],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr
    waveform, rate = sf.read(tmp_path / "reply.wav")
    assert rate == 24000 and len(waveform) > 0 and len(waveform) % 960 == 0
    assert "Cloning the voice" in result.stderr and "Saved the voice" in result.stderr
    saved, cloned = FunAudioChatVoice.load(tmp_path / "me"), decoder.clone_voice(str(AUDIO_FILES["zh"]))
    assert torch.equal(saved.speaker_embedding, cloned.speaker_embedding) and saved.name == "question_zh"
    assert torch.equal(saved.prompt_codes, cloned.prompt_codes)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--save-voice", "x"], "--save-voice saves the voice given with --voice"),
        (["--voice", "missing.wav"], "no such file or directory"),
        (["--voice", str(AUDIO_FILES["zh"]), "--speaker", "中文男"], "either --voice or --speaker"),
        (["--voice", str(AUDIO_FILES["zh"]), "--text-only"], "text-only"),
    ],
)
def test_cli_voice_options_are_checked(options, message, capsys):
    from transformers_fac import cli

    with pytest.raises(SystemExit) as exit_info:
        cli.main([str(AUDIO_FILES["en"]), *options])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_dataset_voice_saved_with_an_adapter_is_the_pipeline_default(tiny_e2e_dir, tiny_e2e_model, tmp_path):
    """The custom_voice_lora recipe's last step on the smoke data, then `pipeline(model=adapter_dir)`."""
    from transformers import AutoModelForMultimodalLM

    from finetune.build_smoke_data import build_smoke_dataset
    from transformers_fac.training.recipe import save_recipe_voice
    from transformers_fac.voice import load_clip, speech_ratio

    data = tmp_path / "data"
    rows = build_smoke_dataset(data, rows=4, max_answer_seconds=6.0)
    adapter = tmp_path / "adapter"
    base = save_random_adapter(tiny_e2e_dir, adapter)
    recipe = {
        "data": {"load_from_disk": str(data / "dataset"), "prepare": {"assistant_audio_column": "answer_audio"}},
        "voice": {"name": "smoke speaker", "min_seconds": 2, "max_seconds": 5},
    }
    path = save_recipe_voice(recipe, adapter, base)
    assert path == adapter / VOICE_DIR
    voice = FunAudioChatVoice.load(path)
    # speaker vector: the normalised mean of the clips' normalised vectors; prompt: the 2-5 s clip with most speech
    frontend = base.token2wav.voice_frontend
    clips = [load_clip(row["answer_audio"])[0] for row in rows]
    vectors = torch.cat([torch.nn.functional.normalize(frontend.speaker_vector_16k(c), dim=1) for c in clips])
    torch.testing.assert_close(voice.speaker_embedding, torch.nn.functional.normalize(vectors.mean(0, keepdim=True)))
    in_range = [(speech_ratio(c), len(c), i) for i, c in enumerate(clips) if 2 <= len(c) / 16000 <= 5]
    best = max(in_range)[2]
    assert f"prompt from row {best}" in voice.source and voice.name == "smoke speaker"
    assert abs(voice.prompt_codes.shape[1] - len(clips[best]) / 640) <= 1  # 25 codes per second of the best clip

    pipe = pipeline("speech-to-speech", model=str(adapter))
    default = pipe.model.token2wav.default_voice
    assert torch.equal(default.prompt_codes, voice.prompt_codes) and default.name == "smoke speaker"
    question, options = str(AUDIO_FILES["en"]), {"max_new_tokens": 6}
    reply = pipe(question, **options)
    np.testing.assert_array_equal(reply["audio"], pipe(question, voice=voice, **options)["audio"])
    assert not np.allclose(reply["audio"], pipe(question, voice="中文女", **options)["audio"], atol=1e-3)
    shutil.rmtree(adapter / VOICE_DIR)
    assert AutoModelForMultimodalLM.from_pretrained(adapter).token2wav.default_voice is None


def test_evaluation_reports_speaker_similarity(tiny_e2e_model, decoder, voices, processor):
    from transformers_fac.training import FunAudioChatDataCollator, evaluate_model

    example = spoken_example()
    english, chinese = voices
    collator = FunAudioChatDataCollator(processor)
    result = evaluate_model(
        tiny_e2e_model, collator, [example], max_new_tokens=8, voice=english, reference_voice=chinese
    )
    reply = tiny_e2e_model.generate(
        **collator.prompt_inputs([example]),
        generation_mode="audio",
        voice=english,
        max_new_tokens=8,
        do_sample=False,
        return_dict_in_generate=True,
    )
    expected = decoder.speaker_similarity((reply.audio[0].numpy(), 24000), chinese)
    assert -1 <= result["speaker_similarity"] <= 1 and result["speaker_similarity"] == pytest.approx(expected)
