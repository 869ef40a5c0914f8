"""Loading the model `fac-eval` measures: a checkpoint (or `tiny`), optionally with a LoRA adapter merged in."""

import os
from typing import Any


def load_model(
    model: str,
    adapter: str | None = None,
    device: str | None = None,
    dtype: str | None = None,
    quantize: str | None = None,
) -> tuple[Any, Any]:
    """(model, processor) ready to generate. `model="tiny"` is the package's tiny random checkpoint; an adapter
    folder is merged into the base weights, and the voice saved next to it (if any) becomes the default voice;
    `quantize` loads the backbone quantized (the same switch as `fac-chat --quantize`).

    Example:
        >>> model, processor = load_model("tiny")  # doctest: +SKIP
    """
    import torch
    from transformers import AutoModelForMultimodalLM, AutoProcessor

    import transformers_fac  # noqa: F401  (registers the Auto classes)

    from ..quantization import quantization_config
    from ..tiny import tiny_checkpoint
    from ..token2wav_loading import saved_voice

    if adapter is not None and not os.path.isdir(adapter):
        raise FileNotFoundError(f"--adapter {adapter} is not a folder.")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu":
        torch.set_flush_denormal(True)  # float32 denormals make CPU matrix products far slower
    torch_dtype = getattr(torch, dtype) if dtype else (torch.bfloat16 if device.startswith("cuda") else torch.float32)
    quantization = quantization_config(quantize, device) if quantize else None
    path = tiny_checkpoint() if model == "tiny" else model
    processor = AutoProcessor.from_pretrained(path)
    loaded = AutoModelForMultimodalLM.from_pretrained(
        path, dtype=torch_dtype, device_map=device, quantization_config=quantization
    )
    if adapter is not None:
        from peft import PeftModel

        from ..training.lora import merge_lora

        voice = saved_voice(adapter)
        if voice is not None and loaded.token2wav is not None:
            loaded.token2wav.set_default_voice(voice)
        loaded = merge_lora(PeftModel.from_pretrained(loaded, adapter))
    return loaded.eval(), processor


__all__ = ["load_model"]
