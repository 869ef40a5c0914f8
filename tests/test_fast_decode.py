"""The lean one-position decoding path (`fast_decode`) must give bitwise the values of the module path."""

import pytest
import torch
from torch import nn
from transformers import AutoConfig, DynamicCache, Qwen3Config
from transformers.models.qwen3.modeling_qwen3 import Qwen3Model

from transformers_fac import FunAudioChatConfig, FunAudioChatForConditionalGeneration
from transformers_fac.fast_decode import LeanDecoder, LeanLanguageModelStep
from transformers_fac.growing_cache import GrowingCache

# (hidden, layers, heads, key/value heads, head_dim, ffn): the tiny LLM and speech head, the mid-size benchmark ones
# (fewer LLM layers: the layers are alike), and an ungrouped one.
SHAPES = {
    "tiny-llm": (64, 2, 4, 2, 16, 128),
    "tiny-head": (32, 2, 4, 2, 8, 64),
    "mid-llm": (512, 3, 8, 4, 64, 1536),
    "mid-head": (256, 4, 4, 2, 64, 768),
    "no-gqa": (64, 2, 4, 4, 16, 96),
}


def _qwen3(shape: str, attention: str, dtype=torch.float32, seed: int = 0) -> Qwen3Model:
    hidden, layers, heads, kv_heads, head_dim, ffn = SHAPES[shape]
    config = Qwen3Config(
        vocab_size=8,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=head_dim,
        intermediate_size=ffn,
        rope_theta=1e6,
    )
    config._attn_implementation = attention
    torch.manual_seed(seed)
    model = Qwen3Model(config).to(dtype).eval()
    with torch.no_grad():  # non-trivial norm weights
        for name, parameter in model.named_parameters():
            if "norm" in name:
                parameter.uniform_(0.5, 1.5)
    return model


def _assert_same_cache(ours, reference) -> None:
    for mine, theirs in zip(ours.layers, reference.layers):
        assert torch.equal(mine.keys, theirs.keys) and torch.equal(mine.values, theirs.values)


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("batch", [1, 2])
def test_lean_decoder_is_bitwise_the_module_path(shape, attention, batch):
    model = _qwen3(shape, attention)
    lean = LeanDecoder.build(model)
    assert lean is not None
    hidden = model.config.hidden_size
    generator = torch.Generator().manual_seed(1)
    prompt = torch.randn(batch, 9, hidden, generator=generator)
    caches = []
    for cache_class in (GrowingCache, DynamicCache):
        reference, ours = cache_class(config=model.config), cache_class(config=model.config)
        with torch.no_grad():
            for cache in (reference, ours):
                model(inputs_embeds=prompt, cache=cache, use_cache=True)
        caches.append((reference, ours))
    with torch.inference_mode():
        for step in range(6):
            inputs = torch.randn(batch, 1, hidden, generator=generator) * (1 + step)
            positions = torch.full((batch, 1), 9 + step)
            for reference, ours in caches:
                expected = model(inputs_embeds=inputs, position_ids=positions, cache=reference, use_cache=True)
                assert torch.equal(lean(inputs, positions, ours), expected.last_hidden_state)
                _assert_same_cache(ours, reference)


def test_lean_decoder_in_bfloat16():
    model = _qwen3("tiny-llm", "sdpa", dtype=torch.bfloat16)
    lean = LeanDecoder.build(model)
    generator = torch.Generator().manual_seed(2)
    reference, ours = GrowingCache(config=model.config), GrowingCache(config=model.config)
    prompt = torch.randn(1, 5, 64, generator=generator).bfloat16()
    with torch.no_grad():
        for cache in (reference, ours):
            model(inputs_embeds=prompt, cache=cache, use_cache=True)
        for step in range(4):
            inputs = torch.randn(1, 1, 64, generator=generator).bfloat16()
            positions = torch.tensor([[5 + step]])
            expected = model(inputs_embeds=inputs, position_ids=positions, cache=reference, use_cache=True)
            assert torch.equal(lean(inputs, positions, ours), expected.last_hidden_state)


