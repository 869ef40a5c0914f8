"""Voices: the voice object and its files, cloning with the stand-in CAM++ and speech tokenizer, clip rules, speaker
resolution in the decoder, lazy frontend downloads and the missing-extra error."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import AUDIO_FILES

from tests.token2wav_testing import TINY_COSYVOICE, make_speaker_file, single_thread  # noqa: F401
from transformers_fac import FunAudioChatToken2Wav, FunAudioChatVoice
from transformers_fac.audio_io import AudioInputError
from transformers_fac.voice import VoiceFrontend, is_voice_path, speaker_features, speaker_similarity
from transformers_fac.voice.stand_ins import write_voice_stand_ins

CLIP_EN, CLIP_ZH = str(AUDIO_FILES["en"]), str(AUDIO_FILES["zh"])


@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("stand-ins")
    write_voice_stand_ins(folder)
    return folder


@pytest.fixture(scope="module")
def decoder(stand_ins):
    """The tiny decoder with the stand-in cloning models and two stock-named random voices (no download)."""
    model = FunAudioChatToken2Wav.from_cosyvoice(TINY_COSYVOICE)
    model.voice_frontend = VoiceFrontend.from_source(stand_ins)
    model.load_voices(make_speaker_file(stand_ins / "spk2info.pt"), check_hash=False)
    return model


@pytest.fixture(scope="module")
def voice_en(decoder):
    return decoder.clone_voice(CLIP_EN, name="en")


def assert_same_voice(first: FunAudioChatVoice, second: FunAudioChatVoice) -> None:
    for name in ("speaker_embedding", "prompt_codes", "prompt_mel"):
        assert torch.equal(getattr(first, name), getattr(second, name)), name
    assert (first.name, first.source) == (second.name, second.source)


def test_stand_in_campplus_has_the_real_signature(stand_ins):
    import onnxruntime

    session = onnxruntime.InferenceSession(str(stand_ins / "campplus.onnx"), providers=["CPUExecutionProvider"])
    (feats,), (embs,) = session.get_inputs(), session.get_outputs()
    assert feats.type == embs.type == "tensor(float)" and feats.shape[0] == 1 and feats.shape[2] == 80
    assert embs.shape == [1, 192]
    out = session.run(None, {feats.name: np.zeros((1, 37, 80), np.float32)})[0]
    assert out.shape == (1, 192) and out.dtype == np.float32


def test_clone_save_load_round_trip(decoder, voice_en, tmp_path):
    voice = voice_en
    seconds = sf.info(CLIP_EN).duration
    assert voice.speaker_embedding.shape == (1, 192) and voice.has_prompt
    assert voice.prompt_codes.shape == (1, int(seconds * 25)) and voice.prompt_mel.shape == (
        1,
        2 * int(seconds * 25),
        80,
    )
    assert voice.prompt_codes.dtype == torch.long and (voice.source, voice.name) == ("question_en.wav", "en")
    for path in (tmp_path / "voice_dir", tmp_path / "voice.safetensors"):
        written = voice.save(path)
        assert is_voice_path(written)
        assert_same_voice(FunAudioChatVoice.load(written), voice)
    info = json.loads((tmp_path / "voice_dir" / "voice.json").read_text())
    assert info["format"] == "transformers_fac.voice" and info["prompt_codes"] == voice.prompt_codes.shape[1]
    # the same clip twice gives the same voice; another clip another vector and other codes
    assert_same_voice(decoder.clone_voice(CLIP_EN, name="en"), voice)
    other = decoder.clone_voice(CLIP_ZH)
    assert not torch.equal(other.speaker_embedding, voice.speaker_embedding)
    assert speaker_similarity(voice, other) < 0.9999 and speaker_similarity(voice, voice) == pytest.approx(1.0)
    assert decoder.speaker_similarity(CLIP_EN, voice) == pytest.approx(1.0, abs=1e-6)


def test_every_kind_of_voice_is_accepted_by_the_decoder(decoder, voice_en, tmp_path):
    codes = torch.randint(0, 6561, (1, 30), generator=torch.Generator().manual_seed(0))
    reference = decoder.decode(codes, voice=voice_en)
    voice_en.save(tmp_path / "en")
    voice_en.save(tmp_path / "en.safetensors")
    for path in (tmp_path / "en", str(tmp_path / "en.safetensors")):
        assert torch.equal(decoder.decode(codes, voice=path), reference)
    vector_only = decoder.decode(codes, voice=voice_en.speaker_embedding[0])
    assert vector_only.shape == reference.shape and not torch.equal(vector_only, reference)  # the prompt matters
    with pytest.raises(ValueError, match="clone it first"):
        decoder.decode(codes, voice=CLIP_EN)
    with pytest.raises(FileNotFoundError, match="not found"):
        decoder.decode(codes, voice=str(tmp_path / "missing"))
    assert decoder.voice_frontend is not None and decoder.default_voice is None
    decoder.set_default_voice(tmp_path / "en")
    try:
        assert torch.equal(decoder.decode(codes), reference)
        assert (
            decoder.voice_names == ["en", "中文女", "中文男"] and decoder.resolve_voice("en") is decoder.default_voice
        )
    finally:
        decoder.set_default_voice(None)
    assert decoder.voice_names == ["中文女", "中文男"]


def test_voice_object_rules():
    codes, mel = torch.arange(10), torch.zeros(1, 17, 80)
    voice = FunAudioChatVoice(torch.ones(1, 192), codes, mel)
    assert voice.prompt_codes.shape == (1, 8) and voice.prompt_mel.shape == (1, 16, 80)
    assert FunAudioChatVoice(torch.ones(192), codes[:3], mel).prompt_mel.shape == (1, 6, 80)
    empty = FunAudioChatVoice(torch.ones(192))
    assert not empty.has_prompt and empty.prompt_codes.shape == (1, 0) and empty.prompt_mel.shape == (1, 0, 80)
    with pytest.raises(ValueError, match="both prompt_codes and prompt_mel"):
        FunAudioChatVoice(torch.ones(192), prompt_codes=codes)
    with pytest.raises(ValueError, match="NaN"):
        FunAudioChatVoice(torch.ones(192), codes, torch.full((17, 80), float("nan")))
    with pytest.raises(ValueError, match=r"\[D\] or \[1, D\]"):
        FunAudioChatVoice(torch.ones(2, 192))
    with pytest.raises(ValueError, match=">= 0"):
        FunAudioChatVoice(torch.ones(192), [-1, 2], mel)


def test_not_a_voice_file(tmp_path):
    from safetensors.torch import save_file

    save_file({"weight": torch.zeros(3)}, tmp_path / "weights.safetensors")
    with pytest.raises(ValueError, match="not a voice file"):
        FunAudioChatVoice.load(tmp_path / "weights.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match="not a voice file"):
        FunAudioChatVoice.load(tmp_path / "junk.safetensors")
    with pytest.raises(FileNotFoundError, match="voice.safetensors"):
        FunAudioChatVoice.load(tmp_path)


def test_clip_rules_give_clear_errors(decoder, tmp_path):
    rng = np.random.default_rng(0)
    speech = 0.1 * rng.standard_normal(16000 * 2).astype(np.float32)
    with pytest.raises(ValueError, match="shorter than one fbank frame"):
        speaker_features(speech[:300])
    cases = [
        (speech[:8000], "too short"),  # 0.5 s
        (np.zeros(16000 * 2, np.float32), "silence|silent"),
        (1e-5 * speech, "silent"),  # -80 dBFS
        (np.where(np.arange(speech.size) == 5, np.nan, speech).astype(np.float32), "NaN"),
        (np.tile(speech, 20), "too long.*trim=True"),  # 40 s
    ]
    for waveform, message in cases:
        with pytest.raises(AudioInputError, match=message):
            decoder.clone_voice(waveform)
    not_audio = tmp_path / "notes.wav"
    not_audio.write_text("this is not audio")
    with pytest.raises(AudioInputError, match="not an audio file|could not decode"):
        decoder.clone_voice(str(not_audio))
    trimmed = decoder.clone_voice(np.tile(speech, 20), trim=True)  # 40 s cut to 30 s
    assert trimmed.prompt_codes.shape == (1, 750)


def test_missing_extra_gives_one_clear_error(monkeypatch, stand_ins):
    monkeypatch.setitem(sys.modules, "kaldi_native_fbank", None)
    with pytest.raises(ImportError, match=r"kaldi-native-fbank.*transformers-fac\[voice\]"):
        speaker_features(np.ones(16000, np.float32))
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    frontend = VoiceFrontend.from_source(stand_ins)
    with pytest.raises(ImportError, match=r"onnxruntime.*transformers-fac\[voice\]"):
        frontend.session  # noqa: B018


def test_hub_decoder_fetches_cloning_files_on_first_use_only(monkeypatch, tmp_path, stand_ins):
    """A decoder loaded from a hub id downloads campplus.onnx and the speech tokenizer when cloning first runs."""
    import huggingface_hub
    from huggingface_hub.errors import EntryNotFoundError

    repo = {path.name: path for folder in (TINY_COSYVOICE, stand_ins) for path in folder.iterdir()}
    calls = []

    def fake_download(repo_id, filename, **kwargs):
        calls.append((repo_id, filename))
        if filename not in repo:
            raise EntryNotFoundError(f"{filename} is not in {repo_id}")
        return str(repo[filename])

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    model = FunAudioChatToken2Wav.from_cosyvoice("FunAudioLLM/Fun-CosyVoice3-0.5B-2512")
    assert [name for _, name in calls] == ["cosyvoice3.yaml", "flow.pt", "hift.pt"]
    voice = model.clone_voice(CLIP_EN)
    fetched = [name for _, name in calls[3:]]
    assert fetched == ["campplus.onnx", "speech_tokenizer_v3.onnx", "speech_tokenizer_v3.safetensors"]
    assert {repo_id for repo_id, _ in calls} == {"FunAudioLLM/Fun-CosyVoice3-0.5B-2512"} and voice.has_prompt
