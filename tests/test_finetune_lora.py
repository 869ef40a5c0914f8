"""LoRA target selection and the adapter round trip: save, reload (PEFT, load_adapter, Auto class, pipeline), merge,
save in the official layout."""

import json
import re

import numpy as np
import peft  # noqa: E402
import pytest
import torch
from conftest import AUDIO_FILES, TINY_FAC, save_random_adapter, spoken_example
from safetensors import safe_open
from transformers import AutoModelForMultimodalLM, AutoProcessor

from transformers_fac.training import (
    FunAudioChatDataCollator,
    adapted_modules,
    apply_lora,
    lora_config,
    lora_target_modules,
    merge_lora,
)

LLM_MODULES = [
    f"language_model.model.layers.{layer}.{name}"
    for layer in (0, 1)
    for name in (
        "mlp.down_proj",
        "mlp.gate_proj",
        "mlp.up_proj",
        "self_attn.k_proj",
        "self_attn.o_proj",
        "self_attn.q_proj",
        "self_attn.v_proj",
    )
]
SPEECH_HEAD_MODULES = [
    f"audio_invert_tower.crq_transformer.layers.{name.split('.', 3)[3]}" for name in LLM_MODULES
] + ["audio_invert_tower.input_matching", "audio_invert_tower.output_matching", "audio_invert_tower.pre_matching"]


def fresh_model():
    return AutoModelForMultimodalLM.from_pretrained(TINY_FAC).eval()


def test_default_target_is_the_llm_only():
    model = apply_lora(fresh_model())
    assert adapted_modules(model) == LLM_MODULES
    trainable = {name for name, parameter in model.named_parameters() if parameter.requires_grad}
    assert trainable and all(".lora_A." in name or ".lora_B." in name for name in trainable)
    assert all("language_model.model.layers." in name for name in trainable)  # towers and speech head frozen


def test_speech_head_target():
    model = apply_lora(fresh_model(), target="llm+speech_head")
    assert adapted_modules(model) == sorted(LLM_MODULES + SPEECH_HEAD_MODULES)
    pattern = lora_target_modules("llm+speech_head")
    for frozen in ("continuous_audio_tower.layers.0.self_attn.q_proj", "audio_invert_tower.lm_head"):
        assert not re.fullmatch(pattern, frozen)
    with pytest.raises(ValueError, match="target must be one of"):
        lora_target_modules("everything")


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    """An adapter with non-zero weights (as after training), saved with the processor; and a batch + its logits."""
    directory = tmp_path_factory.mktemp("adapter")
    torch.manual_seed(0)
    model = apply_lora(fresh_model(), lora_config(r=4, alpha=8, init_lora_weights=False)).eval()
    model.save_pretrained(directory)
    processor = AutoProcessor.from_pretrained(TINY_FAC)
    processor.save_pretrained(directory)
    example = spoken_example()
    batch = FunAudioChatDataCollator(processor)([example])
    with torch.no_grad():
        output = model(**batch)
    return directory, batch, output


def assert_same_outputs(model, batch, expected, tolerance=1e-6):
    """Text and speech logits equal up to `tolerance` times the logits' scale (their largest magnitude, >= 1)."""
    with torch.no_grad():
        output = model(**batch)
    for name in ("text_logits", "speech_logits"):
        actual, reference = getattr(output, name), getattr(expected, name)
        scale = max(1.0, reference.abs().max().item())
        assert (actual - reference).abs().max().item() <= tolerance * scale, name


def test_adapter_changes_the_outputs(adapter):
    _, batch, expected = adapter
    with torch.no_grad():
        base = fresh_model()(**batch)
    assert not torch.allclose(base.text_logits, expected.text_logits, atol=1e-3)


def test_adapter_reloads_with_peft_load_adapter_and_auto_class(adapter):
    directory, batch, expected = adapter
    config = json.loads((directory / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(TINY_FAC.resolve())
    assert_same_outputs(peft.PeftModel.from_pretrained(fresh_model(), directory).eval(), batch, expected)
    base = fresh_model()
    base.load_adapter(str(directory))
    assert_same_outputs(base.eval(), batch, expected)
    # transformers reads adapter_config.json, loads the base model it names, then the adapter
    assert_same_outputs(AutoModelForMultimodalLM.from_pretrained(directory).eval(), batch, expected)


def test_merged_checkpoint_has_the_official_layout(adapter, tmp_path):
    directory, batch, expected = adapter
    merged = merge_lora(peft.PeftModel.from_pretrained(fresh_model(), directory)).eval()
    assert merged.config.tie_word_embeddings is True
    assert_same_outputs(merged, batch, expected, tolerance=1e-5)  # W + BA in float32
    merged.save_pretrained(tmp_path)
    keys = {}
    for path in (tmp_path / "model.safetensors", TINY_FAC / "model.safetensors"):
        with safe_open(path, "pt") as handle:
            keys[path] = set(handle.keys())
    assert keys[tmp_path / "model.safetensors"] == keys[TINY_FAC / "model.safetensors"]
    assert not any("lora" in key for key in keys[tmp_path / "model.safetensors"])
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "funaudiochat" and config["audio_config"]["model_type"] == (
        "funaudiochat_audio_encoder"
    )
    assert_same_outputs(AutoModelForMultimodalLM.from_pretrained(tmp_path).eval(), batch, expected, tolerance=1e-5)


def test_pipeline_loads_an_adapter_folder(tiny_e2e_dir, tmp_path):
    """`pipeline("speech-to-speech", model=<adapter dir>)` loads the base named in the adapter, then the adapter."""
    from transformers import pipeline

    save_random_adapter(tiny_e2e_dir, tmp_path)
    question, options = str(AUDIO_FILES["en"]), {"max_new_tokens": 4, "do_sample": False}
    pipe = pipeline("speech-to-speech", model=str(tmp_path))
    assert adapted_modules(pipe.model) == LLM_MODULES
    reply = pipe(question, **options)
    merged = merge_lora(
        peft.PeftModel.from_pretrained(AutoModelForMultimodalLM.from_pretrained(tiny_e2e_dir), tmp_path)
    )
    expected = pipeline("speech-to-speech", model=merged.eval(), processor=AutoProcessor.from_pretrained(tmp_path))(
        question, **options
    )
    assert reply["text"] == expected["text"]
    np.testing.assert_allclose(reply["audio"], expected["audio"], atol=1e-4)
