"""The two audio encoders of Fun-Audio-Chat.

- `FunAudioChatContinuousEncoder` (`continuous_audio_tower`): a Whisper-large-v3-style encoder over 128-bin log-mel
  features whose attention is limited to 2 s windows, pooled to 25 Hz and projected to the LLM width.
- `FunAudioChatDiscreteEncoder` (`audio_tower`): embeds 25 Hz speech codes, averages each group of 5 into one 5 Hz
  vector, and fuses the continuous features of the same audio.
"""

import math

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer

from .configuration_fun_audio_chat import FunAudioChatAudioEncoderConfig


def conv_output_lengths(mel_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Lengths after the stride-2 convolution (50 Hz) and after the 2x average pooling (25 Hz)."""
    after_conv = (mel_lengths - 1) // 2 + 1
    after_pool = (after_conv - 2) // 2 + 1
    return after_conv, after_pool


def sinusoid_table(length: int, channels: int, max_timescale: float = 10000.0) -> torch.Tensor:
    """Whisper's fixed position table: row t is [sin(t * inv_timescales), cos(t * inv_timescales)]."""
    if channels % 2:
        raise ValueError(f"The sinusoid position table needs an even width, got {channels}.")
    increment = math.log(max_timescale) / (channels // 2 - 1)
    inv_timescales = torch.exp(-increment * torch.arange(channels // 2, dtype=torch.float32))
    scaled_time = torch.arange(length, dtype=torch.float32)[:, None] * inv_timescales[None, :]
    return torch.cat([torch.sin(scaled_time), torch.cos(scaled_time)], dim=1)


def eager_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain softmax attention over [batch, heads, length, head_dim] tensors with an additive mask."""
    weights = torch.matmul(query, key.transpose(-1, -2)) * scaling
    if attention_mask is not None:
        weights = weights + attention_mask
    weights = nn.functional.softmax(weights, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = nn.functional.dropout(weights, p=dropout, training=module.training)
    output = torch.matmul(weights, value).transpose(1, 2).contiguous()
    return output, weights


class FunAudioChatEncoderAttention(nn.Module):
    """Bidirectional multi-head attention inside each 2 s window (q and v have biases, k has none)."""

    def __init__(self, config: FunAudioChatAudioEncoderConfig):
        super().__init__()
        self.config = config
        self.embed_dim = config.d_model
        self.num_heads = config.encoder_attention_heads
        self.head_dim = self.embed_dim // self.num_heads
        self.scaling = self.head_dim**-0.5
        self.attention_dropout = config.attention_dropout
        self.is_causal = False
        self.num_key_value_groups = 1
        self.q_proj = nn.Linear(self.embed_dim, self.embed_dim, bias=True)
        self.k_proj = nn.Linear(self.embed_dim, self.embed_dim, bias=False)
        self.v_proj = nn.Linear(self.embed_dim, self.embed_dim, bias=True)
        self.out_proj = nn.Linear(self.embed_dim, self.embed_dim, bias=True)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None, **kwargs) -> torch.Tensor:
        windows, length, _ = hidden_states.shape
        shape = (windows, length, self.num_heads, self.head_dim)
        query = self.q_proj(hidden_states).view(shape).transpose(1, 2)
        key = self.k_proj(hidden_states).view(shape).transpose(1, 2)
        value = self.v_proj(hidden_states).view(shape).transpose(1, 2)
        # An unset implementation means transformers' default for this model: SDPA.
        implementation = self.config._attn_implementation or "sdpa"
        attention = eager_attention if implementation == "eager" else AttentionInterface()[implementation]
        output, _ = attention(
            self,
            query,
            key,
            value,
            attention_mask=attention_mask,
            dropout=self.attention_dropout if self.training else 0.0,
            scaling=self.scaling,
            is_causal=False,
            **kwargs,
        )
        return self.out_proj(output.reshape(windows, length, self.embed_dim))


class FunAudioChatEncoderLayer(GradientCheckpointingLayer):
    """Pre-LayerNorm transformer layer: x + Attn(LN(x)), then x + FFN(LN(x))."""

    def __init__(self, config: FunAudioChatAudioEncoderConfig):
        super().__init__()
        self.self_attn = FunAudioChatEncoderAttention(config)
        self.self_attn_layer_norm = nn.LayerNorm(config.d_model)
        self.activation_fn = ACT2FN[config.activation_function]
        self.activation_dropout = config.activation_dropout
        self.dropout = config.dropout
        self.fc1 = nn.Linear(config.d_model, config.encoder_ffn_dim)
        self.fc2 = nn.Linear(config.encoder_ffn_dim, config.d_model)
        self.final_layer_norm = nn.LayerNorm(config.d_model)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None, **kwargs) -> torch.Tensor:
        attended = self.self_attn(self.self_attn_layer_norm(hidden_states), attention_mask, **kwargs)
        hidden_states = hidden_states + nn.functional.dropout(attended, p=self.dropout, training=self.training)
        ffn = self.activation_fn(self.fc1(self.final_layer_norm(hidden_states)))
        ffn = nn.functional.dropout(ffn, p=self.activation_dropout, training=self.training)
        hidden_states = hidden_states + nn.functional.dropout(self.fc2(ffn), p=self.dropout, training=self.training)
        if hidden_states.dtype == torch.float16:
            limit = torch.finfo(torch.float16).max - 1000
            hidden_states = hidden_states.clamp(min=-limit, max=limit)
        return hidden_states


class FunAudioChatContinuousEncoder(nn.Module):
    """Whisper-style encoder with windowed attention: mel features [128, T] at 100 Hz → vectors at 25 Hz.

    Each audio is cut into windows of `2 * n_window` mel frames (2 s); the windows of all audios of a batch are
    encoded together as one padded batch, each window attending only to itself, with positions restarting at 0.
    """

    def __init__(self, config: FunAudioChatAudioEncoderConfig):
        super().__init__()
        self.config = config
        self.window = 2 * config.n_window
        self.conv1 = nn.Conv1d(config.num_mel_bins, config.d_model, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(config.d_model, config.d_model, kernel_size=3, stride=2, padding=1)
        self.layers = nn.ModuleList([FunAudioChatEncoderLayer(config) for _ in range(config.encoder_layers)])
        self.ln_post = nn.LayerNorm(config.d_model)
        self.proj = nn.Linear(config.d_model, config.output_dim)
        # Stored in the checkpoint but unused by the model (kept so that loading and saving are lossless).
        self.audio_bos_eos_token = nn.Embedding(2, config.output_dim)
        positions = sinusoid_table(max(config.max_source_positions, config.n_window + 1), config.d_model)
        self.register_buffer("positional_embedding", positions, persistent=False)
        self.gradient_checkpointing = False

    def _windows(self, features: torch.Tensor, lengths: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Cuts the valid frames of every audio into windows, padded into [windows, mel, window] with a frame mask."""
        pieces = []
        for audio, length in zip(features, lengths):
            valid = audio[:, :length]
            pieces.extend(valid.split(self.window, dim=1))
        window_lengths = torch.tensor([p.shape[1] for p in pieces], device=features.device)
        longest = int(window_lengths.max())
        padded = features.new_zeros(len(pieces), features.shape[1], longest)
        for index, piece in enumerate(pieces):
            padded[index, :, : piece.shape[1]] = piece
        frame_mask = torch.arange(longest, device=features.device)[None, :] < window_lengths[:, None]
        return padded, frame_mask

    def _attention_mask(self, key_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor | None:
        if self.config._attn_implementation in ("flash_attention_2", "flash_attention_3"):
            return key_mask.long()
        additive = torch.zeros(key_mask.shape, dtype=dtype, device=key_mask.device)
        additive = additive.masked_fill(~key_mask, torch.finfo(dtype).min)
        return additive[:, None, None, :]

    def forward(
        self, input_features: torch.Tensor, feature_attention_mask: torch.Tensor, output_length: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encodes `input_features` [A, mel, T] whose valid frames are marked by `feature_attention_mask` [A, T].

        Returns the 25 Hz features scattered into zeros of shape [A, output_length, output_dim] (longer outputs are
        truncated), and the number of valid 25 Hz vectors per audio.
        """
        mel_lengths = feature_attention_mask.sum(-1).long()
        after_conv, after_pool = conv_output_lengths(mel_lengths)
        output = self.proj.weight.new_zeros(input_features.shape[0], output_length, self.config.output_dim)
        present = (mel_lengths > 0).nonzero().flatten().tolist()
        if not present:
            return output, torch.zeros_like(after_pool)

        features = input_features[present].to(self.conv1.weight.dtype)
        padded, frame_mask = self._windows(features, mel_lengths[present].tolist())
        hidden = nn.functional.gelu(self.conv1(padded)) * frame_mask[:, None, :].to(padded.dtype)
        hidden = nn.functional.gelu(self.conv2(hidden)).transpose(1, 2)
        hidden = hidden + self.positional_embedding[: hidden.shape[1]].to(hidden.dtype)
        conv_mask = frame_mask[:, ::2]
        attention_mask = self._attention_mask(conv_mask, hidden.dtype)
        for layer in self.layers:
            hidden = layer(hidden, attention_mask)

        per_audio = hidden[conv_mask].split(after_conv[present].tolist(), dim=0)
        pooled = [
            nn.functional.avg_pool1d(states.T[None], kernel_size=2, stride=2)[0].T if len(states) >= 2 else states
            for states in per_audio
        ]
        projected = self.proj(self.ln_post(torch.cat(pooled, dim=0))).split([len(p) for p in pooled], dim=0)
        for index, states in zip(present, projected):
            kept = min(len(states), output_length)
            output[index, :kept] = states[:kept]
        return output, torch.where(mel_lengths > 0, after_pool, torch.zeros_like(after_pool))


class FunAudioChatDiscreteEncoder(nn.Module):
    """Speech codes [A, 25 Hz] → one vector per group of `group_size` codes: mean of the embeddings, then a linear map.

    Continuous features of the same audios ([A_with_waveform, 25 Hz, dim]) are grouped the same way and either
    replace (the released checkpoint) or are added to the discrete vectors of the audios marked by
    `feature_exist_mask`.
    """

    def __init__(self, config: FunAudioChatAudioEncoderConfig):
        super().__init__()
        self.group_size = config.group_size
        self.mode = config.continuous_features_mode
        self.embed_tokens = nn.Embedding(config.codebook_size, config.output_dim, config.pad_token_id)
        self.output_matching = nn.Linear(config.output_dim, config.output_dim, bias=False)
        self.continual_output_matching = nn.Linear(config.output_dim, config.output_dim, bias=False)

    def group_mean(self, frames: torch.Tensor) -> torch.Tensor:
        """[A, T, dim] with T a multiple of `group_size` → [A, T / group_size, dim]."""
        return frames.view(frames.shape[0], -1, self.group_size, frames.shape[-1]).mean(dim=2)

    def forward(
        self,
        speech_ids: torch.Tensor,
        continuous_features: torch.Tensor | None = None,
        feature_exist_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        hidden = self.output_matching(self.group_mean(self.embed_tokens(speech_ids)))
        if continuous_features is None:
            return hidden
        continuous = self.continual_output_matching(self.group_mean(continuous_features)).to(hidden.dtype)
        if feature_exist_mask is None:
            feature_exist_mask = torch.ones(hidden.shape[0], dtype=torch.bool, device=hidden.device)
        rows = feature_exist_mask.to(hidden.device).bool()
        if int(rows.sum()) != continuous.shape[0]:
            raise ValueError(
                f"feature_exist_mask marks {int(rows.sum())} audios with a waveform, but continuous features were "
                f"computed for {continuous.shape[0]}."
            )
        fused = hidden.clone()
        fused[rows] = continuous + hidden[rows] if self.mode == "add" else continuous
        return fused


__all__ = ["FunAudioChatContinuousEncoder", "FunAudioChatDiscreteEncoder", "conv_output_lengths"]
