"""One switch for quantized loading: a name (`int8`, `int4`, `nf4`, `fp8`) → a transformers quantization config.

`quantization_config(name, device)` returns transformers' own config (`TorchAoConfig` or `BitsAndBytesConfig`), to
pass as `from_pretrained(..., quantization_config=...)`; `fac-chat`, `fac-serve` and the Space use it for their
`--quantize` setting. Fun-Audio-Chat's `from_pretrained` fills in the modules to leave unquantized (the model class's
`quantization_skip_modules`: everything but the Qwen3 backbone's linear layers) with `with_skip_modules`, so a config
from here or one built by hand quantizes the same parts.

| name | backend | what | devices |
|---|---|---|---|
| `int8` | torchao | int8 weight-only (per channel); works with `torch.compile` | CPU, CUDA |
| `int4` | torchao | int4 weight-only (groups of 128, tinygemm layout); needs `dtype=torch.bfloat16` | CUDA only |
| `nf4` | bitsandbytes | 4-bit NormalFloat, double quantization, bf16 compute (QLoRA's format) | CUDA, CPU |
| `fp8` | torchao | float8 (e4m3) weight-only, per channel | CUDA with compute capability ≥ 8.9, CPU |

The backends are imported only here, when a config is built (the `quantize` extra installs them).
"""

import copy
from typing import Any

QUANTIZATIONS = ("int8", "int4", "nf4", "fp8")
BACKENDS = {"int8": "torchao", "int4": "torchao", "nf4": "bitsandbytes", "fp8": "torchao"}
INT4_GROUP_SIZE = 128
FP8_MIN_CAPABILITY = (8, 9)  # Ada / Hopper and newer have float8 units


def quantization_config(name: str, device: Any = "cpu") -> Any:
    """Transformers' quantization config for `name` on `device` (a device or its name), or a `ValueError` that says
    why it cannot run there; an `ImportError` names the missing backend and the extra that installs it.

    Example:
        >>> config = quantization_config("int8", "cpu")  # doctest: +SKIP
        >>> model = AutoModelForMultimodalLM.from_pretrained(model_id, quantization_config=config)  # doctest: +SKIP
    """
    if name not in QUANTIZATIONS:
        raise ValueError(f"Unknown quantization {name!r}; choose one of {', '.join(QUANTIZATIONS)}.")
    device_type = _device_type(device)
    _check_device(name, device_type, device)
    if BACKENDS[name] == "bitsandbytes":
        return _bitsandbytes_config(device_type)
    torchao = _import_backend("torchao.quantization", name)
    from transformers import TorchAoConfig

    if name == "int8":
        return TorchAoConfig(torchao.Int8WeightOnlyConfig())
    if name == "int4":
        return TorchAoConfig(
            torchao.Int4WeightOnlyConfig(group_size=INT4_GROUP_SIZE, int4_packing_format="tile_packed_to_4d")
        )
    return TorchAoConfig(torchao.Float8WeightOnlyConfig())


def with_skip_modules(config: Any, modules: list[str]) -> Any:
    """A copy of `config` whose list of modules to leave unquantized is `modules`, when the config has none of its
    own (a list given by the caller wins); other configs, and dicts, are returned as they are.

    Example:
        >>> from transformers import BitsAndBytesConfig
        >>> with_skip_modules(BitsAndBytesConfig(load_in_8bit=True), ["lm_head"]).llm_int8_skip_modules
        ['lm_head']
    """
    for attribute in ("llm_int8_skip_modules", "modules_to_not_convert"):  # bitsandbytes; torchao and most others
        if hasattr(config, attribute) and not isinstance(config, dict):
            if getattr(config, attribute) is not None:
                return config
            config = copy.deepcopy(config)
            setattr(config, attribute, list(modules))
            return config
    return config


def planned_quantized_parameters(model: Any, config: Any) -> list[str]:
    """The parameters of `model` that loading with `config` quantizes, as transformers' quantizer decides them, without
    running any quantization kernel (so also for configs whose kernels this machine lacks, e.g. int4 on a CPU).
    `model` is changed (bitsandbytes swaps its linear layers): pass a throwaway one, built on the meta device; `config`
    is taken as it is (fill its skip list first with `with_skip_modules`).

    Example:
        >>> with torch.device("meta"):  # doctest: +SKIP
        ...     model = FunAudioChatForConditionalGeneration(config)
        >>> planned_quantized_parameters(model, with_skip_modules(int4, model.modules_not_quantized()))  # doctest: +SKIP
        ['language_model.model.layers.0.self_attn.q_proj.weight', ...]
    """
    from transformers.quantizers import AutoHfQuantizer

    quantizer = AutoHfQuantizer.from_config(config, pre_quantized=False)
    quantizer.preprocess_model(model=model, dtype=None, device_map=None, checkpoint_files=None)
    return [name for name, _ in model.named_parameters() if quantizer.param_needs_quantization(model, name)]


def _device_type(device: Any) -> str:
    import torch

    return torch.device(device).type


def _check_device(name: str, device_type: str, device: Any) -> None:
    """Cheap checks before anything is imported or loaded."""
    if name == "int4" and device_type != "cuda":
        raise ValueError(
            "int4 (torchao int4 weight-only) runs on CUDA GPUs only (its kernels are CUDA's); on "
            f"{device_type} use nf4 (bitsandbytes 4-bit) or int8."
        )
    if name == "fp8" and device_type == "cuda":
        import torch

        capability = torch.cuda.get_device_capability(device)
        if capability < FP8_MIN_CAPABILITY:
            raise ValueError(
                f"fp8 needs a GPU with float8 support (compute capability >= 8.9, e.g. L4, RTX 4090, H100); this "
                f"one has {capability[0]}.{capability[1]}: use int8 or nf4."
            )
    if name in ("int8", "fp8") and device_type not in ("cpu", "cuda"):
        raise ValueError(f"{name} (torchao) is supported here on cpu and cuda, not {device_type}.")


def _bitsandbytes_config(device_type: str) -> Any:
    import torch
    from transformers import BitsAndBytesConfig

    bitsandbytes = _import_backend("bitsandbytes", "nf4")
    supported = getattr(bitsandbytes, "supported_torch_devices", ())
    if device_type not in supported:
        raise ValueError(f"nf4 (bitsandbytes) supports {sorted(supported)} here, not {device_type}.")
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )


def _import_backend(module: str, name: str):
    from .optional_imports import import_extra

    return import_extra(module, "quantize", f"Quantization {name!r}", package=BACKENDS[name])


__all__ = ["BACKENDS", "QUANTIZATIONS", "planned_quantized_parameters", "quantization_config", "with_skip_modules"]
