"""The 25 Hz speech head (`audio_invert_tower`, called SRH or CRQ in the official code).

Each 5 Hz LLM position is expanded into `group_size` (5) sub-positions by `pre_matching`; a small causal Qwen3
transformer runs over the sub-positions at 25 Hz and predicts one speech code per sub-position. Its output matrix
`lm_head` is tied to the discrete encoder's code embedding.
"""

from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoModel

from .configuration_fun_audio_chat import FunAudioChatAudioEncoderConfig
from .fast_decode import LeanDecoder, linear_parameters
from .growing_cache import GrowingCache


@dataclass
class SpeechHeadState:
    """Per-`generate`-call decoding state of the speech head (nothing is stored on the module).

    `attention_mask` is None when no row is padded; otherwise it covers every sub-position fed so far. `lean` runs the
    one-position sub-steps of unpadded rows when the transformer allows it (see `fast_decode`).
    """

    cache: GrowingCache
    last_code_embedding: torch.Tensor
    next_position: torch.Tensor
    attention_mask: torch.Tensor | None
    lean: "_LeanSubStep | None" = None


@dataclass
class _LeanSubStep:
    """What a one-position sub-step of unpadded rows needs, read once per call: the transformer's [`LeanDecoder`] and
    the (weight, bias) of the plain linear maps around it."""

    decoder: LeanDecoder
    input_matching: tuple
    output_matching: tuple
    lm_head: tuple

    @classmethod
    def build(cls, head: "FunAudioChatSpeechHead") -> "_LeanSubStep | None":
        parts = (
            LeanDecoder.build(head.crq_transformer),
            linear_parameters(head.input_matching),
            linear_parameters(head.output_matching),
            linear_parameters(head.lm_head),
        )
        return None if any(part is None for part in parts) else cls(*parts)


