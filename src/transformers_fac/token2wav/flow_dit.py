"""The DiT velocity estimator of the CosyVoice3 flow (F5-TTS style, adaptive LayerNorm, causal conv position embedding).

Parameter names follow the reference (`decoder.estimator.*` in `flow.pt`). Two details that silently ruin audio when
missed: the rotary embedding is applied to q/k *before* the head split with a rotary width of one head, so only the
first head's channels are rotated; and its channel pairs are interleaved (GPT-J style: channels 2i and 2i+1 rotate
together).
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .configuration_token2wav import FunAudioChatToken2WavConfig


class SinusoidalTimeEmbedding(nn.Module):
    """t in [0, 1] -> [sin, cos] features with frequencies exp(-i ln(1e4) / (half - 1)), times 1000."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.dim // 2
        freqs = torch.exp(torch.arange(half, device=t.device).float() * -(math.log(10000) / (half - 1)))
        args = 1000 * t[:, None] * freqs[None]
        return torch.cat([args.sin(), args.cos()], dim=-1)


class TimestepEmbedding(nn.Module):
    def __init__(self, dim: int, freq_dim: int):
        super().__init__()
        self.time_embed = SinusoidalTimeEmbedding(freq_dim)
        self.time_mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.time_mlp(self.time_embed(t).to(t.dtype))


class CausalConvPositionEmbedding(nn.Module):
    """Two grouped convs, each left-padded (causal) and followed by Mish."""

    def __init__(self, dim: int, kernel_size: int, groups: int):
        super().__init__()
        self.pad = kernel_size - 1
        self.conv1 = nn.Sequential(nn.Conv1d(dim, dim, kernel_size, groups=groups), nn.Mish())
        self.conv2 = nn.Sequential(nn.Conv1d(dim, dim, kernel_size, groups=groups), nn.Mish())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(F.pad(x.transpose(1, 2), (self.pad, 0)))
        x = self.conv2(F.pad(x, (self.pad, 0)))
        return x.transpose(1, 2)


class InputEmbedding(nn.Module):
    """Concatenate [x, cond, mu, speaker] along channels (this order), project, add the conv position embedding."""

    def __init__(self, config: FunAudioChatToken2WavConfig):
        super().__init__()
        in_dim = 2 * config.mel_bins + config.dit_mu_dim + config.dit_speaker_dim
        self.proj = nn.Linear(in_dim, config.dit_dim)
        self.conv_pos_embed = CausalConvPositionEmbedding(
            config.dit_dim, config.dit_conv_pos_kernel_size, config.dit_conv_pos_groups
        )

    @property
    def history_frames(self) -> int:
        """Past frames of projected input the (two causal convs of the) position embedding of a frame reads."""
        return 2 * self.conv_pos_embed.pad

    def project(self, x: torch.Tensor, cond: torch.Tensor, mu: torch.Tensor, spks: torch.Tensor) -> torch.Tensor:
        spks = spks[:, None, :].expand(-1, x.shape[1], -1)
        return self.proj(torch.cat([x, cond, mu, spks], dim=-1))

    def forward(self, projected: torch.Tensor, history: torch.Tensor | None = None) -> torch.Tensor:
        """Add the position embedding to projected frames [B, T, D]; `history` holds the projected frames just before
        them (at least `history_frames`), which the causal convolutions read instead of zero padding."""
        if history is None:
            return self.conv_pos_embed(projected) + projected
        position = self.conv_pos_embed(torch.cat([history, projected], dim=1))[:, history.shape[1] :]
        return position + projected


