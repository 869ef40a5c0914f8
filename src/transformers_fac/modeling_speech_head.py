"""The 25 Hz speech head (`audio_invert_tower`, called SRH or CRQ in the official code).

Each 5 Hz LLM position is expanded into `group_size` (5) sub-positions by `pre_matching`; a small causal Qwen3
transformer runs over the sub-positions at 25 Hz and predicts one speech code per sub-position. Its output matrix
`lm_head` is tied to the discrete encoder's code embedding.
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoModel

from .configuration_fun_audio_chat import FunAudioChatAudioEncoderConfig
from .decoding_cache import DecodingSequence


@dataclass
class SpeechHeadState:
    """Per-`generate`-call decoding state of the speech head (nothing is stored on the module): its transformer's
    sequence (cache, mask, positions) and the embedding of the last chosen code, which offsets the next input."""

    sequence: DecodingSequence
    last_code_embedding: torch.Tensor  # [B, dim]


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
    # Incremental decoding (used by generation): state carried in a SpeechHeadState.
    # ----------------------------------------------------------------------------------------------------------
    def start_state(self, sequence: DecodingSequence, reference: torch.Tensor) -> SpeechHeadState:
        """An empty `sequence` (see `decoding_cache`); the first sub-step is conditioned on the speech BOS embedding."""
        batch = sequence.next_position.shape[0]
        bos = torch.full((batch,), self.config.bos_token_id, dtype=torch.long, device=reference.device)
        embedding = self.code_embeddings(bos).to(reference.dtype)
        torch._dynamo.mark_static_address(embedding)  # updated in place by the compiled decoding step
        return SpeechHeadState(sequence, embedding)

    def step(
        self, sub_positions: torch.Tensor, state: SpeechHeadState, valid: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Feeds upsampled sub-positions [B, n, dim] (plus the previous code's embedding) and returns the logits of the
        last one [B, codebook_size]. `valid` [B, n] marks non-padding inputs (None: all valid)."""
        inputs = self.input_matching(sub_positions + state.last_code_embedding[:, None, :])
        mask, positions = state.sequence.advance(valid, inputs.shape[1])
        output = self.crq_transformer(
            inputs_embeds=inputs,
            attention_mask=mask,
            position_ids=positions,
            cache=state.sequence.cache,
            use_cache=True,
        )
        return self._logits(output.last_hidden_state[:, -1]).float()

    def generate_group(
        self,
        hidden_states: torch.Tensor,
        state: SpeechHeadState,
        choose: Callable[[torch.Tensor, list[torch.Tensor]], torch.Tensor],
        valid: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The 5 codes [B, 5] of the last LLM position of `hidden_states` [B, S, dim] (hidden states plus input text
        embeddings).

        Sub-step 0 feeds every upsampled sub-position up to sub-position 0 of the last LLM position (the whole prompt
        at prefill, `valid` [B, 5(S-1)+1] marking padding); sub-steps 1..4 feed one sub-position each. Each input is
        offset by the embedding of the code chosen just before it (speech BOS at the very first sub-step).
        `choose(logits [B, V], codes chosen so far in this group) -> code [B]` picks each code.
        """
        upsampled = self.upsample(hidden_states)
        first = upsampled.shape[1] - (self.group_size - 1)
        codes = []
        for sub in range(self.group_size):
            inputs = upsampled[:, :first] if sub == 0 else upsampled[:, first + sub - 1 : first + sub]
            logits = self.step(inputs, state, valid if sub == 0 else None)
            code = choose(logits, codes)
            codes.append(code)
            state.last_code_embedding.copy_(self.code_embeddings(code))
        return torch.stack(codes, dim=1)


__all__ = ["FunAudioChatSpeechHead", "SpeechHeadState"]
