"""LoRA for Fun-Audio-Chat with PEFT: which modules get adapters, and applying them.

PEFT has no default targets for the custom `funaudiochat` model type, and a plain list such as
`["q_proj", "v_proj"]` would also hit the audio encoder (`continuous_audio_tower.*.q_proj`) and the speech head's
transformer (`audio_invert_tower.crq_transformer.*`). `lora_target_modules` builds a regex (PEFT `re.fullmatch`es a
string on full module names) that selects exactly the wanted parts:

- `"llm"` (default): the 7 projections of every LLM layer, `language_model.model.layers.N.self_attn.{q,k,v,o}_proj`
  and `language_model.model.layers.N.mlp.{gate,up,down}_proj`;
- `"llm+speech_head"`: also the speech head: its transformer's 7 projections
  (`audio_invert_tower.crq_transformer.layers.N.…`) and its `pre_matching` / `input_matching` /
  `output_matching` projections (not its output layer, which is tied to the speech-code embedding).

Everything else (both audio encoders, embeddings, output layers) stays frozen.

Example:
    >>> import re
    >>> pattern = lora_target_modules("llm")
    >>> bool(re.fullmatch(pattern, "language_model.model.layers.3.mlp.down_proj"))
    True
    >>> bool(re.fullmatch(pattern, "continuous_audio_tower.layers.3.self_attn.q_proj"))
    False
"""

import os
import warnings
from typing import Any

TARGETS = ("llm", "llm+speech_head")

_PROJECTIONS = r"(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"
_LLM = r"language_model\.model\.layers\.\d+\." + _PROJECTIONS
_SPEECH_HEAD = (
    r"audio_invert_tower\.(crq_transformer\.layers\.\d+\." + _PROJECTIONS + r"|pre_matching|input_matching"
    r"|output_matching)"
)


def lora_target_modules(target: str = "llm") -> str:
    """The `target_modules` regex of `target` (`"llm"` or `"llm+speech_head"`)."""
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}.")
    parts = [_LLM] + ([_SPEECH_HEAD] if target == "llm+speech_head" else [])
    return "|".join(f"({part})" for part in parts)


def lora_config(
    target: str = "llm",
    r: int = 16,
    alpha: int = 32,
    dropout: float = 0.05,
    **kwargs: Any,
):
    """A `peft.LoraConfig` for Fun-Audio-Chat (`target`: `"llm"` or `"llm+speech_head"`, see the module docstring).

    Extra keyword arguments go to `LoraConfig` (`use_rslora`, `use_dora`, `layers_to_transform`, ...).
    """
    from peft import LoraConfig

    kwargs.setdefault("bias", "none")
    return LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=lora_target_modules(target), **kwargs
    )


def apply_lora(model, config=None, **config_kwargs):
    """Wrap `model` in a `peft.PeftModel` with `config` (default `lora_config(**config_kwargs)`).

    Only the adapters train; every base weight is frozen. A quantized model (QLoRA: `from_pretrained(...,
    quantization_config=...)`, e.g. nf4) first gets peft's usual k-bit preparation (`prepare_model_for_kbit_training`:
    the weights that were not quantized are kept in float32 for a stable training; gradient checkpointing is left to
    the `Trainer`'s arguments). The adapter records the base checkpoint as an absolute
    path when it was loaded from a local folder, so that `AutoModelForMultimodalLM.from_pretrained(adapter_dir)`
    (and a pipeline given the adapter folder) finds the base model from anywhere.
    """
    from peft import get_peft_model, prepare_model_for_kbit_training

    if getattr(model, "is_quantized", False):
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    name = getattr(model, "name_or_path", None) or ""
    if name and os.path.isdir(name):
        model.name_or_path = os.path.abspath(name)
    return get_peft_model(model, config if config is not None else lora_config(**config_kwargs))


def merge_lora(model):
    """`model.merge_and_unload()` for a Fun-Audio-Chat `PeftModel`, keeping the speech head's weight tie.

    PEFT's merge compares the LLM's input and output embeddings (untied in Fun-Audio-Chat) and then sets
    `config.tie_word_embeddings = False`; for this model that top-level flag ties the speech head's output layer to
    the speech-code embedding (`audio_invert_tower.lm_head.weight` = `audio_tower.embed_tokens.weight`), so the
    merged model would save an extra tensor and stop being loadable in the official layout. The flag is restored
    when the two weights are still one tensor (LoRA never adapts them).
    """
    config = model.get_base_model().config
    tied = getattr(config, "tie_word_embeddings", False)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Input and output embeddings are no longer tied")
        merged = model.merge_and_unload()
    head, embedding = _speech_head_tie(merged)
    if tied and head is not None and head.data_ptr() == embedding.data_ptr():
        merged.config.tie_word_embeddings = True
    elif tied and head is not None:
        warnings.warn("The speech head's output layer is no longer tied to the speech-code embedding.", stacklevel=2)
    return merged


def _speech_head_tie(model):
    head = getattr(getattr(model, "audio_invert_tower", None), "lm_head", None)
    embedding = getattr(getattr(model, "audio_tower", None), "embed_tokens", None)
    if head is None or embedding is None:
        return None, None
    return head.weight, embedding.weight


def adapted_modules(model) -> list[str]:
    """Names (in the base model) of the modules that carry a LoRA adapter, sorted."""
    names = []
    for name, module in model.named_modules():
        if hasattr(module, "lora_A") and len(getattr(module, "lora_A", {})):
            names.append(name.removeprefix("base_model.model."))
    return sorted(names)


__all__ = ["TARGETS", "adapted_modules", "apply_lora", "lora_config", "lora_target_modules", "merge_lora"]
