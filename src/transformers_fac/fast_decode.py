"""A lean path for decoding one position through a Qwen3 decoder stack (the LLM steps and the speech head sub-steps).

Audio-mode generation runs, per 5 Hz step, one LLM position and 5 speech head sub-positions. At batch 1 on a CPU (the
benchmark's mid-size model), the matrix products of a step take about 26 ms, and the machinery of the module path
(`Qwen3Model.forward`'s decorators, output capture and mask creation, the module `__call__` of ~12 submodules per
layer, keyword plumbing) added about 15 ms more. [`LeanDecoder`] does the same computation without that machinery.

When it applies ([`LeanDecoder.build`] returns None otherwise, and callers keep the module path): one new position
per call for unpadded rows (no attention mask), a `DynamicCache` (a [`GrowingCache`] included), `eager` or `sdpa`
attention, no sliding-window layers, default RoPE, eval mode, not while compiling, and only plain modules: the Qwen3
classes themselves with `nn.Linear` projections (a PEFT LoRA layer or a quantized linear is not one), no forward hooks
and no per-instance `forward` replacement (accelerate offloading, hub kernels).

Why it is exact: it does what `Qwen3Model.forward` does in that case, operation by operation on tensors of the same
shapes: the rotary embedding; per layer the RMSNorms with their float32 upcast, the projections through
`torch.nn.functional.linear`, the q/k norms, `q * cos + rotate_half(q) * sin`, the cache update, the attention function
that the layer calls without a mask (with `sdpa`, grouped heads and one query position it calls
`scaled_dot_product_attention(..., is_causal=False, enable_gqa=True)`; that call is made directly, other cases call the
function itself), `o_proj`, the residuals, `down(act(gate(x)) * up(x))`; the final norm. A few operations are written
differently where the values provably stay the same (each is explained where it is done): `_rms_norm`, `_rotate`,
and, on the CPU, one norm and rotation for the query and key heads together. `tests/test_fast_decode.py` checks
bitwise equality with the module path (eager and sdpa, with and without grouped heads, float32 and bfloat16).
"""

from collections.abc import Callable

import torch
from torch import nn
from transformers import DynamicCache
from transformers.activations import SiLUActivation
from transformers.cache_utils import DynamicLayer
from transformers.integrations.sdpa_attention import sdpa_attention_forward, use_gqa_in_sdpa
from transformers.models.qwen3.modeling_qwen3 import (
    Qwen3Attention,
    Qwen3DecoderLayer,
    Qwen3MLP,
    Qwen3Model,
    Qwen3RMSNorm,
    Qwen3RotaryEmbedding,
    eager_attention_forward,
)

ATTENTION_FUNCTIONS = {"eager": eager_attention_forward, "sdpa": sdpa_attention_forward}
_HOOK_DICTS = (
    "_forward_hooks",
    "_forward_pre_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_pre_hooks_with_kwargs",
    "_forward_hooks_always_called",
)


def is_plain(module: nn.Module, expected_type: type) -> bool:
    """`module` is exactly `expected_type`, in eval mode, without forward hooks or a per-instance `forward`."""
    return (
        type(module) is expected_type
        and not module.training
        and "forward" not in module.__dict__
        and not any(getattr(module, name, None) for name in _HOOK_DICTS)
    )


def global_hooks_registered() -> bool:
    """Forward hooks registered for every module (`torch.nn.modules.module.register_module_forward_hook`)."""
    from torch.nn.modules import module as torch_module

    return bool(
        torch_module._global_forward_hooks
        or torch_module._global_forward_pre_hooks
        or getattr(torch_module, "_global_forward_hooks_always_called", None)
    )