class _Wrapped(nn.Linear):
    """Stands for an adapter or quantized layer: not a plain `nn.Linear`."""


@pytest.mark.parametrize(
    "change",
    ["training", "hook", "wrapped_linear", "forward_replaced", "flash", "sliding", "checkpointing", "global_hook"],
)
def test_lean_decoder_refuses_what_it_would_bypass(change):
    model = _qwen3("tiny-llm", "sdpa")
    assert LeanDecoder.build(model) is not None
    handle = None
    if change == "training":
        model.train()
    elif change == "hook":
        model.layers[1].mlp.register_forward_hook(lambda *args: None)
    elif change == "wrapped_linear":
        original = model.layers[0].self_attn.q_proj
        wrapped = _Wrapped(original.in_features, original.out_features, bias=False)
        wrapped.weight = original.weight
        model.layers[0].self_attn.q_proj = wrapped.eval()
    elif change == "forward_replaced":
        layer = model.layers[0]
        layer.forward = layer.forward
    elif change == "flash":
        model.config._attn_implementation = "flash_attention_2"
    elif change == "sliding":
        model.has_sliding_layers = True
    elif change == "checkpointing":
        model.gradient_checkpointing = True
    elif change == "global_hook":
        handle = nn.modules.module.register_module_forward_hook(lambda *args: None)
    try:
        assert LeanDecoder.build(model) is None
    finally:
        if handle is not None:
            handle.remove()


def _mid_size_model() -> FunAudioChatForConditionalGeneration:
    """A small random model whose LLM and speech head have grouped heads of width 64 (as the benchmark's)."""
    from conftest import TINY_FAC

    config = AutoConfig.from_pretrained(TINY_FAC).to_dict()
    config["text_config"].update(hidden_size=128, num_attention_heads=4, num_key_value_heads=2, head_dim=64)
    config["audio_config"].update(output_dim=128)
    config["audio_config"]["crq_transformer_config"].update(
        hidden_size=128, num_attention_heads=4, num_key_value_heads=2, head_dim=64
    )
    torch.manual_seed(0)
    return FunAudioChatForConditionalGeneration._from_config(FunAudioChatConfig.from_dict(config)).eval()


def test_lean_language_model_step_leaves_other_inputs_to_the_model(tiny_model):
    step = LeanLanguageModelStep.build(tiny_model)
    assert step is not None
    cache = GrowingCache(config=tiny_model.config.text_config)
    with torch.no_grad():
        tiny_model(inputs_embeds=torch.randn(1, 4, 64), cache=cache, use_cache=True, output_speech_logits=False)
    inputs = dict(
        input_ids=None,
        inputs_embeds=torch.randn(1, 1, 64),
        cache=cache,
        position_ids=torch.tensor([[4]]),
        use_cache=True,
        logits_to_keep=1,
        output_speech_logits=False,
    )
    for change in (
        {"attention_mask": torch.ones(1, 5, dtype=torch.long)},
        {"output_hidden_states": True},
        {"output_speech_logits": None},
        {"use_cache": False},
        {"inputs_embeds": torch.randn(1, 2, 64)},
        {"cache": None},
    ):
        assert step({**inputs, **change}) is None
    assert cache.get_seq_length() == 4
    with torch.no_grad():
        expected = tiny_model(**{**inputs, "cache": _copy(cache, tiny_model.config.text_config)}, return_dict=True)
    logits, hidden = step(inputs)
    assert torch.equal(logits, expected.logits) and torch.equal(hidden, expected.last_hidden_state)
    assert cache.get_seq_length() == 5


def _copy(cache: GrowingCache, config) -> GrowingCache:
    copy = GrowingCache(config=config)
    for index, layer in enumerate(cache.layers):
        copy.update(layer.keys.clone(), layer.values.clone(), index)
    return copy
