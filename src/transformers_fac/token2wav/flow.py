"""The CosyVoice3 flow (speech codes -> 80-bin mel at 50 Hz): code embedding, pre-look-ahead layer, conditional flow
matching sampled with a fixed-step Euler solver and classifier-free guidance over the DiT estimator.

Parameter names follow the reference `CausalMaskedDiffWithDiT`, so that `flow.pt` loads strictly. The fixed noise is not
a parameter: the caller passes it (see `FixedNoise`).
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .configuration_token2wav import FunAudioChatToken2WavConfig
from .flow_dit import DiT, PrefixState


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
        prefix: list[PrefixState] | None = None,
        return_prefix: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, list[PrefixState]]:
        """mu, cond, noise [1, C, M]; spks [1, C] -> mel [1, C, M] (float32).

        `prefix` (one `PrefixState` per Euler step): these frames follow a fixed prefix sampled before;
        `return_prefix=True` also returns the per-step states of these frames (see `DiT.forward`)."""
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
        states = []
        for step, dt in enumerate(steps):
            modulations = [tuple(m[step : step + 1] for m in block) for block in all_modulations]
            velocity = self.estimator(
                torch.cat([x, x]),
                mu_in,
                None,
                spks_in,
                cond_in,
                chunk_causal=chunk_causal,
                modulations=modulations,
                prefix=prefix[step] if prefix is not None else None,
                return_prefix=return_prefix,
            )
            if return_prefix:
                velocity, state = velocity
                states.append(state)
            conditional, unconditional = velocity.float().chunk(2)
            x = x + dt * ((1.0 + self.cfg_rate) * conditional - self.cfg_rate * unconditional)
        return (x, states) if return_prefix else x


@dataclass
class PromptPrefix:
    """A voice prompt sampled once for a stream: its codes and the DiT's per-Euler-step `PrefixState`s."""

    codes: torch.Tensor
    steps: list[PrefixState]

    @property
    def frames(self) -> int:
        return self.steps[0].length if self.steps else 0


class CausalMaskedDiffWithDiT(nn.Module):
    """Speech codes [1, N] + speaker x-vector [1, 192] -> mel [1, 80, 2N] (or 2(N - 3) when not finalising), optionally
    after a voice prompt (its codes and mel condition the flow as a prefix; its frames are not returned)."""

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

    def speaker(self, speaker_embedding: torch.Tensor) -> torch.Tensor:
        """x-vector [1, D] -> the DiT's speaker condition [1, C] (L2-normalised, projected)."""
        weight = self.spk_embed_affine_layer.weight
        return self.spk_embed_affine_layer(F.normalize(speaker_embedding.to(weight.dtype), dim=1))

    def code_condition(self, codes: torch.Tensor, finalize: bool) -> torch.Tensor:
        """codes [1, N] -> mu [1, C, 2N] (or 2(N - 3) when not finalising)."""
        h = self.pre_lookahead_layer(self.input_embedding(codes.clamp(min=0)), finalize=finalize)
        return h.repeat_interleave(self.token_mel_ratio, dim=1).transpose(1, 2)

    def forward(
        self,
        codes: torch.Tensor,
        speaker_embedding: torch.Tensor,
        noise: torch.Tensor,
        finalize: bool = True,
        chunk_causal: bool = False,
        prompt_codes: torch.Tensor | None = None,
        prompt_mel: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """codes [1, N] (valid ids), speaker_embedding [1, D], noise [1, C, >= 2L + M] -> mel [1, C, M], float32.

        With a prompt (codes [1, L], mel [1, 2L, C]) the flow runs on prompt codes ++ codes, the prompt mel fills the
        first 2L frames of the condition (zeros after), the noise covers the whole length, and the first 2L output
        frames are dropped (the reference's zero-shot path)."""
        prompt_length = 0 if prompt_codes is None else prompt_codes.shape[1]
        if prompt_length:
            codes = torch.cat([prompt_codes.to(codes.device), codes], dim=1)
        mu = self.code_condition(codes, finalize)
        cond = torch.zeros_like(mu)
        prompt_frames = self.token_mel_ratio * prompt_length
        if prompt_length:
            cond[..., :prompt_frames] = prompt_mel.to(cond).transpose(1, 2)
        mel = self.decoder(mu, self.speaker(speaker_embedding), cond, noise[..., : mu.shape[-1]], chunk_causal)
        return mel[..., prompt_frames:]

    def prompt_prefix(
        self,
        prompt_codes: torch.Tensor,
        prompt_mel: torch.Tensor,
        following_codes: torch.Tensor,
        speaker_embedding: torch.Tensor,
        noise: torch.Tensor,
    ) -> PromptPrefix:
        """Sample the prompt frames alone (they attend only to each other) and keep what later frames read of them.

        The prompt's last codes look ahead into the codes that follow it, as in the offline decode: `following_codes`
        (the first `look_ahead` codes of the reply; fewer are padded with zeros like a final call)."""
        following = following_codes[:, : self.look_ahead].to(prompt_codes.device)
        codes = torch.cat([prompt_codes, following], dim=1)
        mu = self.code_condition(codes, finalize=following.shape[1] < self.look_ahead)
        frames = self.token_mel_ratio * prompt_codes.shape[1]
        mu = mu[..., :frames]
        cond = prompt_mel.to(mu).transpose(1, 2)
        _, steps = self.decoder(mu, self.speaker(speaker_embedding), cond, noise[..., :frames], return_prefix=True)
        return PromptPrefix(codes=prompt_codes, steps=steps)

    def forward_after_prefix(
        self,
        codes: torch.Tensor,
        speaker_embedding: torch.Tensor,
        noise: torch.Tensor,
        prefix: PromptPrefix,
        finalize: bool = True,
        follows_prompt: bool = False,
    ) -> torch.Tensor:
        """Like `forward` with a prompt, but the prompt's frames come from `prefix` (not recomputed) and these codes'
        frames attend to them. `follows_prompt`: the codes come right after the prompt (the reply's start), so the
        pre-look-ahead layer reads the prompt's last codes as left context."""
        if follows_prompt:
            context = prefix.codes.shape[1]
            mu = self.code_condition(torch.cat([prefix.codes.to(codes.device), codes], dim=1), finalize)
            mu = mu[..., self.token_mel_ratio * context :]
        else:
            mu = self.code_condition(codes, finalize)
        cond = torch.zeros_like(mu)
        return self.decoder(mu, self.speaker(speaker_embedding), cond, noise[..., : mu.shape[-1]], prefix=prefix.steps)