def linear_parameters(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """(weight, bias) of a plain `nn.Linear` (what its `forward` passes to `F.linear`), else None."""
    if not is_plain(module, nn.Linear):
        return None
    return module.weight, module.bias


def lean_cache(cache) -> bool:
    """A cache whose `update` the lean path may call: a `DynamicCache` whose layers are full-attention dynamic ones."""
    return isinstance(cache, DynamicCache) and all(
        isinstance(layer, DynamicLayer) and not layer.is_sliding for layer in cache.layers
    )


def _norm(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None] | None:
    """(weight, epsilon, divisor) of a plain `Qwen3RMSNorm` (see `_rms_norm`), else None."""
    if not is_plain(module, Qwen3RMSNorm):
        return None
    weight = module.weight
    eps = torch.tensor(module.variance_epsilon, dtype=torch.float32, device=weight.device)
    divisor = torch.tensor(weight.shape[-1], dtype=torch.float32) if weight.device.type == "cpu" else None
    return weight, eps, divisor


def _rms_norm(
    hidden: torch.Tensor, weight: torch.Tensor, eps: torch.Tensor, divisor: torch.Tensor | None
) -> torch.Tensor:
    """`Qwen3RMSNorm.forward` with the same value at each operation, in fewer and cheaper calls:

    - the casts are skipped where they would return the tensor itself (float32);
    - on the CPU, `mean` is `sum` followed by an in-place division by the element count (that is how ATen implements
      it there), done directly with the count as a float32 0-dim tensor: this skips converting an integer scalar at
      every call (a CUDA `mean` is a different kernel and is kept);
    - epsilon is added as the float32 0-dim tensor holding the value that the Python float is rounded to anyway;
    - the reciprocal square root is taken in place.
    """
    dtype = hidden.dtype
    if dtype != torch.float32:
        hidden = hidden.to(torch.float32)
    squares = hidden.pow(2)
    if divisor is None:
        variance = squares.mean(-1, keepdim=True)
    else:
        variance = squares.sum(-1, keepdim=True).div_(divisor)
    hidden = hidden * (variance + eps).rsqrt_()
    if dtype != torch.float32:
        hidden = hidden.to(dtype)
    return weight * hidden


def _rotate(states: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
    """`states * cos + rotate_half(states) * sin` with `rotate_half(x) = cat(-x2, x1)`. `roll(x, half)` is
    `cat(x2, x1)` and `(-a) * b` is exactly `a * (-b)` in IEEE arithmetic, so with `signed_sin = cat(-sin1, sin2)`
    this gives the same values in 4 operations instead of 7."""
    return (states * cos) + (states.roll(states.shape[-1] // 2, -1) * signed_sin)


class _Layer:
    """The parameters of one `Qwen3DecoderLayer`, read once, and how it attends."""

    __slots__ = (
        "index", "attention", "head_dim", "scaling", "attend", "sdpa_kwargs", "input_norm", "post_norm", "q", "k", "v",
        "o", "q_norm", "k_norm", "qk_norm", "query_heads", "gate", "up", "down", "act",
    )  # fmt: skip

    @classmethod
    def build(cls, layer: nn.Module, index: int, implementation: str) -> "_Layer | None":
        attention, mlp = layer.self_attn, layer.mlp
        if not (
            is_plain(layer, Qwen3DecoderLayer)
            and is_plain(attention, Qwen3Attention)
            and is_plain(mlp, Qwen3MLP)
            and attention.layer_idx == index
            and attention.sliding_window is None
        ):
            return None
        self = cls()
        self.index, self.attention = index, attention
        self.head_dim, self.scaling = attention.head_dim, attention.scaling
        self.input_norm, self.post_norm = _norm(layer.input_layernorm), _norm(layer.post_attention_layernorm)
        self.q_norm, self.k_norm = _norm(attention.q_norm), _norm(attention.k_norm)
        self.q, self.k, self.v, self.o = (
            linear_parameters(module)
            for module in (attention.q_proj, attention.k_proj, attention.v_proj, attention.o_proj)
        )
        self.gate, self.up, self.down = (linear_parameters(m) for m in (mlp.gate_proj, mlp.up_proj, mlp.down_proj))
        parts = (self.input_norm, self.post_norm, self.q_norm, self.k_norm, self.q, self.k, self.v, self.o)
        if any(part is None for part in (*parts, self.gate, self.up, self.down)):
            return None
        self.qk_norm, self.query_heads = None, attention.q_proj.out_features // self.head_dim
        q_norm, k_norm = attention.q_norm, attention.k_norm
        if (
            self.q_norm[2] is not None
            and q_norm.variance_epsilon == k_norm.variance_epsilon
            and q_norm.weight.shape == k_norm.weight.shape == (self.head_dim,)
            and q_norm.weight.dtype == k_norm.weight.dtype
        ):
            # CPU: the query and key heads are normed (and rotated) as one tensor. An RMSNorm reduces each head on
            # its own (a contiguous inner reduction, the same per row whatever the number of rows) and the rest is
            # elementwise, so each head gets the values it gets alone.
            key_heads = attention.k_proj.out_features // self.head_dim
            weight = torch.cat(
                (q_norm.weight.detach().expand(self.query_heads, -1), k_norm.weight.detach().expand(key_heads, -1))
            )
            self.qk_norm = (weight[:, None, :], *self.q_norm[1:])  # for [B, heads, 1, head_dim]
        act = mlp.act_fn
        if is_plain(act, SiLUActivation) or is_plain(act, nn.SiLU):
            act = nn.functional.silu  # what their `forward` calls
        elif isinstance(act, nn.Module) and not is_plain(act, type(act)):
            return None
        self.act = act
        # What `sdpa_attention_forward` does without a mask: `enable_gqa=True` for grouped heads where
        # `use_gqa_in_sdpa` allows it (CPU, CUDA), nothing for ungrouped ones. Other cases call the function itself.
        self.attend = ATTENTION_FUNCTIONS[implementation]
        self.sdpa_kwargs = None
        if implementation == "sdpa":
            if attention.num_key_value_groups == 1:
                self.sdpa_kwargs = {}
            elif use_gqa_in_sdpa(None, probe := torch.empty(1, 1, 1, self.head_dim, device="meta"), probe):
                self.sdpa_kwargs = {"enable_gqa": True}
        return self


class LeanDecoder:
    """One new position through a `Qwen3Model`'s layers and final norm, for unpadded rows (see the module docstring).

    Built per `generate` call (it holds references to the parameters, nothing is stored on the model).
    """

    def __init__(self, model: Qwen3Model, layers: list[_Layer]):
        self.layers = layers
        self.norm = _norm(model.norm)
        rotary = model.rotary_emb
        self.inv_freq, self.attention_scaling = rotary.inv_freq, rotary.attention_scaling

    @classmethod
    def build(cls, model: nn.Module) -> "LeanDecoder | None":
        """A lean decoder for `model` (a `Qwen3Model`), or None where the module path must be used."""
        config = getattr(model, "config", None)
        implementation = getattr(config, "_attn_implementation", None)
        if (
            not is_plain(model, Qwen3Model)
            or implementation not in ATTENTION_FUNCTIONS
            or model.has_sliding_layers
            or getattr(model, "gradient_checkpointing", False)
            or config.output_attentions
            or config.output_hidden_states
            or torch.compiler.is_compiling()
            or global_hooks_registered()
            or not is_plain(model.rotary_emb, Qwen3RotaryEmbedding)
            or model.rotary_emb.rope_type != "default"
            or _norm(model.norm) is None
            or len(model.layers) != config.num_hidden_layers
        ):
            return None
        layers = [_Layer.build(layer, index, implementation) for index, layer in enumerate(model.layers)]
        if any(layer is None for layer in layers):
            return None
        return cls(model, layers)

    def rotary(self, hidden: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`Qwen3RotaryEmbedding.forward` (default RoPE), unsqueezed for the [B, heads, S, head_dim] layout: cos, and
        sin with its first half negated (for `_rotate`). The scaling is skipped when it is 1 (`x * 1.0` is `x`)."""
        inv_freq = self.inv_freq.to(device=hidden.device, dtype=torch.float)
        freqs = position_ids[..., None].float() * inv_freq
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos(), emb.sin()
        if self.attention_scaling != 1.0:
            cos, sin = cos * self.attention_scaling, sin * self.attention_scaling
        cos, sin = cos.to(dtype=hidden.dtype).unsqueeze(1), sin.to(dtype=hidden.dtype).unsqueeze(1)
        half = sin.shape[-1] // 2
        return cos, torch.cat((-sin[..., :half], sin[..., half:]), dim=-1)

    def __call__(self, inputs_embeds: torch.Tensor, position_ids: torch.Tensor, cache: DynamicCache) -> torch.Tensor:
        """inputs_embeds [B, 1, hidden] at `position_ids` [B or 1, 1] → the final normed hidden states [B, 1, hidden];
        the layers' keys and values are appended to `cache`.

        The position axis (of length 1) is left out inside: states are [B, hidden], heads [B, heads, 1, head_dim]
        directly. A linear map of [B, 1, n] is the matrix product of its [B, n] view, and the head tensors hold the
        same elements in the same order as the module path's transposed views, so this changes no value.
        """
        cos, signed_sin = self.rotary(inputs_embeds, position_ids)
        batch = inputs_embeds.shape[0]
        hidden = inputs_embeds.reshape(batch, -1)
        linear, rms_norm, rotate, attend = nn.functional.linear, _rms_norm, _rotate, self._attend
        update = cache.update
        for layer in self.layers:
            heads = (batch, -1, 1, layer.head_dim)
            normed = rms_norm(hidden, *layer.input_norm)
            if layer.qk_norm is not None:
                states = torch.cat((linear(normed, *layer.q), linear(normed, *layer.k)), dim=-1).view(heads)
                states = rotate(rms_norm(states, *layer.qk_norm), cos, signed_sin)
                query, key = states[:, : layer.query_heads], states[:, layer.query_heads :]
            else:
                query = rotate(rms_norm(linear(normed, *layer.q).view(heads), *layer.q_norm), cos, signed_sin)
                key = rotate(rms_norm(linear(normed, *layer.k).view(heads), *layer.k_norm), cos, signed_sin)
            key, value = update(key, linear(normed, *layer.v).view(heads), layer.index)
            hidden = linear(attend(layer, query, key, value).reshape(batch, -1), *layer.o).add_(hidden)
            normed = rms_norm(hidden, *layer.post_norm)
            gated = layer.act(linear(normed, *layer.gate)) * linear(normed, *layer.up)
            hidden = linear(gated, *layer.down).add_(hidden)
        return rms_norm(hidden, *self.norm).view(batch, 1, -1)

    @staticmethod
    def _attend(layer: _Layer, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        """The attention output as the layer's attention function computes it without a mask: [B, heads, 1, head_dim]
        from SDPA directly, [B, 1, heads, head_dim] from the function (its transpose; both flatten alike)."""
        if layer.sdpa_kwargs is None:
            attend: Callable = layer.attend
            return attend(layer.attention, query, key, value, None, dropout=0.0, scaling=layer.scaling)[0]
        return nn.functional.scaled_dot_product_attention(
            query, key, value, attn_mask=None, dropout_p=0.0, scale=layer.scaling, is_causal=False, **layer.sdpa_kwargs
        )


class LeanLanguageModelStep:
    """The decoding step of `FunAudioChatForConditionalGeneration.forward` through [`LeanDecoder`]: one position given
    as `inputs_embeds`, no mask, a cache, no speech head, as `joint_sample` calls it after the prefill."""

    INPUTS = frozenset(
        {"input_ids", "inputs_embeds", "cache", "position_ids", "use_cache", "logits_to_keep", "output_speech_logits"}
    )

    def __init__(self, decoder: LeanDecoder, lm_head: tuple[torch.Tensor, torch.Tensor | None]):
        self.decoder, self.lm_head = decoder, lm_head

    @classmethod
    def build(cls, model: nn.Module) -> "LeanLanguageModelStep | None":
        """For a `FunAudioChatForConditionalGeneration` (its Qwen3 `language_model`), or None."""
        language_model = getattr(model, "language_model", None)
        if (
            language_model is None
            or not is_plain(model, type(model))
            or not is_plain(language_model, type(language_model))
        ):
            return None
        decoder = LeanDecoder.build(getattr(language_model, "model", None))
        lm_head = linear_parameters(language_model.lm_head)
        if decoder is None or lm_head is None:
            return None
        return cls(decoder, lm_head)

    def __call__(self, model_inputs: dict) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(text logits, last hidden state) of `model(**model_inputs)`, its keys and values appended to the cache; or
        None, without side effects, when these inputs need the module path."""
        embeds, cache = model_inputs.get("inputs_embeds"), model_inputs.get("cache")
        position_ids = model_inputs.get("position_ids")
        if (
            not self.INPUTS.issuperset(model_inputs)
            or model_inputs.get("input_ids") is not None
            or model_inputs.get("use_cache") is not True
            or model_inputs.get("output_speech_logits") is not False
            or embeds is None
            or embeds.dim() != 3
            or embeds.shape[1] != 1
            or not lean_cache(cache)
            or (position_ids is not None and (position_ids.dim() != 2 or position_ids.shape[-1] != 1))
        ):
            return None
        if position_ids is None:  # as `Qwen3Model.forward`
            position_ids = (torch.arange(1, device=embeds.device) + cache.get_seq_length()).unsqueeze(0)
        hidden = self.decoder(embeds, position_ids, cache)
        logits_to_keep = model_inputs.get("logits_to_keep", 0)
        kept = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        return nn.functional.linear(hidden[:, kept], *self.lm_head), hidden


__all__ = [
    "LeanDecoder",
    "LeanLanguageModelStep",
    "global_hooks_registered",
    "is_plain",
    "lean_cache",
    "linear_parameters",
]
