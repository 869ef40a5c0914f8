"""The native decoder against the official CosyVoice3 modules (golden outputs recorded on a tiny random checkpoint)."""

import pytest
import torch
from safetensors.torch import load_file

from tests.token2wav_testing import (  # noqa: F401
    GOLDEN,
    TINY_COSYVOICE,
    check_golden_stream,
    golden,
    golden_model,
    single_thread,
)
from transformers_fac.token2wav import FunAudioChatToken2Wav
from transformers_fac.token2wav.cosyvoice_loading import normalize_hift_state_dict, save_cosyvoice_dir

MEL_ATOL, WAV_ATOL = 1e-4, 1e-3


@pytest.fixture(scope="module")
def data():
    return golden()


@pytest.fixture(scope="module")
def model():
    return golden_model()


def test_loads_strictly_with_yaml_sizes(model):
    flow = torch.load(TINY_COSYVOICE / "flow.pt", weights_only=True)
    hift = torch.load(TINY_COSYVOICE / "hift.pt", weights_only=True)
    assert set(model.flow.state_dict()) == set(flow)
    assert set(model.hift.state_dict()) == set(hift)
    for key, value in flow.items():
        assert torch.equal(model.flow.state_dict()[key], value), key
    config = model.config
    assert (config.dit_dim, config.dit_depth, config.dit_heads, config.dit_head_dim) == (64, 2, 4, 16)
    assert (config.pre_lookahead_channels, config.hift_base_channels, config.f0_cond_channels) == (64, 32, 32)
    assert config.static_chunk_size == 50


def test_default_flow_noise_is_seed0_randn(data):
    fresh = FunAudioChatToken2Wav.from_cosyvoice(TINY_COSYVOICE)
    assert torch.equal(fresh.noise.flow(0, 400), data["ref.flow_rand_noise_prefix"])


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("flow_mel_final", {}),
        ("flow_mel_lookahead", {"finalize": False}),
        ("flow_mel_chunk_causal", {"finalize": False, "chunk_causal": True}),
    ],
)
def test_flow(model, data, name, kwargs):
    mel = model.token2mel(data["in.tokens"], data["in.speaker_embedding"], **kwargs)
    expected = data[f"out.{name}"]
    assert mel.shape == expected.shape
    torch.testing.assert_close(mel, expected, atol=MEL_ATOL, rtol=0)


def test_hift(model, data):
    mel = data["out.flow_mel_final"]
    torch.testing.assert_close(model.mel2wav(mel), data["out.hift_wav_final"], atol=WAV_ATOL, rtol=0)
    partial = model.mel2wav(mel, finalize=False)
    assert partial.shape == data["out.hift_wav_partial"].shape
    torch.testing.assert_close(partial, data["out.hift_wav_partial"], atol=WAV_ATOL, rtol=0)
    torch.testing.assert_close(model.predict_f0(mel), data["out.hift_f0"], rtol=1e-5, atol=0)


@pytest.mark.parametrize("split", [[37], [1] * 37, [5] * 7 + [2], [18, 15, 4], [17, 1, 14, 1, 4]])
def test_exact_stream_matches_web_demo_pattern(model, data, split):
    check_golden_stream(model, data["in.speaker_embedding"], data, split, atol=WAV_ATOL)


def test_both_weight_norm_styles_load_to_identical_outputs(tmp_path, data):
    """The golden tiny weights given as `weight_g`/`weight_v` with a `generator.` prefix decode identically."""
    tiny = load_file(GOLDEN / "t2w-tiny.safetensors")
    reference = FunAudioChatToken2Wav.from_cosyvoice(TINY_COSYVOICE)
    hift = {k[len("hift.") :]: v for k, v in tiny.items() if k.startswith("hift.")}
    assert normalize_hift_state_dict(hift).keys() == reference.hift.state_dict().keys()
    old_style = save_cosyvoice_dir(reference, tmp_path / "old", weight_norm_style="weight_g", generator_prefix=True)
    keys = torch.load(old_style / "hift.pt", weights_only=True).keys()
    assert any(k.endswith(".weight_g") for k in keys) and all(k.startswith("generator.") for k in keys)
    assert not any("parametrizations" in k for k in keys)
    other = FunAudioChatToken2Wav.from_cosyvoice(old_style)
    codes, voice = data["in.tokens"], data["in.speaker_embedding"]
    assert torch.equal(other.decode(codes, voice=voice), reference.decode(codes, voice=voice))
