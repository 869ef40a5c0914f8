"""One decoding step of Fun-Audio-Chat, and its compiled form.

A step feeds the LLM one position (the previous text token's embedding, averaged with the discrete encoding of the
previous speech group where a row is speaking) and runs the speech head's 5 sub-steps on the resulting hidden state
plus that token's embedding: text logits [B, vocab] and one group of speech codes [B, 5] come out. The text token
itself is chosen outside the step, by `generate`'s logits processors, stopping criteria and streamers, which may be
any user objects.

[`decode_step`] is one function for both paths:

- eager (the default `cache_implementation`, the reference): dynamic caches, transformers' logits processors for the
  codes ([`ProcessorChooser`]), called as plain Python;
- static (`generate(..., cache_implementation="static")`): preallocated caches and masks ([`StaticSequence`]) and
  the fixed-shape [`StaticSpeechSampler`], so that `torch.compile` captures the whole step as one graph without
  breaks ([`compiled_decode_step`]; on CUDA with `mode="reduce-overhead"`, CUDA graphs). Every state update happens
  in place on buffers whose addresses never change, and no value is read back to the host inside the step.

Compiling happens on the first static call of each new shape (batch size, cache bucket, model structure, dtype) and
takes tens of seconds on a CPU; later calls reuse the graph (see `FunAudioChatGenerationMixin.warm_up`).
"""

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from transformers import AttentionInterface, AttentionMaskInterface, CompileConfig

from .decoding_cache import DecodingSequence
from .modeling_speech_head import SpeechHeadState
from .speech_sampling import ProcessorChooser, StaticSpeechSampler


@dataclass
class DecodingState:
    """Everything a decoding step reads and updates: the LLM's sequence, and (audio mode) the speech head's state and
    the code chooser."""

    llm: DecodingSequence
    head: SpeechHeadState | None = None
    chooser: ProcessorChooser | StaticSpeechSampler | None = None


def decode_step(
    model,
    state: DecodingState,
    tokens: torch.Tensor,
    group: torch.Tensor,
    fuse: torch.Tensor,
    speech: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One LLM position and (when `speech`) one group of speech codes.

    Args:
        model: a [`FunAudioChatForConditionalGeneration`].
        state: the call's decoding state (updated: caches, masks, positions, last code embedding).
        tokens: [B] the text token of the previous step (the LLM input).
        group: [B, 5] the last appended speech group (averaged into the LLM input where `fuse`).
        fuse: [B] rows whose input is fused with `group` (speaking rows that appended a group at the previous step).
        speech: run the speech head (audio mode, while some row may still speak).

    Returns:
        Text logits [B, vocab] of the new position and its speech codes [B, 5] (None without `speech`).
    """
    text_embeds = model.get_input_embeddings()(tokens)[:, None, :]
    inputs_embeds = text_embeds
    if state.head is not None:
        audio_embeds = model.audio_tower(group).to(text_embeds.dtype)
        inputs_embeds = torch.where(fuse[:, None, None], (text_embeds + audio_embeds) / 2, text_embeds)
    mask, positions = state.llm.advance(None, 1)
    outputs = model(
        inputs_embeds=inputs_embeds,
        attention_mask=mask,
        position_ids=positions,
        cache=state.llm.cache,
        use_cache=True,
        output_speech_logits=False,
        logits_to_keep=1,
    )
    logits = outputs.logits[:, -1]
    if not speech or state.head is None:
        return logits, None
    hidden = outputs.last_hidden_state
    codes = model.audio_invert_tower.generate_group(hidden + text_embeds.to(hidden.dtype), state.head, state.chooser)
    return logits, codes


def sdpa_decode_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """transformers' `sdpa` attention, except that one query position with grouped key/value heads attends without
    copying the keys and values per query head.

    For a single query, transformers' `sdpa` already does this in eager mode (the query heads of each key/value head
    become query rows sharing one mask row), but not while compiling, where it repeats the whole static cache once
    per group at every layer of every step. Everything else goes to `sdpa` unchanged.
    """
    groups = getattr(module, "num_key_value_groups", 1)
    if query.shape[2] != 1 or groups == 1 or kwargs.get("sliding_window") is not None or kwargs.get("is_causal"):
        return SDPA_ATTENTION(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
    batch, heads, _, dim = query.shape
    packed = query.reshape(batch, heads // groups, groups, dim)
    output = torch.nn.functional.scaled_dot_product_attention(
        packed, key, value, attn_mask=attention_mask, dropout_p=dropout, scale=scaling
    )
    return output.reshape(batch, heads, 1, dim).transpose(1, 2).contiguous(), None


SDPA_ATTENTION = AttentionInterface()["sdpa"]
DECODE_ATTENTION = "fac_sdpa_decode"
AttentionInterface.register(DECODE_ATTENTION, sdpa_decode_attention)
AttentionMaskInterface.register(DECODE_ATTENTION, AttentionMaskInterface()["sdpa"])  # the masks of `sdpa`


@contextmanager
def decode_attention(model) -> Iterator[None]:
    """While static decoding runs, the LLM and the speech head's transformer use [`sdpa_decode_attention`] where they
    use `sdpa` (switched back afterwards, as `generate` switches MoE experts kernels for decoding)."""
    stacks = [model.language_model]
    if model.audio_invert_tower is not None:
        stacks.append(model.audio_invert_tower.crq_transformer)
    switched = [stack for stack in stacks if stack.config._attn_implementation == "sdpa"]
    for stack in switched:
        stack.set_attn_implementation(DECODE_ATTENTION)
    try:
        yield
    finally:
        for stack in switched:
            stack.set_attn_implementation("sdpa")


def default_compile_config(device: torch.device) -> CompileConfig:
    """Whole-graph capture; CUDA graphs on CUDA (`mode="reduce-overhead"`), inductor's default mode elsewhere."""
    return CompileConfig(fullgraph=True, mode="reduce-overhead" if device.type == "cuda" else "default")


def compiled_decode_step(
    compile_config: CompileConfig | None, device: torch.device, step: Callable | None = None
) -> Callable:
    """[`decode_step`] (or `step`, a function that calls it) compiled with `compile_config` (default:
    [`default_compile_config`]).

    One compiled function per step function and configuration, shared by every call and every model: `torch.compile`
    keeps its graphs per shape and model structure and compiles a new one when they change. `torch.compile` limits the
    graphs of one function (`recompile_limit`), so callers with shapes of their own (the reply engine's slots) compile
    a function of their own.
    """
    step = step or decode_step
    options = (compile_config or default_compile_config(device)).to_dict()
    key = f"{step.__module__}.{step.__qualname__}:" + json.dumps(options, sort_keys=True, default=repr)
    with _COMPILED_LOCK:
        if key not in _COMPILED_STEPS:
            _COMPILED_STEPS[key] = torch.compile(step, **options)
        return _COMPILED_STEPS[key]


# A cache of compiled code (step function and compile options -> compiled step), not of any model or call state.
_COMPILED_STEPS: dict[str, Callable] = {}
_COMPILED_LOCK = threading.Lock()


__all__ = [
    "DecodingState",
    "compiled_decode_step",
    "decode_attention",
    "decode_step",
    "default_compile_config",
    "sdpa_decode_attention",
]
