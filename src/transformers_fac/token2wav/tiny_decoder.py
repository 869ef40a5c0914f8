"""A tiny random CosyVoice3 decoder in the release layout, for tests and the tiny end-to-end checkpoint."""

from os import PathLike
from pathlib import Path

import torch

from .configuration_token2wav import FunAudioChatToken2WavConfig
from .cosyvoice_loading import save_cosyvoice_dir
from .modeling_token2wav import FunAudioChatToken2Wav

TINY_SIZES = {
    "pre_lookahead_channels": 64,
    "dit_dim": 64,
    "dit_depth": 2,
    "dit_heads": 4,
    "dit_head_dim": 16,
    "hift_base_channels": 32,
    "f0_cond_channels": 32,
}


def build_tiny_cosyvoice_dir(
    out_dir: str | PathLike,
    seed: int = 0,
    weight_norm_style: str = "parametrizations",
    generator_prefix: bool = False,
    f0_bias: float = 150.0,
    **sizes,
) -> Path:
    """Write a tiny random decoder in the CosyVoice3 release layout (for tests and tiny end-to-end checkpoints).

    `sizes` override the tiny defaults (`TINY_SIZES`) or any other config field. Weights are random (seeded by `seed`,
    scaled down so the flow stays stable), the f0 classifier bias is set to `f0_bias` Hz so frames are voiced, and the
    log-magnitude rows of the vocoder's last conv are shrunk (x 0.1, bias -0.2) so that the output sits near -20 dBFS
    RMS instead of clipping (the random decoder's noise is not a full-scale blast).
    """
    config = FunAudioChatToken2WavConfig(**{**TINY_SIZES, **sizes})
    generator = torch.Generator().manual_seed(seed)
    model = FunAudioChatToken2Wav(config)
    with torch.no_grad():
        for name, tensor in model.state_dict(keep_vars=True).items():
            if name.endswith("inv_freq"):
                continue
            if name.endswith("alpha"):
                tensor.copy_(1.0 + 0.1 * torch.rand(tensor.shape, generator=generator))
            elif name.endswith("original0"):
                continue
            else:
                fan_in = tensor[0].numel() if tensor.dim() > 1 else tensor.numel()
                tensor.copy_(torch.randn(tensor.shape, generator=generator) / max(fan_in, 1) ** 0.5)
        for module in model.hift.modules():
            if hasattr(module, "parametrizations"):
                original = module.parametrizations.weight
                original.original0.copy_(original.original1.norm(dim=(1, 2), keepdim=True))
        model.flow.input_embedding.weight.mul_(float(config.token_embedding_dim) ** 0.5)
        model.hift.f0_predictor.classifier.bias.fill_(f0_bias)
        bins = config.istft_n_fft // 2 + 1  # conv_post's first `bins` outputs are log-magnitudes, then phases
        model.hift.conv_post.parametrizations.weight.original0[:bins].mul_(0.1)
        model.hift.conv_post.bias[:bins].fill_(-0.2)
    return save_cosyvoice_dir(model, out_dir, weight_norm_style=weight_norm_style, generator_prefix=generator_prefix)


__all__ = ["TINY_SIZES", "build_tiny_cosyvoice_dir"]
