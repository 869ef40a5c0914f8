"""Quantized loading (torchao, bitsandbytes) on the tiny end-to-end checkpoint: only the backbone's linear layers are
quantized, a spoken reply still comes out, and the prefill logits stay close to the unquantized model's."""

import pytest
import torch
from conftest import AUDIO_FILES
from transformers import AutoModelForMultimodalLM, AutoProcessor, BitsAndBytesConfig, TorchAoConfig

from transformers_fac import S2M_SYSTEM_PROMPT, FunAudioChatConversation, FunAudioChatForConditionalGeneration
from transformers_fac.quantization import (
    planned_quantized_parameters,
    quantization_config,
    with_skip_modules,
)

# Prefill logits of int8 weight-only against float32 (measured on the tiny checkpoint: about 41 dB text and speech).
INT8_MIN_SNR_DB = 30.0
BACKBONE_LINEAR = r"language_model\.model\.layers\.\d+\.(self_attn\.[qkvo]_proj|mlp\.(gate|up|down)_proj)"


def quantized_linears(model) -> set[str]:
    """The linear layers whose weight is no longer a plain float parameter (a torchao tensor subclass, or a
    bitsandbytes int8/uint8 parameter)."""
    names = set()
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if isinstance(module, torch.nn.Linear) and weight is not None:
            if type(weight) is not torch.nn.Parameter or not weight.is_floating_point():
                names.add(name)
    return names


def backbone_linears(model) -> set[str]:
    import re

    return {
        name
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and re.fullmatch(BACKBONE_LINEAR, name)
    }


def snr_db(reference: torch.Tensor, other: torch.Tensor) -> float:
    return (10 * torch.log10(reference.pow(2).mean() / (reference - other).pow(2).mean())).item()


def configs_that_run_on_cpu() -> dict:
    return {
        "int8": quantization_config("int8", "cpu"),
        "fp8": quantization_config("fp8", "cpu"),
        "nf4": quantization_config("nf4", "cpu"),
        "bnb-8bit": BitsAndBytesConfig(load_in_8bit=True),
    }


@pytest.fixture(scope="module")
def int8_model(tiny_e2e_dir):
    config = quantization_config("int8", "cpu")
    return AutoModelForMultimodalLM.from_pretrained(tiny_e2e_dir, quantization_config=config).eval()


@pytest.fixture(scope="module")
def question(tiny_e2e_dir):
    chat = FunAudioChatConversation(system_prompt=S2M_SYSTEM_PROMPT)
    chat.add_user_audio(AUDIO_FILES["long"])
    return chat.model_inputs(AutoProcessor.from_pretrained(tiny_e2e_dir))


def test_int8_quantizes_the_backbone_linears_and_nothing_else(int8_model):
    quantized = quantized_linears(int8_model)
    assert quantized == backbone_linears(int8_model) and len(quantized) == 14  # 2 layers x 7 projections
    for name, parameter in int8_model.named_parameters():
        if name.rsplit(".", 1)[0] not in quantized:
            assert type(parameter) is torch.nn.Parameter and parameter.dtype == torch.float32, name
    assert int8_model.token2wav is not None and not quantized_linears(int8_model.token2wav)
    saved = int8_model.config.quantization_config.modules_to_not_convert
    assert saved == FunAudioChatForConditionalGeneration.modules_not_quantized()


def test_int8_speaks_and_its_prefill_logits_stay_close(int8_model, tiny_e2e_model, question):
    with torch.no_grad():
        reference, quantized = tiny_e2e_model(**question), int8_model(**question)
    assert snr_db(reference.text_logits, quantized.text_logits) > INT8_MIN_SNR_DB
    assert snr_db(reference.speech_logits, quantized.speech_logits) > INT8_MIN_SNR_DB
    out = int8_model.generate(**question, generation_mode="audio", max_new_tokens=10, return_dict_in_generate=True)
    codes = out.valid_speech_codes()[0]
    assert codes.numel() > 0 and out.audio[0].numel() == 960 * codes.numel()
    assert out.audio[0].abs().max() > 0


