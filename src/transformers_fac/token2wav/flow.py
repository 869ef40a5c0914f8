"""The CosyVoice3 flow (speech codes -> 80-bin mel at 50 Hz): code embedding, pre-look-ahead layer, conditional flow
matching sampled with a fixed-step Euler solver and classifier-free guidance over the DiT estimator.

Parameter names follow the reference `CausalMaskedDiffWithDiT`, so that `flow.pt` loads strictly. The fixed noise is not
a parameter: the caller passes it (see `FixedNoise`).
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from .configuration_token2wav import FunAudioChatToken2WavConfig
from .flow_dit import DiT


class PreLookaheadLayer(nn.Module):
    """Residual pair of convs over the code embeddings: conv1 reads `look_ahead` future codes, conv2 is causal (k=3).

    `finalize=True` pads the future with zeros (output length N); `finalize=False` uses the last `look_ahead` codes as
    context only (output length N - look_ahead).
    """

    def __init__(self, channels: int, hidden: int, look_ahead: int):
        super().__init__()
        self.look_ahead = look_ahead
        self.conv1 = nn.Conv1d(channels, hidden, look_ahead + 1)
        self.conv2 = nn.Conv1d(hidden, channels, 3)

    def forward(self, x: torch.Tensor, finalize: bool = True) -> torch.Tensor:
        """x [B, N, C] -> [B, N or N - look_ahead, C]."""
        h = x.transpose(1, 2)
        if finalize:
            h = F.pad(h, (0, self.look_ahead))
        else:
            x = x[:, : x.shape[1] - self.look_ahead]
        h = F.leaky_relu(self.conv1(h))
        h = self.conv2(F.pad(h, (self.conv2.kernel_size[0] - 1, 0)))
        return h.transpose(1, 2) + x


class CausalConditionalCFM(nn.Module):
    """Euler sampler of the flow ODE from the given noise to a mel, with classifier-free guidance (the unconditional
    row has zero mu, speaker and cond)."""

    def __init__(self, config: FunAudioChatToken2WavConfig):
        super().__init__()
        self.n_timesteps = config.n_timesteps
        self.t_scheduler = config.t_scheduler
        self.cfg_rate = config.inference_cfg_rate
        self.estimator = DiT(config)

    def time_grid(self, device: torch.device) -> torch.Tensor:
        """The `n_timesteps + 1` times from 0 to 1 (cosine: `1 - cos(pi / 2 * i / n)`, small steps first)."""
        t_span = torch.linspace(0, 1, self.n_timesteps + 1, device=device, dtype=torch.float32)
        if self.t_scheduler == "cosine":
            t_span = 1 - torch.cos(t_span * 0.5 * math.pi)
        return t_span

    def forward(
        self,
        mu: torch.Tensor,
        spks: torch.Tensor,
        cond: torch.Tensor,
        noise: torch.Tensor,
        chunk_causal: bool = False,
    ) -> torch.Tensor:
        """mu, cond, noise [1, C, M]; spks [1, C] -> mel [1, C, M] (float32)."""
        t_span = self.time_grid(mu.device)
        x = noise.float()
        zeros = torch.zeros_like
        mu_in, spks_in, cond_in = (
            torch.cat([mu, zeros(mu)]),
            torch.cat([spks, zeros(spks)]),
            torch.cat([cond, zeros(cond)]),
        )
        # time and step accumulate like the reference (t += dt; dt = t_span[i + 1] - t) for float parity
        times, steps = [t_span[0:1]], [t_span[1] - t_span[0]]
        for step in range(1, len(t_span) - 1):
            times.append(times[-1] + steps[-1])
            steps.append(t_span[step + 1] - times[-1])
        # both CFG rows share t: their time conditioning is computed once, for all steps
        all_modulations = self.estimator.time_modulations(torch.cat(times))
        for step, dt in enumerate(steps):
            modulations = [tuple(m[step : step + 1] for m in block) for block in all_modulations]
            velocity = self.estimator(
                torch.cat([x, x]), mu_in, None, spks_in, cond_in, chunk_causal=chunk_causal, modulations=modulations
            ).float()
            conditional, unconditional = velocity.chunk(2)
            x = x + dt * ((1.0 + self.cfg_rate) * conditional - self.cfg_rate * unconditional)
        return x


class CausalMaskedDiffWithDiT(nn.Module):
    """Speech codes [1, N] + speaker x-vector [1, 192] -> mel [1, 80, 2N] (or 2(N - 3) when not finalising)."""

    def __init__(self, config: FunAudioChatToken2WavConfig):
        super().__init__()
        self.token_mel_ratio = config.token_mel_ratio
        self.mel_bins = config.mel_bins
        self.input_embedding = nn.Embedding(config.vocab_size, config.token_embedding_dim)
        self.spk_embed_affine_layer = nn.Linear(config.speaker_embedding_dim, config.dit_speaker_dim)
        self.pre_lookahead_layer = PreLookaheadLayer(
            config.token_embedding_dim, config.pre_lookahead_channels, config.pre_lookahead_len
        )
        self.decoder = CausalConditionalCFM(config)

    @property
    def look_ahead(self) -> int:
        return self.pre_lookahead_layer.look_ahead

    def forward(
        self,
        codes: torch.Tensor,
        speaker_embedding: torch.Tensor,
        noise: torch.Tensor,
        finalize: bool = True,
        chunk_causal: bool = False,
    ) -> torch.Tensor:
        """codes [1, N] (valid ids), speaker_embedding [1, D], noise [1, C, >= M] -> mel [1, C, M], float32."""
        weight = self.spk_embed_affine_layer.weight
        spks = self.spk_embed_affine_layer(F.normalize(speaker_embedding.to(weight.dtype), dim=1))
        h = self.pre_lookahead_layer(self.input_embedding(codes.clamp(min=0)), finalize=finalize)
        mu = h.repeat_interleave(self.token_mel_ratio, dim=1).transpose(1, 2)
        cond = torch.zeros_like(mu)
        return self.decoder(mu, spks, cond, noise[..., : mu.shape[-1]], chunk_causal=chunk_causal)
