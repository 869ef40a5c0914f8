"""Shared fixtures: golden data of the official implementations and the tiny checkpoint (CPU, float32)."""

import pytest
import torch

from tests.processing_test_utils import AUDIO_FILES, GOLDEN, TINY_FAC, golden_scenarios, golden_tensors, read_wav

__all__ = ["AUDIO_FILES", "GOLDEN", "TINY_FAC"]

# The tiny random checkpoints drive some activations into float32 denormals, which are up to ~60x slower on CPU.
# Flushing them to zero changes no token and no golden comparison (all tolerance-based or argmax).
torch.set_flush_denormal(True)


@pytest.fixture(scope="session")
def golden() -> dict[str, torch.Tensor]:
    return golden_tensors()


@pytest.fixture(scope="session")
def scenarios() -> dict:
    return golden_scenarios()


def scenario_inputs(golden: dict, name: str) -> dict[str, torch.Tensor]:
    """The official processor's outputs for a scenario (`<name>.in.*`)."""
    prefix = f"{name}.in."
    return {key[len(prefix) :]: value.clone() for key, value in golden.items() if key.startswith(prefix)}


def read_audio(name: str):
    """A fixture clip as a 16 kHz float32 waveform (a fresh copy)."""
    return read_wav(name).copy()


@pytest.fixture(scope="session")
def tiny_model():
    from transformers import AutoModelForMultimodalLM

    return AutoModelForMultimodalLM.from_pretrained(TINY_FAC).eval()


def whisper_features(names: list[str]) -> dict[str, torch.Tensor]:
    """Log-mel features of the scenario audios, computed as the official processor does (padded to 30 s)."""
    from transformers import WhisperFeatureExtractor

    extractor = WhisperFeatureExtractor.from_pretrained(TINY_FAC)
    waveforms = [read_audio(name) for name in names]
    features = extractor(
        waveforms, sampling_rate=16000, return_attention_mask=True, padding="max_length", return_tensors="pt"
    )
    return {"input_features": features["input_features"], "feature_attention_mask": features["attention_mask"]}


def full_scenario_inputs(golden: dict, scenarios: dict, name: str) -> dict[str, torch.Tensor]:
    """Scenario inputs with the waveform features added (the golden file stores them for forward/train only)."""
    inputs = scenario_inputs(golden, name)
    inputs.pop("speech_eos_embedding_row", None)
    if "input_features" not in inputs:
        inputs.update(whisper_features(scenarios[name]["audio"]))
    return inputs


@pytest.fixture(scope="session")
def tiny_e2e_dir(tmp_path_factory):
    """The built tiny end-to-end checkpoint (model, tokenizers, token2wav, voices) in the real Hub layouts."""
    from transformers_fac.tiny import build_tiny_checkpoint

    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny-e2e"))


@pytest.fixture(scope="session")
def tiny_e2e_model(tiny_e2e_dir):
    from transformers import AutoModelForMultimodalLM

    return AutoModelForMultimodalLM.from_pretrained(tiny_e2e_dir).eval()


def save_random_adapter(checkpoint, directory):
    """A LoRA adapter with non-zero (seeded) weights on the checkpoint's LLM, saved with the processor; returns the
    base model it was made on."""
    from transformers import AutoModelForMultimodalLM, AutoProcessor

    from transformers_fac.training import apply_lora, lora_config

    torch.manual_seed(0)
    base = AutoModelForMultimodalLM.from_pretrained(checkpoint).eval()
    apply_lora(base, lora_config(r=4, alpha=8, init_lora_weights=False)).save_pretrained(directory)
    AutoProcessor.from_pretrained(checkpoint).save_pretrained(directory)
    return base


def spoken_example() -> dict:
    """A prepared speech-to-speech row: the English question, a written reply and its (made-up) speech codes."""
    from transformers_fac import AUDIO_TEMPLATE, S2M_SYSTEM_PROMPT

    return {
        "user_audio": str(AUDIO_FILES["en"]),
        "system": S2M_SYSTEM_PROMPT,
        "messages": [{"role": "user", "content": AUDIO_TEMPLATE}, {"role": "assistant", "content": AUDIO_TEMPLATE}],
        "reply": "Hello there.",
        "speech_codes": list(range(100, 140)),
    }
