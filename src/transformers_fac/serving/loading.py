"""Loading the model, its processor and its speech decoder once, when a server (or a Ray replica) starts."""

import logging
import os
from dataclasses import dataclass
from typing import Any

from .settings import ServerSettings

logger = logging.getLogger("transformers_fac.serving")


@dataclass
class LoadedModel:
    """A model ready to serve: the model (decoder attached), its processor and the voices it offers."""

    model: Any
    processor: Any
    voices: list[str]

    @property
    def spoken(self) -> bool:
        """Whether the model can answer with audio (a speech head and a decoder)."""
        return getattr(self.model, "has_speech_head", False) and self.model.token2wav is not None


def load(settings: ServerSettings) -> LoadedModel:
    """Loads `settings.model` on its device; the decoder and its voices are loaded now rather than at the first reply.

    Example:
        >>> loaded = load(ServerSettings(model="tiny"))  # doctest: +SKIP
        >>> loaded.voices
        ['中文女', '中文男']
    """
    import torch
    from transformers import AutoModelForMultimodalLM, AutoProcessor

    import transformers_fac  # noqa: F401  (registers the Auto classes)
    from transformers_fac.quantization import quantization_config
    from transformers_fac.tiny import tiny_checkpoint

    device = settings.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu":
        torch.set_flush_denormal(True)  # float32 denormals make CPU matrix products up to ~60x slower
        torch.set_num_threads(settings.threads or max(1, (os.cpu_count() or 2) // 2))
    elif settings.threads:
        torch.set_num_threads(settings.threads)
    dtype = (
        getattr(torch, settings.dtype) if settings.dtype else (torch.bfloat16 if device == "cuda" else torch.float32)
    )
    quantization = quantization_config(settings.quantize, device) if settings.quantize else None
    path = tiny_checkpoint() if settings.model == "tiny" else settings.model
    logger.info("Loading %s on %s (%s)", settings.model, device, str(dtype).removeprefix("torch."))
    processor = AutoProcessor.from_pretrained(path)
    model = AutoModelForMultimodalLM.from_pretrained(
        path, dtype=dtype, device_map=device, token2wav=settings.token2wav, quantization_config=quantization
    ).eval()
    if settings.compile:
        compile_decoding(model, settings.max_new_tokens)
    voices = model.token2wav.voice_names if model.token2wav is not None else []
    return LoadedModel(model=model, processor=processor, voices=voices)


def compile_decoding(model: Any, max_new_tokens: int | None) -> None:
    """Makes `model` decode with static caches and the compiled step by default (its generation config): the
    server's reply engine then decodes fixed slots with one compiled step (`transformers_fac.engine.slots`), which
    `ServerRuntime.start` compiles before the first request."""
    model.generation_config.cache_implementation = "static"


__all__ = ["LoadedModel", "compile_decoding", "load"]
