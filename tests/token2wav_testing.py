"""Shared fixtures of the token2wav tests: paths of the golden data, the tiny reference decoder, speaker files, SNR."""

import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from transformers_fac.token2wav import FunAudioChatToken2Wav

REPO_ROOT = Path(__file__).resolve().parents[1]
GOLDEN = REPO_ROOT / "tests" / "fixtures" / "golden"
TINY_COSYVOICE = GOLDEN / "tiny-cosyvoice3"
OFFICIAL_SPEAKER_FILE_VARIABLE = "FAC_OFFICIAL_SPEAKER_FILE"


def golden() -> dict[str, torch.Tensor]:
    return load_file(GOLDEN / "t2w-golden.safetensors")


def golden_model(**overrides) -> FunAudioChatToken2Wav:
    """The tiny reference decoder with the golden noise prefixes."""
    data = golden()
    model = FunAudioChatToken2Wav.from_cosyvoice(TINY_COSYVOICE, **overrides)
    model.set_noise(flow_noise=data["ref.flow_rand_noise_prefix"], source_noise=data["ref.hift_sine_noise_prefix"])
    return model


def official_speaker_file() -> Path:
    """The official `new_spk2info.pt` (the official repository's file, never committed here), named by the
    `FAC_OFFICIAL_SPEAKER_FILE` variable. Unset: the test is skipped (a fresh clone has no copy); set but missing:
    the test fails. `.ci/run` sets it, so CI always runs these tests."""
    value = os.environ.get(OFFICIAL_SPEAKER_FILE_VARIABLE, "").strip()
    if not value:
        pytest.skip(
            f"needs the official speaker file: set {OFFICIAL_SPEAKER_FILE_VARIABLE}=/path/to/new_spk2info.pt "
            "(.ci/run does; the rest of the speaker-file logic is tested with files the tests make)"
        )
    path = Path(value)
    if not path.is_file():
        pytest.fail(f"{OFFICIAL_SPEAKER_FILE_VARIABLE}={value} does not name a file.")
    return path


def make_speaker_file(path: Path, names: tuple[str, ...] = ("中文女", "中文男"), seed: int = 0) -> Path:
    """A speaker file in the official format (`name -> {"embedding" [1, 192], "speech_token", "speech_feat"}`) with
    random voices."""
    generator = torch.Generator().manual_seed(seed)
    table = {
        name: {
            "embedding": torch.randn(1, 192, generator=generator),
            "speech_token": torch.randint(0, 6561, (1, 7), generator=generator),
            "speech_feat": torch.randn(1, 12, 80, generator=generator),
        }
        for name in names
    }
    torch.save(table, path)
    return path


def snr_db(reference: torch.Tensor, estimate: torch.Tensor) -> float:
    """10 log10(|reference|^2 / |reference - estimate|^2)."""
    noise = (reference - estimate).pow(2).sum().clamp_min(1e-20)
    return float(10 * torch.log10(reference.pow(2).sum() / noise))


def random_codes(count: int, seed: int = 1) -> torch.Tensor:
    """[1, count] random valid speech codes."""
    return torch.randint(0, 6561, (1, count), generator=torch.Generator().manual_seed(seed))


def stream_chunks(model, codes: torch.Tensor, voice, sizes: list[int], exact: bool = False):
    """Push `codes` in pieces of `sizes` into a new stream, then finish it: (chunks incl. the final one, decoder)."""
    decoder = model.stream_decoder(voice, exact=exact)
    chunks, start = [], 0
    for size in sizes:
        chunks.append(decoder.push(codes[:, start : start + size]))
        start += size
    assert start == codes.shape[1]
    chunks.append(decoder.finish())
    return chunks, decoder


def check_golden_stream(model, voice, data: dict[str, torch.Tensor], split: list[int], atol: float) -> None:
    """Push `in.tokens` in pieces of `split` codes into an exact stream and compare with `out.stream_wav`.

    Emissions happen per step (22 frames once 18 codes are in, 30 frames at 33 codes, the rest at finish()); a push
    covering several steps returns their audio together, so the running totals must be golden chunk boundaries."""
    stream = model.stream_decoder(voice, exact=True)
    tokens, chunks, start = data["in.tokens"], [], 0
    for size in split:
        chunks.append(stream.push(tokens[:, start : start + size]))
        start += size
    chunks.append(stream.finish())
    torch.testing.assert_close(torch.cat(chunks, dim=1), data["out.stream_wav"], atol=atol, rtol=0)
    lengths = data["out.stream_chunk_lengths"].tolist()
    boundaries = {sum(lengths[:i]) for i in range(len(lengths) + 1)}
    totals = torch.tensor([c.shape[1] for c in chunks]).cumsum(0).tolist()
    assert set(totals) <= boundaries and totals[-1] == sum(lengths)
    if split == [1] * tokens.shape[1]:
        assert [c.shape[1] for c in chunks if c.shape[1]] == lengths


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """One intra-op thread: on shared 2-core machines, spinning OpenMP threads make tiny ops erratic."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
