"""Dual-rate decoding for Fun-Audio-Chat, written for the transformers 5 generation API.

`generation_mode="text"` is plain `GenerationMixin` sampling (the speech head never runs). `generation_mode="audio"`
runs the joint loop: one LLM step per 5 Hz position and, after each step, 5 speech codes (25 Hz) from the speech
head, conditioned on the LLM's hidden state and the input text token. All decoding state lives inside the call.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import DynamicCache, GenerationConfig, GenerationMixin
from transformers.generation import (
    LogitsProcessorList,
    MinPLogitsWarper,
    RepetitionPenaltyLogitsProcessor,
    StoppingCriteriaList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)
from transformers.generation.utils import GenerateDecoderOnlyOutput

from .fast_decode import LeanLanguageModelStep
from .growing_cache import GrowingCache

GENERATION_MODES = ("text", "audio")
# Inputs that only the prefill consumes (the audio is merged into the prompt once).
PREFILL_ONLY_INPUTS = (
    "input_features",
    "speech_ids",
    "speech_attention_mask",
    "feature_attention_mask",
    "feature_exist_mask",
    "text_ids",
    "text_attention_mask",
)
SPEECH_SAMPLING_KEYS = ("do_sample", "temperature", "top_k", "top_p", "min_p", "repetition_penalty")


@dataclass
class FunAudioChatGenerateOutput(GenerateDecoderOnlyOutput):
    """`generate(..., return_dict_in_generate=True)` output.

    Args:
        sequences: [B, prompt + new] text ids (as the official model returns them: `<|audio_bos|>` first in audio
            mode, the text token of the step where speech ended replaced by `<|audio_eos|>`).
        speech_ids: [B, 5 * n] 25 Hz speech codes, one group of 5 per LLM step spent speaking (the 2 leading BOS
            groups and the final all-EOS group included). Rows that are not speaking at a step get a group of the
            speech pad id there; use [`valid_speech_codes`] for what the vocoder accepts.
        audio: one float32 24 kHz waveform per row, when a token-to-waveform decoder is attached.
        sampling_rate: sampling rate of `audio`.
    """

    speech_ids: torch.LongTensor | None = None
    audio: list[torch.Tensor] | None = None
    sampling_rate: int | None = None

    def valid_speech_codes(self, codebook_limit: int = 6561) -> list[torch.LongTensor]:
        """The vocoder-valid codes (`0 <= id < codebook_limit`) of each row, in order."""
        return valid_speech_codes(self.speech_ids, codebook_limit)


class SpeechReply(tuple):
    """`(sequences, speech_ids)`, what the official `generate` returns in speech mode, also carrying the waveforms.

    Unpacks like a plain pair; `audio` (one float32 24 kHz waveform per row, or None without a decoder) and
    `sampling_rate` are attributes. They are also set on the `speech_ids` tensor, because pipelines rebuild tuples
    (transformers' `any-to-any` pipeline moves outputs to the CPU element by element) and a tensor already on the
    CPU survives that as the same object: when waveforms are returned, `speech_ids` is on the CPU like them.
    """

    def __new__(cls, sequences, speech_ids, audio=None, sampling_rate=None):
        reply = super().__new__(cls, (sequences, speech_ids))
        reply.set_audio(audio, sampling_rate)
        return reply

    def set_audio(self, audio: list[torch.Tensor] | None, sampling_rate: int | None) -> None:
        for holder in (self, self[1]):
            holder.audio, holder.sampling_rate = audio, sampling_rate


def valid_speech_codes(speech_ids: torch.Tensor | None, codebook_limit: int = 6561) -> list[torch.LongTensor]:
    """Drops BOS/EOS/pad codes: returns, per row, the codes `0 <= id < codebook_limit` in order."""
    if speech_ids is None:
        return []
    return [row[(row >= 0) & (row < codebook_limit)] for row in speech_ids]


@dataclass
class SpeechSamplingConfig:
    """How the 25 Hz speech codes are chosen. By default the text settings are reused, as the official model does."""

    do_sample: bool = False
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None

    @classmethod
    def resolve(cls, generation_config: GenerationConfig, overrides: dict) -> "SpeechSamplingConfig":
        """Per key: an explicit `speech_<key>` argument, else `speech_<key>` in the generation config, else `<key>`."""
        values = {}
        for key in SPEECH_SAMPLING_KEYS:
            value = overrides.get(key)
            if value is None:
                value = getattr(generation_config, f"speech_{key}", None)
            if value is None:
                value = getattr(generation_config, key, None)
            values[key] = value
        values["do_sample"] = bool(values["do_sample"])
        return cls(**values)

    def processors(self) -> LogitsProcessorList:
        """Repetition penalty, then (when sampling) the usual warpers, in transformers' order."""
        processors = LogitsProcessorList()
        if self.repetition_penalty is not None and self.repetition_penalty != 1.0:
            processors.append(RepetitionPenaltyLogitsProcessor(self.repetition_penalty))
        if self.do_sample:
            if self.temperature is not None and self.temperature != 1.0:
                processors.append(TemperatureLogitsWarper(self.temperature))
            if self.top_k is not None and self.top_k != 0:
                processors.append(TopKLogitsWarper(self.top_k))
            if self.top_p is not None and self.top_p < 1.0:
                processors.append(TopPLogitsWarper(self.top_p))
            if self.min_p is not None:
                processors.append(MinPLogitsWarper(self.min_p))
        return processors


def _decode_row(vocoder, codes: torch.Tensor, speaker) -> torch.Tensor:
    """One row's vocoder-valid codes → float32 waveform on the CPU (empty when the row did not speak)."""
    if codes.numel() == 0:
        return torch.zeros(0)
    device = next(vocoder.parameters()).device
    return vocoder.decode(codes[None].to(device), speaker=speaker)[0].float().cpu()


def _choose(scores: torch.Tensor, do_sample: bool) -> torch.Tensor:
    if do_sample:
        return torch.multinomial(nn.functional.softmax(scores, dim=-1), num_samples=1).squeeze(1)
    return torch.argmax(scores, dim=-1)


class FunAudioChatGenerationMixin(GenerationMixin):
    """`generate()` with `generation_mode="text" | "audio"` for [`FunAudioChatForConditionalGeneration`]."""

    def prepare_inputs_for_generation(
        self,
        input_ids: torch.LongTensor,
        next_sequence_length: int | None = None,
        cache=None,
        attention_mask: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        is_first_iteration: bool | None = False,
        **kwargs,
    ):
        if not is_first_iteration:
            for key in PREFILL_ONLY_INPUTS:
                kwargs.pop(key, None)
        return super().prepare_inputs_for_generation(
            input_ids,
            next_sequence_length=next_sequence_length,
            cache=cache,
            attention_mask=attention_mask,
            inputs_embeds=inputs_embeds,
            is_first_iteration=is_first_iteration,
            **kwargs,
        )

    @torch.no_grad()
    def generate(
        self,
        inputs: torch.Tensor | None = None,
        generation_config: GenerationConfig | None = None,
        logits_processor: LogitsProcessorList | None = None,
        stopping_criteria: StoppingCriteriaList | None = None,
        streamer=None,
        generation_mode: str = "text",
        speaker: Any = None,
        return_audio: bool | None = None,
        force_audio_bos: bool = True,
        speech_do_sample: bool | None = None,
        speech_temperature: float | None = None,
        speech_top_k: int | None = None,
        speech_top_p: float | None = None,
        speech_min_p: float | None = None,
        speech_repetition_penalty: float | None = None,
        **kwargs,
    ):
        r"""Generates a text reply (`generation_mode="text"`) or a text + speech reply (`"audio"`).

        Args:
            generation_mode: `"text"` (speech-to-text, audio understanding, function calling; the speech head never
                runs) or `"audio"` (joint text and 25 Hz speech codes).
            speaker: voice of the audio output: `"中文女"` (default) or `"中文男"`, a [192] speaker embedding, a
                `FunAudioChatVoice` (e.g. `model.token2wav.clone_voice("me.wav")`) or a saved voice's path.
            return_audio: decode the speech codes into 24 kHz waveforms (default: when a token-to-waveform decoder
                is attached or known for the checkpoint, see `from_pretrained(token2wav=...)`).
            force_audio_bos: in audio mode, force the first text token to `<|audio_bos|>` (what starts speech).
            speech_do_sample / speech_temperature / speech_top_k / speech_top_p / speech_min_p /
                speech_repetition_penalty: sampling of the speech codes; each defaults to `speech_<name>` in the
                generation config, else to the text setting (the official behaviour).
            streamer: receives the prompt, then each step's text ids `put(ids [B])` and, in audio mode and if the
                streamer has `put_speech`, each step's speech group `put_speech(codes [B, 5], speaking [B])`.
            kwargs: the usual `generate` arguments (`max_new_tokens`, `do_sample`, `temperature`, ...) and the
                processor outputs.

        Returns:
            Text mode: `sequences` (or a `GenerateDecoderOnlyOutput`). Audio mode: `(sequences, speech_ids)` like the
            official API (a [`SpeechReply`], whose `audio` holds the waveforms), or a [`FunAudioChatGenerateOutput`]
            with `return_dict_in_generate=True`.

        Example:

        ```python
        >>> out = model.generate(**inputs, generation_mode="audio", max_new_tokens=200, return_dict_in_generate=True)
        >>> processor.batch_decode(out.sequences[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
        >>> codes = out.valid_speech_codes()[0]  # for the CosyVoice3 decoder
        ```
        """
        if generation_mode not in GENERATION_MODES:
            raise ValueError(f"generation_mode must be one of {GENERATION_MODES}, got {generation_mode!r}.")
        self._check_new_tokens(generation_config, kwargs)
        kwargs["output_speech_logits"] = False
        common = dict(
            inputs=inputs,
            generation_config=generation_config,
            logits_processor=logits_processor,
            stopping_criteria=stopping_criteria,
            streamer=streamer,
        )
        if generation_mode == "text":
            if speaker is not None or return_audio:
                raise ValueError("`speaker` and `return_audio` apply to generation_mode='audio' only.")
            return super().generate(**common, **kwargs)
        if not getattr(self, "has_speech_head", False):
            raise ValueError(
                "generation_mode='audio' needs a speech head, but this checkpoint has none "
                "(audio_config.enable_audio_invert_tower=False). Use generation_mode='text'."
            )
        if (kwargs.get("num_beams") or 1) > 1 or (generation_config is not None and generation_config.num_beams > 1):
            raise ValueError("generation_mode='audio' supports greedy decoding and sampling only (num_beams=1).")
        vocoder = self.token2wav if return_audio is not False else None
        if return_audio and vocoder is None:
            raise ValueError(
                "return_audio=True needs a token-to-waveform decoder: load the model with "
                "`from_pretrained(..., token2wav=<dir | hub id | FunAudioChatToken2Wav>)`."
            )
        if vocoder is not None and speaker is not None:
            vocoder.speaker_embedding(speaker)  # an unknown voice fails now, not after generating
        overrides = {
            "do_sample": speech_do_sample,
            "temperature": speech_temperature,
            "top_k": speech_top_k,
            "top_p": speech_top_p,
            "min_p": speech_min_p,
            "repetition_penalty": speech_repetition_penalty,
        }
        result = super().generate(
            **common,
            custom_generate=joint_sample,
            step_streamer=streamer,
            speech_overrides=overrides,
            force_audio_bos=force_audio_bos,
            **kwargs,
        )
        if vocoder is None:
            return result if isinstance(result, FunAudioChatGenerateOutput) else SpeechReply(*result)
        if isinstance(result, FunAudioChatGenerateOutput):
            result.audio = [_decode_row(vocoder, codes, speaker) for codes in result.valid_speech_codes()]
            result.sampling_rate = vocoder.config.sampling_rate
            return result
        sequences, speech_ids = result
        audio = [_decode_row(vocoder, codes, speaker) for codes in valid_speech_codes(speech_ids)]
        # On the CPU, like the waveforms: the codes tensor then survives pipelines' moves to the CPU (see SpeechReply).
        return SpeechReply(sequences, speech_ids.cpu(), audio, vocoder.config.sampling_rate)

    def _prepare_cache_for_generation(self, generation_config: GenerationConfig, model_kwargs: dict, *args, **kwargs):
        """The default dynamic LLM cache becomes a [`GrowingCache`] (same values, no copy of the history per step)."""
        super()._prepare_cache_for_generation(generation_config, model_kwargs, *args, **kwargs)
        cache = model_kwargs.get("cache")
        if type(cache) is DynamicCache and not cache.offloading and not getattr(cache, "_is_user_defined", False):
            model_kwargs["cache"] = GrowingCache(config=self.config.get_text_config(decoder=True))

    def _check_new_tokens(self, generation_config: GenerationConfig | None, kwargs: dict) -> None:
        value = kwargs.get("max_new_tokens")
        if value is None and generation_config is not None:
            value = generation_config.max_new_tokens
        if value is not None and value < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {value}.")


@dataclass
class _SpeechStream:
    """Per-call speech decoding state of every row."""

    speaking: torch.Tensor  # row is currently producing speech
    appended_last: torch.Tensor  # row appended a real group at the previous step
    ended: torch.Tensor  # row emitted speech EOS
    groups: list  # [B, 5] groups appended so far (pad groups for rows not speaking)
    history: torch.Tensor  # codes seen by the repetition penalty ([B, T]; `codebook_size` = nothing)


def joint_sample(
    model,
    input_ids: torch.LongTensor,
    logits_processor: LogitsProcessorList,
    stopping_criteria: StoppingCriteriaList,
    generation_config: GenerationConfig,
    synced_gpus: bool = False,
    step_streamer=None,
    speech_overrides: dict | None = None,
    force_audio_bos: bool = True,
    **model_kwargs,
):
    """The joint text + speech decoding loop (`custom_generate` of `generation_mode="audio"`).

    Per step: the LLM reads one input (the text token embedding, averaged with the discrete encoding of the previous
    speech group while speaking), the text token is chosen, and the speech head turns the step's hidden state plus
    the input token embedding into 5 codes. EOS in any of them ends the row's speech: the group becomes 5 × EOS and
    the step's text token becomes `<|audio_eos|>`; the text continues to `<|im_end|>`.
    """
    from .modeling_fun_audio_chat import FunAudioChatOutput  # (that module imports this one)

    config = model.config
    text_config, audio_config = config.text_config, config.audio_config
    head = model.audio_invert_tower
    embed = model.get_input_embeddings()
    group = audio_config.group_size
    batch, device = input_ids.shape[0], input_ids.device
    speech = SpeechSamplingConfig.resolve(generation_config, speech_overrides or {})
    speech_processors = speech.processors()
    pad_token_id = generation_config._pad_token_tensor
    has_eos_criteria = any(hasattr(criteria, "eos_token_id") for criteria in stopping_criteria)
    scores = () if generation_config.return_dict_in_generate and generation_config.output_scores else None
    raw_logits = () if generation_config.return_dict_in_generate and generation_config.output_logits else None
    streamer = step_streamer
    put_speech: Callable | None = getattr(streamer, "put_speech", None)

    unfinished = torch.ones(batch, dtype=torch.bool, device=device)
    stream = _SpeechStream(
        speaking=input_ids[:, -1] == text_config.audio_bos_index,
        appended_last=torch.zeros(batch, dtype=torch.bool, device=device),
        ended=torch.zeros(batch, dtype=torch.bool, device=device),
        groups=[],
        history=torch.empty(batch, 0, dtype=torch.long, device=device),
    )

    outputs = model._prefill(input_ids, generation_config, model_kwargs)
    hidden = outputs.last_hidden_state
    head_state = head.start_state(batch, hidden)
    head_input = hidden + embed(input_ids[:, -hidden.shape[1] :]).to(hidden.dtype)
    prompt_mask = model_kwargs.get("attention_mask")
    valid = None
    if prompt_mask is not None and not bool(prompt_mask.all()):  # padded rows: the speech head needs a mask
        valid = prompt_mask[:, -hidden.shape[1] :].repeat_interleave(group, dim=1)
        valid = valid[:, : valid.shape[1] - (group - 1)]
        head_input = torch.where(prompt_mask[:, -hidden.shape[1] :, None].bool(), head_input, 0.0)
    step_group = _speech_group(head, head_input, head_state, valid, stream.history, speech, speech_processors)
    first_step = True
    # Unpadded rows: the decoding steps may skip the module machinery (same operations, see `fast_decode`).
    lean_step = LeanLanguageModelStep.build(model) if valid is None else None

    while True:
        model_kwargs = model._update_model_kwargs_for_generation(outputs, model_kwargs)
        logits = outputs.logits[:, -1].to(copy=True, dtype=torch.float32, device=device)
        next_scores = logits_processor(input_ids, logits)
        if scores is not None:
            scores += (next_scores,)
        if raw_logits is not None:
            raw_logits += (logits,)
        tokens = _choose(next_scores, generation_config.do_sample)
        if first_step and force_audio_bos:
            tokens = torch.full_like(tokens, text_config.audio_bos_index)
        first_step = False
        if has_eos_criteria:
            tokens = torch.where(unfinished, tokens, pad_token_id)
        input_ids = torch.cat([input_ids, tokens[:, None]], dim=-1)
        was_unfinished = unfinished
        unfinished = unfinished & ~stopping_criteria(input_ids, scores)

        kept = stream.speaking & was_unfinished
        if step_group is None:
            kept = torch.zeros_like(kept)
        input_ids[:, -1] = _append_group(step_group, kept, stream, audio_config, text_config, input_ids[:, -1])
        if streamer is not None:
            streamer.put(input_ids[:, -1].cpu())
            if put_speech is not None and bool(kept.any()):
                put_speech(stream.groups[-1].cpu(), kept.cpu())
        if not bool(unfinished.any()):
            break

        # Next LLM input: the text token, averaged with the previous group's discrete encoding while speaking.
        last = input_ids[:, -1]
        stream.speaking |= last == text_config.audio_bos_index
        text_embeds = embed(last)[:, None, :]
        inputs_embeds = text_embeds
        fuse = stream.speaking & stream.appended_last
        if bool(fuse.any()):
            audio_embeds = model.audio_tower(stream.groups[-1])
            fused = (text_embeds + audio_embeds.to(text_embeds.dtype)) / 2
            inputs_embeds = torch.where(fuse[:, None, None], fused, text_embeds)
        model_inputs = model.prepare_inputs_for_generation(input_ids, next_sequence_length=1, **model_kwargs)
        model_inputs["input_ids"] = None
        model_inputs["inputs_embeds"] = inputs_embeds
        lean = lean_step(model_inputs) if lean_step is not None else None
        if lean is not None:
            outputs = FunAudioChatOutput(text_logits=lean[0], cache=model_inputs["cache"], last_hidden_state=lean[1])
        else:
            outputs = model(**model_inputs, return_dict=True)

        step_group = None
        if not bool((stream.ended | ~unfinished).all()):
            hidden = outputs.last_hidden_state
            step_group = _speech_group(
                head,
                hidden + text_embeds.to(hidden.dtype),
                head_state,
                None,
                stream.history,
                speech,
                speech_processors,
            )

    if streamer is not None:
        streamer.end()
    speech_ids = (
        torch.cat(stream.groups, dim=1) if stream.groups else torch.empty(batch, 0, dtype=torch.long, device=device)
    )
    if generation_config.return_dict_in_generate:
        return FunAudioChatGenerateOutput(
            sequences=input_ids,
            scores=scores,
            logits=raw_logits,
            cache=model_kwargs.get("cache"),
            speech_ids=speech_ids,
        )
    return input_ids, speech_ids


@torch.inference_mode()  # the speech head's state never leaves the loop; the returned codes are only read
def _speech_group(
    head,
    head_input: torch.Tensor,
    state,
    valid: torch.Tensor | None,
    history: torch.Tensor,
    speech: SpeechSamplingConfig,
    processors: LogitsProcessorList,
) -> torch.Tensor:
    """Runs the speech head for the last LLM position of `head_input` [B, S, dim] and returns its 5 codes [B, 5].

    Sub-step 0 feeds every upsampled sub-position up to sub-position 0 of the last LLM position (the whole prompt at
    prefill); sub-steps 1..4 feed one sub-position each. Each input is offset by the embedding of the code chosen
    just before it (speech BOS at the very first sub-step).
    """
    group = head.group_size
    upsampled = head.upsample(head_input)
    first = upsampled.shape[1] - (group - 1)
    codes = []
    for sub in range(group):
        inputs = upsampled[:, :first] if sub == 0 else upsampled[:, first + sub - 1 : first + sub]
        logits = head.step(inputs, state, valid if sub == 0 else None)
        if processors:
            seen = torch.cat([history, *[c[:, None] for c in codes]], dim=1)
            logits = processors(seen, logits)
        code = _choose(logits, speech.do_sample)
        codes.append(code)
        state.last_code_embedding = head.code_embeddings(code).to(upsampled.dtype)
    return torch.stack(codes, dim=1)


def _append_group(
    step_group: torch.Tensor | None,
    kept: torch.Tensor,
    stream: _SpeechStream,
    audio_config,
    text_config,
    tokens: torch.Tensor,
) -> torch.Tensor:
    """Appends the step's group for the speaking rows; returns the step's text tokens (`<|audio_eos|>` where speech
    ended)."""
    if not bool(kept.any()):
        stream.appended_last = kept
        return tokens
    finished = kept & (step_group == audio_config.eos_token_id).any(dim=-1)
    appended = torch.where(finished[:, None], audio_config.eos_token_id, step_group)
    appended = torch.where(kept[:, None], appended, audio_config.pad_token_id)
    stream.groups.append(appended)
    seen = torch.where(kept[:, None], appended, audio_config.codebook_size)
    stream.history = torch.cat([stream.history, seen], dim=1)
    stream.appended_last = kept
    stream.speaking = stream.speaking & ~finished
    stream.ended |= finished
    return torch.where(finished, text_config.audio_eos_index, tokens)


__all__ = [
    "FunAudioChatGenerateOutput",
    "FunAudioChatGenerationMixin",
    "SpeechReply",
    "SpeechSamplingConfig",
    "joint_sample",
    "valid_speech_codes",
]