class FunAudioChatSpeechHead(nn.Module):
    """Upsamples LLM hidden states ×`group_size` and decodes speech codes with a causal Qwen3 transformer."""

    def __init__(self, config: FunAudioChatAudioEncoderConfig):
        super().__init__()
        self.config = config
        self.group_size = config.group_size
        width = config.output_dim
        transformer_config = config.speech_head_config()
        # The transformer consumes embeddings only: build it with a 1-row vocabulary and drop the embedding table.
        transformer_config.vocab_size = 1
        transformer_config.pad_token_id = None
        self.pre_matching = nn.Linear(width, width * self.group_size, bias=True)
        self.crq_transformer = AutoModel.from_config(transformer_config)
        del self.crq_transformer.embed_tokens
        self.input_matching = nn.Linear(width, transformer_config.hidden_size, bias=False)
        self.output_matching = nn.Linear(transformer_config.hidden_size, width, bias=False)
        self.lm_head = nn.Linear(width, config.codebook_size, bias=False)

    def upsample(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """[B, S, dim] → [B, S * group_size, dim]; sub-position k of position p lands at index p * group_size + k."""
        batch, length, width = hidden_states.shape
        return self.pre_matching(hidden_states).view(batch, length * self.group_size, width)

    def code_embeddings(self, codes: torch.Tensor) -> torch.Tensor:
        """Embedding of speech codes, read from the (tied) output matrix."""
        return nn.functional.embedding(codes, self.lm_head.weight)

    def _logits(self, transformer_output: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.output_matching(transformer_output))

    def forward(
        self,
        hidden_states: torch.Tensor,
        code_embeddings: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Teacher-forced pass over whole sequences (training and plain `forward`).

        Args:
            hidden_states: [B, S, dim], the LLM's final hidden states plus the input text embeddings.
            code_embeddings: [B, S * group_size, dim] embeddings of the target codes (or None). They are rolled left
                by `group_size - 1`, so the input at flat index t carries the code at t + group_size - 1.
            attention_mask: [B, S] LLM padding mask, repeated ×`group_size`.
            position_ids: [B, S] LLM positions p; sub-position k gets p * group_size + k, padding gets 0 (padding is
                everything after the last non-zero position, as LLaMA-Factory's packing lays it out).

        Returns:
            Speech logits [B, S * group_size, codebook_size].
        """
        inputs = self.upsample(hidden_states)
        if code_embeddings is not None:
            inputs = inputs + torch.roll(code_embeddings, shifts=-(self.group_size - 1), dims=1)
        mask = None if attention_mask is None else attention_mask.repeat_interleave(self.group_size, dim=1)
        positions = None if position_ids is None else self._sub_positions(position_ids)
        output = self.crq_transformer(
            inputs_embeds=self.input_matching(inputs), attention_mask=mask, position_ids=positions, use_cache=False
        )
        return self._logits(output.last_hidden_state)

    def _sub_positions(self, position_ids: torch.Tensor) -> torch.Tensor:
        offsets = torch.arange(self.group_size, device=position_ids.device, dtype=position_ids.dtype)
        positions = (position_ids[..., None] * self.group_size + offsets).flatten(1)
        length = position_ids.shape[1]
        nonzero = position_ids != 0
        last_nonzero = length - nonzero.flip(-1).long().argmax(-1)
        end = torch.where(nonzero.any(-1), last_nonzero, torch.zeros_like(last_nonzero))
        padding = torch.arange(length, device=position_ids.device)[None, :] >= end[:, None]
        return positions.masked_fill(padding.repeat_interleave(self.group_size, dim=1), 0)

    # ----------------------------------------------------------------------------------------------------------
    # Incremental decoding (used by generation): one call per sub-step, state carried in a SpeechHeadState.
    # ----------------------------------------------------------------------------------------------------------
    def start_state(self, batch_size: int, reference: torch.Tensor) -> SpeechHeadState:
        """Empty cache; the first sub-step is conditioned on the speech BOS embedding."""
        bos = torch.full((batch_size,), self.config.bos_token_id, dtype=torch.long, device=reference.device)
        return SpeechHeadState(
            cache=GrowingCache(config=self.crq_transformer.config),
            last_code_embedding=self.code_embeddings(bos).to(reference.dtype),
            next_position=torch.zeros(batch_size, dtype=torch.long, device=reference.device),
            attention_mask=None,
            lean=_LeanSubStep.build(self),
        )

    def step(
        self, sub_positions: torch.Tensor, state: SpeechHeadState, valid: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Feeds upsampled sub-positions [B, n, dim] (plus the previous code's embedding) and returns the logits of the
        last one [B, codebook_size]. `valid` [B, n] marks non-padding inputs (None: all valid)."""
        lean = state.lean
        if lean is not None and valid is None and state.attention_mask is None and sub_positions.shape[1] == 1:
            # The decoding sub-steps: the same operations as below, without the module machinery.
            linear = nn.functional.linear
            inputs = linear(sub_positions + state.last_code_embedding[:, None, :], *lean.input_matching)
            positions = state.next_position[:, None]
            state.next_position = state.next_position + 1
            hidden = lean.decoder(inputs, positions, state.cache)
            return linear(linear(hidden[:, -1], *lean.output_matching), *lean.lm_head).float()
        inputs = self.input_matching(sub_positions + state.last_code_embedding[:, None, :])
        unpadded = valid is None and state.attention_mask is None
        if unpadded and inputs.shape[1] == 1 and not self.crq_transformer.has_sliding_layers:
            hidden = self._decode_one(inputs, state)
        else:
            hidden = self._decode_many(inputs, state, valid)
        return self._logits(hidden[:, -1]).float()

    def _decode_many(
        self, inputs_embeds: torch.Tensor, state: SpeechHeadState, valid: torch.Tensor | None
    ) -> torch.Tensor:
        """Any number of sub-positions, padded or not, through `crq_transformer.forward` (masks built as needed)."""
        batch, count = inputs_embeds.shape[:2]
        device = inputs_embeds.device
        if valid is not None or state.attention_mask is not None:
            if valid is None:
                valid = torch.ones(batch, count, dtype=torch.long, device=device)
            previous = state.attention_mask
            if previous is None:
                previous = torch.ones(batch, state.cache.get_seq_length(), dtype=torch.long, device=device)
            state.attention_mask = torch.cat([previous, valid.long()], dim=1)
            positions = state.next_position[:, None] + valid.long().cumsum(-1) - 1
            positions = positions.clamp(min=0)
            state.next_position = state.next_position + valid.long().sum(-1)
        else:
            positions = state.next_position[:, None] + torch.arange(count, device=device)
            state.next_position = state.next_position + count
        output = self.crq_transformer(
            inputs_embeds=inputs_embeds,
            attention_mask=state.attention_mask,
            position_ids=positions,
            cache=state.cache,
            use_cache=True,
        )
        return output.last_hidden_state

    def _decode_one(self, inputs_embeds: torch.Tensor, state: SpeechHeadState) -> torch.Tensor:
        """One sub-position [B, 1, hidden] of unpadded rows through the transformer's layers, called directly.

        The same computation as `crq_transformer.forward`, without its per-call machinery (argument and output
        handling, mask building): a single query of unpadded rows, without sliding-window layers, needs no mask. This
        is the decoding path, run 5 times per LLM step.
        """
        transformer = self.crq_transformer
        positions = state.next_position[:, None]
        state.next_position = state.next_position + 1
        position_embeddings = transformer.rotary_emb(inputs_embeds, positions)
        hidden = inputs_embeds
        for layer in transformer.layers:
            hidden = layer(
                hidden,
                attention_mask=None,
                position_embeddings=position_embeddings,
                position_ids=positions,
                cache=state.cache,
                use_cache=True,
            )
        return transformer.norm(hidden)


__all__ = ["FunAudioChatSpeechHead", "SpeechHeadState"]