@pytest.mark.parametrize("name", ["int8", "fp8", "nf4", "bnb-8bit"])
def test_every_cpu_config_leaves_the_skip_list_unquantized(tiny_e2e_dir, name):
    config = configs_that_run_on_cpu()[name]
    model = AutoModelForMultimodalLM.from_pretrained(tiny_e2e_dir, quantization_config=config, token2wav=None)
    assert quantized_linears(model) == backbone_linears(model)


def test_speech_head_opt_in_quantizes_its_transformer_only(tiny_e2e_dir):
    model = AutoModelForMultimodalLM.from_pretrained(
        tiny_e2e_dir, quantization_config=quantization_config("int8"), quantize_speech_head=True, token2wav=None
    )
    speech_head = {name for name in quantized_linears(model) if name.startswith("audio_invert_tower.")}
    assert speech_head and all(name.startswith("audio_invert_tower.crq_transformer.layers.") for name in speech_head)
    assert quantized_linears(model) == backbone_linears(model) | speech_head
    with pytest.raises(ValueError, match="needs a quantization_config"):
        AutoModelForMultimodalLM.from_pretrained(tiny_e2e_dir, quantize_speech_head=True, token2wav=None)


def test_a_skip_list_given_by_the_caller_wins(tiny_e2e_dir):
    config = TorchAoConfig(quantization_config("int8").quant_type, modules_to_not_convert=["language_model.model"])
    model = AutoModelForMultimodalLM.from_pretrained(tiny_e2e_dir, quantization_config=config, token2wav=None)
    quantized = quantized_linears(model)
    assert quantized and not quantized & backbone_linears(model)  # the towers and speech head instead


def test_int4_cannot_run_on_cpu_but_plans_the_same_layers(tiny_e2e_dir):
    """torchao's int4 kernels are CUDA's: on a CPU the switch says so, and transformers' quantizer is asked which
    parameters an int4 load would quantize (on a meta-device model, without kernels)."""
    with pytest.raises(ValueError, match="CUDA"):
        quantization_config("int4", "cpu")
    from torchao.quantization import Int4WeightOnlyConfig

    int4 = TorchAoConfig(Int4WeightOnlyConfig(group_size=32, int4_packing_format="tile_packed_to_4d"))
    reference = AutoModelForMultimodalLM.from_pretrained(tiny_e2e_dir, token2wav=None)
    with torch.device("meta"):
        model = FunAudioChatForConditionalGeneration(reference.config)
    planned = planned_quantized_parameters(model, with_skip_modules(int4, model.modules_not_quantized()))
    assert {name.removesuffix(".weight") for name in planned} == backbone_linears(reference)


def test_the_switch_checks_its_input_before_importing_a_backend():
    with pytest.raises(ValueError, match="int8, int4, nf4, fp8"):
        quantization_config("int3")
    config = BitsAndBytesConfig(load_in_4bit=True, llm_int8_skip_modules=["lm_head"])
    assert with_skip_modules(config, ["audio_tower"]) is config  # the caller's list is kept
    filled = with_skip_modules(BitsAndBytesConfig(load_in_4bit=True), ["audio_tower"])
    assert filled.llm_int8_skip_modules == ["audio_tower"]


@pytest.mark.parametrize("name", ["int8", "nf4"])
def test_at_the_8b_shapes_only_the_252_backbone_linears_are_planned(name):
    """The real Fun-Audio-Chat-8B layout (meta device, no weights): transformers' quantizer picks exactly the 36
    layers x 7 projections of the backbone."""
    from pathlib import Path

    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(Path(__file__).resolve().parents[1] / "hub_configs" / "Fun-Audio-Chat-8B")
    with torch.device("meta"):
        model = FunAudioChatForConditionalGeneration(config)
    expected = {f"{module}.weight" for module in backbone_linears(model)}
    planned = planned_quantized_parameters(
        model, with_skip_modules(quantization_config(name), model.modules_not_quantized())
    )
    assert set(planned) == expected and len(expected) == 36 * 7
