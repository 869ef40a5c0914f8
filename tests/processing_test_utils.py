"""Shared helpers of the processor and audio tests: fixture paths, the golden data and a cached tiny processor."""

import functools
import json
from pathlib import Path

import numpy as np
import soundfile
import torch
from safetensors.torch import load_file

import transformers_fac  # noqa: F401  (registers FunAudioChatProcessor with AutoProcessor)

FIXTURES = Path(__file__).parent / "fixtures"
GOLDEN = FIXTURES / "golden"
TINY_FAC = GOLDEN / "tiny-fac"
AUDIO_FILES = {
    "en": FIXTURES / "audio" / "question_en.wav",
    "zh": FIXTURES / "audio" / "question_zh.wav",
    "long": FIXTURES / "audio" / "real_zh_6s.wav",
}
SCENARIOS = ("s2t_en", "s2m_long", "s2m_zh_plain", "s2m_eos", "s2t_batch", "forward")


@functools.cache
def golden_tensors() -> dict[str, torch.Tensor]:
    return load_file(GOLDEN / "fac-golden.safetensors")


@functools.cache
def golden_scenarios() -> dict:
    return json.loads((GOLDEN / "fac-golden.json").read_text(encoding="utf-8"))["scenarios"]


def golden_inputs(scenario: str) -> dict[str, torch.Tensor]:
    """The reference processor outputs of a scenario (`labels` and the eos-embedding row are not processor outputs)."""
    prefix = f"{scenario}.in."
    skip = ("labels", "speech_eos_embedding_row")
    return {
        key[len(prefix) :]: value
        for key, value in golden_tensors().items()
        if key.startswith(prefix) and key[len(prefix) :] not in skip
    }


def scenario_audio(scenario: str) -> list[str]:
    return golden_scenarios()[scenario].get("audio", ["long"])


@functools.cache
def read_wav(name: str) -> np.ndarray:
    waveform, sampling_rate = soundfile.read(AUDIO_FILES[name], dtype="float32")
    assert sampling_rate == 16000
    return waveform


@functools.cache
def tiny_processor():
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(TINY_FAC)


def prompt(scenario: str = "s2t_en") -> str:
    return golden_scenarios()[scenario]["prompt_text"]


def assert_matches_golden(outputs, expected: dict[str, torch.Tensor]) -> None:
    """Every expected tensor is present with the same shape; ids/masks equal, features within 1e-5."""
    for name, reference in expected.items():
        assert name in outputs, f"missing output {name}"
        value = torch.as_tensor(outputs[name])
        assert tuple(value.shape) == tuple(reference.shape), (name, tuple(value.shape), tuple(reference.shape))
        if reference.is_floating_point():
            torch.testing.assert_close(value.float(), reference, rtol=0, atol=1e-5, msg=name)
        else:
            assert torch.equal(value.to(reference.dtype), reference), name