class RotaryEmbedding(nn.Module):
    """Rotary frequencies (persistent `inv_freq`, as in the checkpoint), each duplicated adjacently."""

    def __init__(self, dim: int, theta: float):
        super().__init__()
        self.register_buffer("inv_freq", self.default_inv_freq(dim, theta))

    @staticmethod
    def default_inv_freq(dim: int, theta: float) -> torch.Tensor:
        return 1.0 / (theta ** (torch.arange(0, dim, 2).float() / dim))

    def forward(self, seq_len: int, offset: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """(cos, sin) of positions offset .. offset + T - 1, each [T, dim], float32."""
        positions = torch.arange(offset, offset + seq_len, device=self.inv_freq.device).float()
        freqs = positions[:, None] * self.inv_freq.float()[None, :]
        freqs = torch.stack([freqs, freqs], dim=-1).flatten(-2)
        return freqs.cos(), freqs.sin()


def apply_partial_rotary_(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate, in place, the first `cos.shape[-1]` channels of x [B, T, D] (interleaved pairs, computed in float32);
    the other channels are left untouched."""
    width = cos.shape[-1]
    rotated = x[..., :width].float()
    pairs = rotated.unflatten(-1, (-1, 2))
    swapped = torch.stack([-pairs[..., 1], pairs[..., 0]], dim=-1).flatten(-2)
    x[..., :width] = (rotated * cos + swapped * sin).to(x.dtype)
    return x


Modulation = tuple[torch.Tensor, ...]


@dataclass
class PrefixState:
    """What later frames need of a fixed prefix of frames at one DiT call, when the prefix attends only to itself:
    the keys and values of every block ([B, P, heads * head_dim], rotary applied) and the last projected input frames
    ([B, <= history_frames, D]) that the causal position embedding of the next frames reads."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    history: torch.Tensor
    length: int


class AdaLayerNormZero(nn.Module):
    """SiLU(t) -> Linear -> (shift, scale, gate) for attention and for the feed-forward, in this order."""

    def __init__(self, dim: int):
        super().__init__()
        self.linear = nn.Linear(dim, 6 * dim)

    def forward(self, t: torch.Tensor) -> Modulation:
        return self.linear(F.silu(t))[:, None, :].chunk(6, dim=-1)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, head_dim: int):
        super().__init__()
        self.heads = heads
        self.head_dim = head_dim
        inner = heads * head_dim
        self.to_q = nn.Linear(dim, inner)
        self.to_k = nn.Linear(dim, inner)
        self.to_v = nn.Linear(dim, inner)
        self.to_out = nn.ModuleList([nn.Linear(inner, dim)])

    def forward(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        mask: torch.Tensor | None,
        past: tuple[torch.Tensor, torch.Tensor] | None = None,
        record: list | None = None,
    ):
        """Self-attention of x [B, T, D]; with `past` (keys, values [B, P, inner]) the queries also attend to P earlier
        frames; `record` receives this call's (keys, values)."""
        batch, length, _ = x.shape
        q = apply_partial_rotary_(self.to_q(x), *rope)
        k = apply_partial_rotary_(self.to_k(x), *rope)
        v = self.to_v(x)
        if record is not None:
            record.append((k, v))
        if past is not None:
            k, v = torch.cat([past[0], k], dim=1), torch.cat([past[1], v], dim=1)
        q = q.view(batch, length, self.heads, self.head_dim).transpose(1, 2)
        k, v = (y.view(batch, y.shape[1], self.heads, self.head_dim).transpose(1, 2) for y in (k, v))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.to_out[0](out.transpose(1, 2).reshape(batch, length, -1))


class FeedForward(nn.Module):
    def __init__(self, dim: int, mult: float):
        super().__init__()
        inner = int(dim * mult)
        # index 1 is the (inference-time no-op) dropout of the reference, kept so that the keys read `ff.ff.2.*`
        self.ff = nn.Sequential(
            nn.Sequential(nn.Linear(dim, inner), nn.GELU(approximate="tanh")), nn.Identity(), nn.Linear(inner, dim)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ff(x)


class DiTBlock(nn.Module):
    def __init__(self, config: FunAudioChatToken2WavConfig):
        super().__init__()
        dim = config.dit_dim
        self.attn_norm = AdaLayerNormZero(dim)
        self.attn = Attention(dim, config.dit_heads, config.dit_head_dim)
        self.ff = FeedForward(dim, config.dit_ff_mult)

    def forward(
        self, x: torch.Tensor, modulation: Modulation, rope, mask: torch.Tensor | None, past=None, record=None
    ) -> torch.Tensor:
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = modulation
        norm = torch.addcmul(shift_msa, F.layer_norm(x, x.shape[-1:], eps=1e-6), 1 + scale_msa)
        x = torch.addcmul(x, gate_msa, self.attn(norm, rope, mask, past=past, record=record))
        norm = torch.addcmul(shift_mlp, F.layer_norm(x, x.shape[-1:], eps=1e-6), 1 + scale_mlp)
        return torch.addcmul(x, gate_mlp, self.ff(norm))


class FinalAdaLayerNorm(nn.Module):
    """SiLU(t) -> Linear -> (scale, shift) (note: scale first, unlike the blocks)."""

    def __init__(self, dim: int):
        super().__init__()
        self.linear = nn.Linear(dim, 2 * dim)

    def modulation(self, t: torch.Tensor) -> Modulation:
        return self.linear(F.silu(t))[:, None, :].chunk(2, dim=-1)

    def forward(self, x: torch.Tensor, modulation: Modulation) -> torch.Tensor:
        scale, shift = modulation
        return torch.addcmul(shift, F.layer_norm(x, x.shape[-1:], eps=1e-6), 1 + scale)


def chunk_causal_mask(length: int, chunk_size: int, device: torch.device) -> torch.Tensor:
    """Boolean [T, T] mask: frame i sees frames j < (i // chunk + 1) * chunk (its chunk and all earlier ones)."""
    positions = torch.arange(length, device=device)
    limit = (positions // chunk_size + 1) * chunk_size
    return positions[None, :] < limit[:, None]


class DiT(nn.Module):
    """Velocity estimator v(x, mask, mu, t, spks, cond): [B, 80, T] inputs -> [B, 80, T]."""

    def __init__(self, config: FunAudioChatToken2WavConfig):
        super().__init__()
        self.static_chunk_size = config.static_chunk_size
        self.time_embed = TimestepEmbedding(config.dit_dim, config.dit_time_embed_dim)
        self.input_embed = InputEmbedding(config)
        self.rotary_embed = RotaryEmbedding(config.dit_head_dim, config.rope_theta)
        self.transformer_blocks = nn.ModuleList(DiTBlock(config) for _ in range(config.dit_depth))
        self.norm_out = FinalAdaLayerNorm(config.dit_dim)
        self.proj_out = nn.Linear(config.dit_dim, config.mel_bins)

    def time_modulations(self, t: torch.Tensor) -> list[Modulation]:
        """The time conditioning of every block and of the final norm for times t [S] (tensors [S, 1, D]). It does not
        depend on x, so a sampler computes it once for all its steps (one matmul per block instead of one per step)."""
        embedding = self.time_embed(t.to(self.proj_out.weight.dtype))
        return [block.attn_norm(embedding) for block in self.transformer_blocks] + [
            self.norm_out.modulation(embedding)
        ]

    def forward(
        self,
        x: torch.Tensor,
        mu: torch.Tensor,
        t: torch.Tensor | None,
        spks: torch.Tensor,
        cond: torch.Tensor,
        chunk_causal: bool = False,
        modulations: list[Modulation] | None = None,
        prefix: PrefixState | None = None,
        return_prefix: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, PrefixState]:
        """x, mu, cond [B, C, T]; t [B] (or precomputed `time_modulations`); spks [B, C] -> velocity [B, C, T].
        Attention is bidirectional unless `chunk_causal`.

        `prefix`: the frames follow a fixed prefix (see `PrefixState`) that they attend to (positions continue after
        it). `return_prefix=True` also returns this call's `PrefixState`, so that later calls can follow these frames.
        """
        if modulations is None:
            modulations = self.time_modulations(t)
        if prefix is not None and chunk_causal:
            raise ValueError("A cached prefix is only supported with full attention.")
        dtype = self.proj_out.weight.dtype
        x, mu, cond = (y.to(dtype).transpose(1, 2) for y in (x, mu, cond))
        projected = self.input_embed.project(x, cond, mu, spks.to(dtype))
        h = self.input_embed(projected, history=prefix.history if prefix is not None else None)
        length, offset = h.shape[1], prefix.length if prefix is not None else 0
        rope = self.rotary_embed(length, offset=offset)
        mask = chunk_causal_mask(length, self.static_chunk_size, h.device) if chunk_causal else None
        blocks = len(self.transformer_blocks)
        records: list[list | None] = [[] for _ in range(blocks)] if return_prefix else [None] * blocks
        for index, (block, modulation) in enumerate(zip(self.transformer_blocks, modulations)):
            past = (prefix.keys[index], prefix.values[index]) if prefix is not None else None
            h = block(h, modulation, rope, mask, past=past, record=records[index])
        velocity = self.proj_out(self.norm_out(h, modulations[-1])).transpose(1, 2)
        if not return_prefix:
            return velocity
        keys, values = [record[0][0] for record in records], [record[0][1] for record in records]
        if prefix is not None:
            keys = [torch.cat(pair, dim=1) for pair in zip(prefix.keys, keys)]
            values = [torch.cat(pair, dim=1) for pair in zip(prefix.values, values)]
            projected = torch.cat([prefix.history, projected], dim=1)
        history = projected[:, -self.input_embed.history_frames :]
        return velocity, PrefixState(keys=keys, values=values, history=history, length=offset + length)
