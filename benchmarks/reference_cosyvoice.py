"""Build the *official* CosyVoice3 flow and HiFT modules from a CosyVoice checkout, for same-machine speed ratios.

Not a dependency of transformers-fac: pass `--reference-cosyvoice /path/to/CosyVoice` (commit 2db78e7, the one
Fun-Audio-Chat pins) to `bench_token2wav.py`; `x_transformers` (2.11.24) and `einops` must be importable. Modules the
flow/HiFT code imports but never uses at inference (loguru, einx, torchaudio, omegaconf, matcha's base class) are
replaced by small stand-ins when they are not installed.
"""

import importlib.machinery
import importlib.util
import sys
import types

import torch


def _stand_in(name: str, **attributes) -> None:
    if importlib.util.find_spec(name.split(".")[0]) is not None and name.count(".") == 0:
        return
    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, None)
    module.__dict__.update(attributes)
    sys.modules[name] = module


class _Config(dict):
    __getattr__ = dict.__getitem__


class _Logger:
    def __getattr__(self, name):
        return lambda *args, **kwargs: None


class _BaseCFM(torch.nn.Module):
    """Only the attributes the reference's ConditionalCFM reads from matcha's BASECFM."""

    def __init__(self, n_feats, cfm_params, n_spks=1, spk_emb_dim=128):
        super().__init__()
        self.n_feats, self.n_spks, self.spk_emb_dim = n_feats, n_spks, spk_emb_dim
        self.solver, self.sigma_min, self.estimator = cfm_params.solver, cfm_params.sigma_min, None


def load_reference(cosyvoice_dir: str, config):
    """(flow, hift) reference modules with the sizes of `config` (a FunAudioChatToken2WavConfig)."""
    sys.path.insert(0, cosyvoice_dir)
    _stand_in("loguru", logger=_Logger())
    _stand_in("einx")
    _stand_in("torchaudio")
    _stand_in("omegaconf", DictConfig=_Config)
    if importlib.util.find_spec("matcha") is None:
        for name in ("matcha", "matcha.models", "matcha.models.components"):
            _stand_in(name)
        _stand_in("matcha.models.components.flow_matching", BASECFM=_BaseCFM)
    from cosyvoice.flow.DiT.dit import DiT
    from cosyvoice.flow.flow import CausalMaskedDiffWithDiT
    from cosyvoice.flow.flow_matching import CausalConditionalCFM
    from cosyvoice.hifigan.f0_predictor import CausalConvRNNF0Predictor
    from cosyvoice.hifigan.generator import CausalHiFTGenerator
    from cosyvoice.transformer.upsample_encoder import PreLookaheadLayer

    c = config
    cfm_params = _Config(
        sigma_min=1e-6,
        solver="euler",
        t_scheduler=c.t_scheduler,
        training_cfg_rate=0.2,
        inference_cfg_rate=c.inference_cfg_rate,
        reg_loss_type="l1",
    )
    estimator = DiT(
        dim=c.dit_dim,
        depth=c.dit_depth,
        heads=c.dit_heads,
        dim_head=c.dit_head_dim,
        ff_mult=c.dit_ff_mult,
        mel_dim=c.mel_bins,
        mu_dim=c.dit_mu_dim,
        spk_dim=c.dit_speaker_dim,
        out_channels=c.mel_bins,
        static_chunk_size=c.static_chunk_size,
        num_decoding_left_chunks=-1,
    )
    flow = CausalMaskedDiffWithDiT(
        input_size=c.token_embedding_dim,
        output_size=c.mel_bins,
        spk_embed_dim=c.speaker_embedding_dim,
        output_type="mel",
        vocab_size=c.vocab_size,
        input_frame_rate=25,
        only_mask_loss=True,
        token_mel_ratio=c.token_mel_ratio,
        pre_lookahead_len=c.pre_lookahead_len,
        pre_lookahead_layer=PreLookaheadLayer(c.token_embedding_dim, c.pre_lookahead_channels, c.pre_lookahead_len),
        decoder=CausalConditionalCFM(3 * c.mel_bins, cfm_params, 1, c.dit_speaker_dim, estimator),
    )
    hift = CausalHiFTGenerator(
        in_channels=c.mel_bins,
        base_channels=c.hift_base_channels,
        nb_harmonics=c.nb_harmonics,
        sampling_rate=c.sampling_rate,
        nsf_alpha=c.nsf_alpha,
        nsf_sigma=c.nsf_sigma,
        nsf_voiced_threshold=c.nsf_voiced_threshold,
        upsample_rates=c.upsample_rates,
        upsample_kernel_sizes=c.upsample_kernel_sizes,
        istft_params={"n_fft": c.istft_n_fft, "hop_len": c.istft_hop_length},
        resblock_kernel_sizes=c.resblock_kernel_sizes,
        resblock_dilation_sizes=c.resblock_dilation_sizes,
        source_resblock_kernel_sizes=c.source_resblock_kernel_sizes,
        source_resblock_dilation_sizes=c.source_resblock_dilation_sizes,
        lrelu_slope=c.lrelu_slope,
        audio_limit=c.audio_limit,
        conv_pre_look_right=c.conv_pre_look_right,
        f0_predictor=CausalConvRNNF0Predictor(1, c.mel_bins, c.f0_cond_channels),
    )
    return flow.eval(), hift.eval()


def reference_token2mel(flow, codes: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
    """The official offline call: finalize=True, full attention, no prompt."""
    empty = torch.zeros(1, 0, dtype=torch.long)
    return flow.inference(
        codes,
        torch.tensor([codes.shape[1]]),
        empty,
        torch.tensor([0]),
        torch.zeros(1, 0, flow.output_size),
        torch.tensor([0]),
        embedding,
        streaming=False,
        finalize=True,
    )[0]
