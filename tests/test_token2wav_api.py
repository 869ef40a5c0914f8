"""Public API of the decoder: length laws, offline segmentation, input errors (speaker files: test_token2wav_speakers)."""

import pytest
import torch

from tests.token2wav_testing import TINY_COSYVOICE, make_speaker_file, single_thread  # noqa: F401
from transformers_fac.token2wav import FunAudioChatToken2Wav


@pytest.fixture(scope="module")
def model():
    return FunAudioChatToken2Wav.from_cosyvoice(TINY_COSYVOICE)


@pytest.fixture(scope="module")
def codes():
    return torch.randint(0, 6561, (1, 41), generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def voice():
    return torch.randn(1, 192, generator=torch.Generator().manual_seed(1))


def test_length_laws(model, codes, voice):
    n = codes.shape[1]
    assert model.decode(codes, voice=voice).shape == (1, 960 * n)
    mel = model.token2mel(codes, voice)
    assert mel.shape == (1, 80, 2 * n) and mel.dtype == torch.float32
    held = model.token2mel(codes, voice, finalize=False)
    assert held.shape == (1, 80, 2 * (n - 3))  # the last 3 codes are look-ahead only
    assert model.mel2wav(mel).shape == (1, 480 * 2 * n)
    assert model.mel2wav(mel, finalize=False).shape == (1, 480 * (2 * n - 8))  # 8 mel frames held back


def test_chunk_causal_flow_is_streamable(model, codes, voice):
    """With the chunk-causal mask, the frames of a 50-frame chunk only depend on its codes, earlier ones and 3
    look-ahead codes (the reference's own self-check of `streaming=True`)."""
    codes = torch.cat([codes, codes], dim=1)  # 82 codes: 3 chunks
    full = model.token2mel(codes, voice, chunk_causal=True)
    for chunk in range(2):
        end = 25 * (chunk + 1)
        part = model.token2mel(codes[:, : end + 3], voice, finalize=False, chunk_causal=True)
        torch.testing.assert_close(part[..., 50 * chunk :], full[..., 50 * chunk : 2 * end], atol=1e-5, rtol=0)


def test_finalize_false_vocoder_prefix_matches_full(model, voice, codes):
    mel = model.token2mel(codes, voice)
    full = model.mel2wav(mel)
    partial = model.mel2wav(mel[..., :50], finalize=False)
    torch.testing.assert_close(partial, full[:, : partial.shape[1]], atol=1e-5, rtol=0)


def test_offline_segments_follow_the_official_rule(model):
    assert model.segments(10) == [(0, 10)]
    assert model.segments(750) == [(0, 750)]
    assert model.segments(800) == [(0, 750), (750, 800)]
    assert model.segments(790) == [(0, 395), (395, 790)]  # a tail under 50 codes: merge, then halves
    assert model.segments(1540) == [(0, 750), (750, 1145), (1145, 1540)]


def test_decode_is_segment_concatenation_and_drops_specials(model, voice):
    small = FunAudioChatToken2Wav.from_cosyvoice(TINY_COSYVOICE, segment_codes=20, min_tail_codes=8)
    codes = torch.randint(0, 6561, (1, 45), generator=torch.Generator().manual_seed(2))
    assert small.segments(45) == [(0, 20), (20, 32), (32, 45)]
    pieces = [small.mel2wav(small.token2mel(codes[:, a:b], voice)) for a, b in small.segments(45)]
    with_specials = torch.cat([torch.tensor([[6561]]), codes[:, :30], torch.tensor([[6563, 6564]]), codes[:, 30:]], 1)
    wav = small.decode(with_specials.tolist()[0] + [6562], voice=voice[0])
    assert torch.equal(wav, torch.cat(pieces, dim=1))


def test_bad_inputs_raise_clear_errors(model, codes, voice, tmp_path):
    model.load_voices(make_speaker_file(tmp_path / "voices.pt"), check_hash=False)
    with pytest.raises(ValueError, match="No speech codes"):
        model.decode([], voice=voice)
    with pytest.raises(ValueError, match="No speech codes"):
        model.decode([6561, 6562], voice=voice)
    with pytest.raises(ValueError, match=">= 0"):
        model.decode([1, -1, 2], voice=voice)
    with pytest.raises(ValueError, match=r"\[0, 6561\)"):
        model.token2mel(torch.tensor([[1, 6561]]), voice)
    with pytest.raises(ValueError, match="at least 1"):
        model.token2mel(torch.zeros(1, 0, dtype=torch.long), voice)
    with pytest.raises(ValueError, match="at least 4"):
        model.token2mel(codes[:, :3], voice, finalize=False)
    with pytest.raises(ValueError, match="integers"):
        model.decode(torch.tensor([1.0, 2.0]), voice=voice)
    with pytest.raises(ValueError, match="batch size 1"):
        model.decode(torch.zeros(2, 5, dtype=torch.long), voice=voice)
    with pytest.raises(ValueError, match="'中文女', '中文男'"):
        model.decode(codes, voice="英文女")
    with pytest.raises(ValueError, match=r"\[192\] or \[1, 192\]"):
        model.decode(codes, voice=torch.randn(80))
    with pytest.raises(ValueError, match=r"\[192\] or \[1, 192\]"):
        model.token2mel(codes, torch.randn(2, 192))
    with pytest.raises(ValueError, match=r"mel must be \[1, 80, T\]"):
        model.mel2wav(torch.randn(1, 40, 10))
    with pytest.raises(ValueError, match="at least 9"):
        model.mel2wav(torch.randn(1, 80, 8), finalize=False)
    with pytest.raises(ValueError, match=r"flow_noise must be \[1, 80, K\]"):
        model.set_noise(flow_noise=torch.randn(80, 10))
    with pytest.raises(ValueError, match=r"source_noise must be \[1, L, 9\]"):
        model.set_noise(source_noise=torch.rand(1, 10, 8))


def test_set_noise_changes_only_the_given_prefix(voice, codes):
    model = FunAudioChatToken2Wav.from_cosyvoice(TINY_COSYVOICE)
    base = model.token2mel(codes, voice)
    flow_noise = model.noise.flow(0, 20).clone()
    flow_noise[..., 10:] += 1.0
    model.set_noise(flow_noise=flow_noise)
    assert torch.equal(model.noise.flow(0, 10), flow_noise[..., :10])
    assert not torch.equal(model.token2mel(codes, voice), base)
    model.reset_noise()
    assert torch.equal(model.token2mel(codes, voice), base)
    source = model.noise.source(23990, 30)
    assert source.shape == (1, 30, 9) and torch.equal(source, model.noise.source(23990, 30))
    assert torch.equal(model.noise.source(0, 24020)[:, 23990:], source)
