"""Voice prompts against the reference (CosyVoice3 zero-shot path on the tiny golden weights, with the t2w golden noise)
and the CAM++ input features against torchaudio's Kaldi fbank."""

import pytest
import torch
from safetensors.torch import load_file

from tests.token2wav_testing import GOLDEN, check_golden_stream, golden_model, single_thread  # noqa: F401
from transformers_fac.voice import FunAudioChatVoice, prompt_mel, speaker_features

MEL_ATOL, WAV_ATOL = 1e-4, 1e-4


@pytest.fixture(scope="module")
def data():
    return load_file(GOLDEN / "voice" / "voice-golden.safetensors")


@pytest.fixture(scope="module")
def model():
    return golden_model()


@pytest.fixture(scope="module")
def voice(data):
    return FunAudioChatVoice(
        data["in.speaker_embedding"], data["in.prompt_tokens_full"], prompt_mel(data["in.prompt_wav_24k"]), name="zh"
    )


def test_prompt_mel_and_alignment(data, voice):
    mel = prompt_mel(data["in.prompt_wav_24k"])
    assert mel.shape == data["out.prompt_mel_full"].shape == (1, 292, 80)
    torch.testing.assert_close(mel, data["out.prompt_mel_full"], atol=MEL_ATOL, rtol=1e-4)
    # L = min(292 // 2, 80) = 80 codes and 160 frames
    assert torch.equal(voice.prompt_codes, data["out.prompt_tokens"])
    torch.testing.assert_close(voice.prompt_mel, data["out.prompt_feat"], atol=MEL_ATOL, rtol=1e-4)
    assert torch.equal(voice.speaker_embedding, data["in.speaker_embedding"])
    # the golden stored tensors align the same way, and a short mel cuts the codes instead
    stored = FunAudioChatVoice(
        data["in.speaker_embedding"], data["in.prompt_tokens_full"], data["out.prompt_mel_full"]
    )
    assert torch.equal(stored.prompt_mel, data["out.prompt_feat"])
    short = FunAudioChatVoice(
        data["in.speaker_embedding"], data["in.prompt_tokens_full"], data["out.prompt_feat"][:, :51]
    )
    assert short.prompt_codes.shape == (1, 25) and short.prompt_mel.shape == (1, 50, 80)


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("flow_mel_final", {}),
        ("flow_mel_lookahead", {"finalize": False}),
        ("flow_mel_chunk_causal", {"finalize": False, "chunk_causal": True}),
    ],
)
def test_flow_with_prompt(model, data, voice, name, kwargs):
    mel = model.token2mel(data["in.tokens"], voice, **kwargs)
    expected = data[f"out.{name}"]
    assert mel.shape == expected.shape
    torch.testing.assert_close(mel, expected, atol=MEL_ATOL, rtol=1e-4)


def test_hift_and_decode_with_prompt(model, data, voice):
    torch.testing.assert_close(
        model.mel2wav(data["out.flow_mel_final"]), data["out.hift_wav_final"], atol=WAV_ATOL, rtol=0
    )
    # end to end the vocoder turns the flow's 1e-6 mel differences into up to ~2e-4 (random weights, f0 phase)
    decoded = model.decode(data["in.tokens"], voice=voice)
    torch.testing.assert_close(decoded, data["out.hift_wav_final"], atol=1e-3, rtol=0)


@pytest.mark.parametrize("split", [[37], [1] * 37, [18, 15, 4]])
def test_exact_stream_with_prompt_matches_reference(model, data, voice, split):
    check_golden_stream(model, voice, data, split, atol=WAV_ATOL)


@pytest.mark.parametrize("name", ["question_en", "question_zh"])
def test_fbank_matches_kaldi_reference(name):
    data = load_file(GOLDEN / "voice" / "fbank-golden.safetensors")
    features = speaker_features(data[f"{name}.wave"])
    assert features.shape == data[f"{name}.fbank_norm"].shape
    torch.testing.assert_close(features, data[f"{name}.fbank_norm"], atol=1e-3, rtol=0)
