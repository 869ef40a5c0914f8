"""Dual-rate decoding for Fun-Audio-Chat, written for the transformers 5 generation API.

`generation_mode="text"` is plain `GenerationMixin` sampling (the speech head never runs). `generation_mode="audio"`
runs the joint loop: one LLM step per 5 Hz position and, after each step, 5 speech codes (25 Hz) from the speech
head, conditioned on the LLM's hidden state and the input text token. All decoding state lives inside the call.

With `cache_implementation="static"` both modes run the same loop on preallocated caches, with each step compiled as
one graph (see `decoding_step`); the default path (dynamic caches, module calls) is the reference it must match.
Compile-time sizing: `decoding_cache.static_cache_length` buckets the caches, `warm_up` compiles ahead.
"""

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from transformers import GenerationConfig, GenerationMixin, StaticCache
from transformers.generation import (
    GenerateDecoderOnlyOutput,
    LogitsProcessorList,
    StoppingCriteria,
    StoppingCriteriaList,
)

from .configuration_fun_audio_chat import FunAudioChatAudioEncoderConfig
from .decoding_cache import GrowingSequence, StaticSequence, static_cache_length
from .decoding_step import DecodingState, compiled_decode_step, decode_attention, decode_step
from .deprecation import renamed_argument
from .prompts import check_reply_mode
from .speech_sampling import ProcessorChooser, SpeechSamplingConfig, StaticSpeechSampler, choose

# Decoding steps run by `warm_up`: compiling, then (CUDA graphs) warming up, recording and replaying.
WARM_UP_STEPS = 4
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


@dataclass
class FunAudioChatGenerateOutput(GenerateDecoderOnlyOutput):
    """`generate(..., return_dict_in_generate=True)` output.

    Args:
        sequences: [B, prompt + new] text ids (as the official model returns them: `<|audio_bos|>` first in audio
            mode, the text token of the step where speech ended replaced by `<|audio_eos|>`).
        speech_ids: [B, 5 * n] 25 Hz speech codes, one group of 5 per LLM step spent speaking (the 2 leading BOS
            groups and the final all-EOS group included). Rows that are not speaking at a step get a group of the
            speech pad id there; use [`valid_speech_codes`] for what the decoder accepts.
        audio: one float32 24 kHz waveform per row, when a token-to-waveform decoder is attached.
        sampling_rate: sampling rate of `audio`.
    """

    speech_ids: torch.LongTensor | None = None
    audio: list[torch.Tensor] | None = None
    sampling_rate: int | None = None
    num_speech_codes: int | None = None

    def valid_speech_codes(self, codebook_limit: int | None = None) -> list[torch.LongTensor]:
        """The decodable codes (`0 <= id < codebook_limit`, default: the model's `num_speech_codes`) of each
        row, in order."""
        return valid_speech_codes(self.speech_ids, codebook_limit or self.num_speech_codes)


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


def valid_speech_codes(speech_ids: torch.Tensor | None, codebook_limit: int | None = None) -> list[torch.LongTensor]:
    """Drops BOS/EOS/pad codes: returns, per row, the codes `0 <= id < codebook_limit` in order (default: the
    `num_speech_codes` of the released configuration)."""
    if speech_ids is None:
        return []
    if codebook_limit is None:
        codebook_limit = FunAudioChatAudioEncoderConfig().num_speech_codes
    return [row[(row >= 0) & (row < codebook_limit)] for row in speech_ids]


def _decode_row(token2wav, codes: torch.Tensor, voice) -> torch.Tensor:
    """One row's decodable codes → float32 waveform on the CPU (empty when the row did not speak)."""
    if codes.numel() == 0:
        return torch.zeros(0)
    device = next(token2wav.parameters()).device
    return token2wav.decode(codes[None].to(device), voice=voice)[0].float().cpu()


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
        voice: Any = None,
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
            voice: voice of the audio output: `"中文女"` (default) or `"中文男"`, a [192] speaker embedding, a
                `FunAudioChatVoice` (e.g. `model.token2wav.clone_voice("me.wav")`) or a saved voice's path
                (`speaker=` is its deprecated name, accepted with a `FutureWarning` until 0.2).
            return_audio: decode the speech codes into 24 kHz waveforms (default: when the model has its
                token-to-waveform decoder, see `from_pretrained(token2wav=...)`).
            force_audio_bos: in audio mode, force the first text token to `<|audio_bos|>` (what starts speech).
            speech_do_sample / speech_temperature / speech_top_k / speech_top_p / speech_min_p /
                speech_repetition_penalty: sampling of the speech codes; each defaults to `speech_<name>` in the
                generation config, else to the text setting (the official behaviour).
            streamer: receives the prompt, then each step's text ids `put(ids [B])` and, in audio mode and if the
                streamer has `put_speech`, each step's speech group `put_speech(codes [B, 5], speaking [B])`.
            kwargs: the usual `generate` arguments (`max_new_tokens`, `do_sample`, `temperature`, ...) and the
                processor outputs. `cache_implementation="static"` (here or in the generation config) decodes with
                preallocated caches and one compiled step per position, on every device (see `decoding_step`);
                `compile_config` (a `transformers.CompileConfig`) sets the `torch.compile` options and
                `disable_compile=True` runs the same step uncompiled. The first call of a new shape compiles (tens of
                seconds on a CPU): see [`~FunAudioChatGenerationMixin.warm_up`].

        Returns:
            Text mode: `sequences` (or a `GenerateDecoderOnlyOutput`). Audio mode: `(sequences, speech_ids)` like the
            official API (a [`SpeechReply`], whose `audio` holds the waveforms), or a [`FunAudioChatGenerateOutput`]
            with `return_dict_in_generate=True`.

        Example:

        ```python
        >>> out = model.generate(**inputs, generation_mode="audio", max_new_tokens=200, return_dict_in_generate=True)
        >>> processor.batch_decode(out.sequences[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
        >>> codes = out.valid_speech_codes()[0]  # for the CosyVoice3 decoder
        >>> fast = model.generate(**inputs, generation_mode="audio", cache_implementation="static")  # compiled step
        ```
        """
        voice = renamed_argument(kwargs, "speaker", "voice", voice, "generate")
        check_reply_mode(generation_mode, voice, "generation_mode")
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
            if return_audio:
                raise ValueError("`return_audio` applies to generation_mode='audio' only.")
            if self._static_decoding(generation_config or self.generation_config, kwargs):
                return super().generate(
                    **common, custom_generate=joint_sample, step_streamer=streamer, speech=False, **kwargs
                )
            return super().generate(**common, **kwargs)
        if not getattr(self, "has_speech_head", False):
            raise ValueError(
                "generation_mode='audio' needs a speech head, but this checkpoint has none "
                "(audio_config.enable_audio_invert_tower=False). Use generation_mode='text'."
            )
        if (kwargs.get("num_beams") or 1) > 1 or (
            generation_config is not None and (generation_config.num_beams or 1) > 1
        ):
            raise ValueError("generation_mode='audio' supports greedy decoding and sampling only (num_beams=1).")
        token2wav = self.token2wav if return_audio is not False else None
        if return_audio and token2wav is None:
            raise ValueError(
                "return_audio=True needs a token-to-waveform decoder: load the model with "
                "`from_pretrained(..., token2wav=<dir | hub id | FunAudioChatToken2Wav>)`."
            )
        if token2wav is not None and voice is not None:
            token2wav.resolve_voice(voice)  # an unknown voice fails now, not after generating
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
        if token2wav is None:
            return result if isinstance(result, FunAudioChatGenerateOutput) else SpeechReply(*result)
        if isinstance(result, FunAudioChatGenerateOutput):
            result.audio = [_decode_row(token2wav, codes, voice) for codes in result.valid_speech_codes()]
            result.sampling_rate = token2wav.config.sampling_rate
            return result
        sequences, speech_ids = result
        codes = valid_speech_codes(speech_ids, self.config.audio_config.num_speech_codes)
        audio = [_decode_row(token2wav, row, voice) for row in codes]
        # On the CPU, like the waveforms: the codes tensor then survives pipelines' moves to the CPU (see SpeechReply).
        return SpeechReply(sequences, speech_ids.cpu(), audio, token2wav.config.sampling_rate)

    @torch.no_grad()
    def start_reply(
        self,
        inputs: torch.Tensor | None = None,
        generation_mode: str = "audio",
        speech_overrides: dict | None = None,
        **kwargs,
    ) -> "ReplyStart":
        """Prefills one reply and returns where its decoding starts ([`ReplyStart`]), with the settings `generate`
        takes (`do_sample`, `temperature`, `max_new_tokens`, ...; eager caches only): `generate`'s own preparation
        and prefill, without the decoding loop. The reply engine (`transformers_fac.engine`) continues it step by
        step inside a running batch.

        Example:

        ```python
        >>> start = model.start_reply(**inputs, generation_mode="audio", max_new_tokens=60)
        >>> start.logits.shape, start.step_group.shape  # ([1, vocab], [1, 5])
        ```
        """
        check_reply_mode(generation_mode, name="generation_mode")
        speech = generation_mode == "audio"
        if speech and not getattr(self, "has_speech_head", False):
            raise ValueError("generation_mode='audio' needs a speech head, but this checkpoint has none.")
        self._check_new_tokens(None, kwargs)
        return super().generate(
            inputs,
            custom_generate=prefill_reply,
            speech_overrides=speech_overrides or {},
            speech=speech,
            output_speech_logits=False,
            **kwargs,
        )

    def warm_up(
        self, batch_size: int = 1, max_length: int = 256, generation_mode: str = "audio", **generate_kwargs
    ) -> None:
        """Compiles the static decoding step ahead of the first request, with a short dummy generation.

        `generate(..., cache_implementation="static")` compiles its step on the first call of each new shape: batch
        size, cache bucket (`decoding_cache.static_cache_length` of prompt + `max_new_tokens`), mode, greedy or
        sampled speech, dtype and device. This runs a few steps of such a call on a dummy prompt, so that later calls
        with the same settings (`generate_kwargs`: sampling, `compile_config`, ...), batch size and a total length in
        the same bucket as `max_length` decode at full speed from their first step. With `mode="reduce-overhead"` (the
        CUDA default) it also records the CUDA graphs.

        Example:

        ```python
        >>> model.warm_up(batch_size=1, max_length=1024)  # then requests of up to 1024 positions in all
        ```
        """
        prompt = torch.full((batch_size, 2), self.config.text_config.sil_index, dtype=torch.long, device=self.device)
        self.generate(
            prompt,
            generation_mode=generation_mode,
            max_new_tokens=max(max_length - prompt.shape[1], 1),
            stopping_criteria=StoppingCriteriaList([_StopAfter(prompt.shape[1] + WARM_UP_STEPS)]),
            cache_implementation="static",
            return_audio=False,
            **generate_kwargs,
        )

    @staticmethod
    def _static_decoding(generation_config: GenerationConfig | None, kwargs: dict) -> bool:
        """`cache_implementation="static"` with plain greedy or sampled decoding (what the static step runs; beam
        search and assisted decoding keep transformers' own loops)."""

        def setting(name: str, default=None):
            value = kwargs.get(name)
            if value is None and generation_config is not None:
                value = getattr(generation_config, name, None)
            return default if value is None else value

        plain = setting("num_beams", 1) == 1 and kwargs.get("assistant_model") is None
        return setting("cache_implementation") == "static" and plain

    def _prepare_cache_for_generation(self, generation_config: GenerationConfig, model_kwargs: dict, *args):
        """A static cache is sized in buckets (`decoding_cache.static_cache_length`), so that calls of similar length
        share one compiled step."""
        if generation_config.cache_implementation == "static" and not model_kwargs.get("cache"):
            *args, max_cache_length = args
            args = (*args, static_cache_length(max_cache_length))
        super()._prepare_cache_for_generation(generation_config, model_kwargs, *args)

    def _check_new_tokens(self, generation_config: GenerationConfig | None, kwargs: dict) -> None:
        value = kwargs.get("max_new_tokens")
        if value is None and generation_config is not None:
            value = generation_config.max_new_tokens
        if value is not None and value < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {value}.")


class _StopAfter(StoppingCriteria):
    """Ends every row once the sequences are `length` long."""

    def __init__(self, length: int):
        self.length = length

    def __call__(self, input_ids: torch.LongTensor, scores=None, **kwargs) -> torch.BoolTensor:
        done = input_ids.shape[1] >= self.length
        return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)


@dataclass
class ReplyStart:
    """A reply after its prefill (what [`prefill_reply`] returns): the decoding state, the logits of the prompt's last
    position [B, vocab], its speech group [B, 5] (None in text mode), and what `generate` prepared for the call (the
    prompt ids, the logits processors, the stopping criteria and the generation config of these settings)."""

    state: DecodingState
    logits: torch.Tensor
    step_group: torch.Tensor | None
    input_ids: torch.LongTensor
    logits_processor: LogitsProcessorList
    stopping_criteria: StoppingCriteriaList
    generation_config: GenerationConfig


def prefill_reply(
    model,
    input_ids: torch.LongTensor,
    logits_processor: LogitsProcessorList,
    stopping_criteria: StoppingCriteriaList,
    generation_config: GenerationConfig,
    synced_gpus: bool = False,
    speech_overrides: dict | None = None,
    speech: bool = True,
    **model_kwargs,
) -> ReplyStart:
    """The prefill of a reply (`custom_generate` of [`~FunAudioChatGenerationMixin.start_reply`], and the start of
    [`joint_sample`]): the standard prefill, the decoding state, and (`speech`) the prompt's speech group."""
    static = isinstance(model_kwargs.get("cache"), StaticCache)
    prompt_mask = model_kwargs.get("attention_mask")
    prompt_positions = model_kwargs.get("position_ids")
    outputs = model._prefill(input_ids, generation_config, model_kwargs)
    state = start_decoding(
        model,
        input_ids,
        outputs,
        prompt_mask,
        prompt_positions,
        static,
        speech,
        generation_config,
        speech_overrides or {},
    )
    step_group = first_speech_group(model, input_ids, outputs, prompt_mask, state) if speech else None
    return ReplyStart(
        state,
        outputs.logits[:, -1],
        step_group,
        input_ids,
        logits_processor,
        stopping_criteria,
        generation_config,
    )


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
    speech: bool = True,
    **model_kwargs,
):
    """The decoding loop (`custom_generate` of `generation_mode="audio"`, and of static text mode with
    `speech=False`).

    Per step: the text token is chosen from the logits (logits processors, stopping criteria and streamer, every
    step and per row), the step's speech group is appended for the speaking rows (EOS in any code ends the row's
    speech: the group becomes 5 × EOS and the step's text token `<|audio_eos|>`; the text goes on to `<|im_end|>`),
    and [`decode_step`] computes the next position's logits and speech group. The host reads the device once per
    step (one small tensor holding every flag the loop and the streamer need).
    """
    config = model.config
    text_config, audio_config = config.text_config, config.audio_config
    batch, device = input_ids.shape[0], input_ids.device
    static = isinstance(model_kwargs.get("cache"), StaticCache)
    pad_token_id = generation_config._pad_token_tensor
    has_eos_criteria = any(hasattr(criteria, "eos_token_id") for criteria in stopping_criteria)
    scores = () if generation_config.return_dict_in_generate and generation_config.output_scores else None
    raw_logits = () if generation_config.return_dict_in_generate and generation_config.output_logits else None
    streamer = step_streamer
    put_speech: Callable | None = getattr(streamer, "put_speech", None) if speech else None

    step = decode_step
    if static and not generation_config.disable_compile:
        step = compiled_decode_step(generation_config.compile_config, device)
    cuda_graphs = step is not decode_step and device.type == "cuda"

    # Static decoding: attention without copying grouped keys/values (see `decode_attention`).
    with decode_attention(model) if static else nullcontext():
        start = prefill_reply(
            model,
            input_ids,
            logits_processor,
            stopping_criteria,
            generation_config,
            speech_overrides=speech_overrides,
            speech=speech,
            **model_kwargs,
        )
        state, logits, step_group = start.state, start.logits, start.step_group
        del start

        unfinished = torch.ones(batch, dtype=torch.bool, device=device)
        speaking = input_ids[:, -1] == text_config.audio_bos_index
        appended_last = torch.zeros(batch, dtype=torch.bool, device=device)
        last_group = torch.full((batch, audio_config.group_size), audio_config.pad_token_id, device=device)
        groups = []
        ended_host = [False] * batch
        first_step = True
        while True:
            logits = logits.to(copy=True, dtype=torch.float32, device=device)
            next_scores = logits_processor(input_ids, logits)
            if scores is not None:
                scores += (next_scores,)
            if raw_logits is not None:
                raw_logits += (logits,)
            tokens = choose(next_scores, generation_config.do_sample)
            if first_step and force_audio_bos and speech:
                tokens = torch.full_like(tokens, text_config.audio_bos_index)
            first_step = False
            if has_eos_criteria:
                tokens = torch.where(unfinished, tokens, pad_token_id)
            input_ids = torch.cat([input_ids, tokens[:, None]], dim=-1)
            was_unfinished = unfinished
            unfinished = unfinished & ~stopping_criteria(input_ids, scores)

            flags = [unfinished]
            if speech:
                kept, finished, appended, input_ids[:, -1], speaking = append_speech(
                    config, step_group, last_group, speaking, was_unfinished, input_ids[:, -1]
                )
                flags += [kept, finished, appended]
            # The step's one host read: per row the text id, the flags and the appended group, as Python values.
            rows = torch.cat([input_ids[:, -1:], *[flag.view(batch, -1).long() for flag in flags]], dim=1).tolist()
            going_on = [bool(row[1]) for row in rows]
            kept_any = False
            if speech:
                kept_host = [bool(row[2]) for row in rows]
                ended_host = [ended or bool(row[3]) for ended, row in zip(ended_host, rows)]
                kept_any = any(kept_host)
                if kept_any:
                    groups.append(appended)
                    state.chooser.commit(appended, kept)
                    last_group = appended
                appended_last = kept
            if streamer is not None:
                streamer.put(torch.tensor([row[0] for row in rows]))
                if put_speech is not None and kept_any:
                    put_speech(torch.tensor([row[4:] for row in rows]), torch.tensor(kept_host))
            if not any(going_on):
                break

            # Next position: the text token, averaged with the group just appended where the row goes on speaking.
            last = input_ids[:, -1].clone(memory_format=torch.contiguous_format)  # the same strides at every step
            speaking = speaking | (last == text_config.audio_bos_index)
            run_head = speech and (static or not all(e or not g for e, g in zip(ended_host, going_on)))
            if cuda_graphs:
                torch.compiler.cudagraph_mark_step_begin()
            logits, step_group = step(model, state, last, last_group, speaking & appended_last, run_head)
            if step_group is not None:
                step_group = step_group.clone()  # may live in a CUDA graph's memory, which the next replay overwrites

    if streamer is not None:
        streamer.end()
    if not speech:
        if generation_config.return_dict_in_generate:
            return GenerateDecoderOnlyOutput(
                sequences=input_ids, scores=scores, logits=raw_logits, cache=model_kwargs.get("cache")
            )
        return input_ids
    speech_ids = torch.cat(groups, dim=1) if groups else torch.empty(batch, 0, dtype=torch.long, device=device)
    if generation_config.return_dict_in_generate:
        return FunAudioChatGenerateOutput(
            sequences=input_ids,
            scores=scores,
            logits=raw_logits,
            cache=model_kwargs.get("cache"),
            speech_ids=speech_ids,
            num_speech_codes=audio_config.num_speech_codes,
        )
    return input_ids, speech_ids


def first_speech_group(
    model, input_ids: torch.Tensor, outputs, prompt_mask: torch.Tensor | None, state
) -> torch.Tensor:
    """The speech group [B, 5] of the prompt's last position, from the prefill's hidden states (the whole prompt goes
    through the speech head; left-padded rows get a mask there)."""
    group_size = model.config.audio_config.group_size
    hidden = outputs.last_hidden_state
    head_input = hidden + model.get_input_embeddings()(input_ids[:, -hidden.shape[1] :]).to(hidden.dtype)
    valid = None
    if prompt_mask is not None and not bool(prompt_mask.all()):  # padded rows: the speech head needs a mask
        valid = prompt_mask[:, -hidden.shape[1] :].repeat_interleave(group_size, dim=1)
        valid = valid[:, : valid.shape[1] - (group_size - 1)]
        head_input = torch.where(prompt_mask[:, -hidden.shape[1] :, None].bool(), head_input, 0.0)
    return model.audio_invert_tower.generate_group(head_input, state.head, state.chooser, valid)


def append_speech(
    config,
    step_group: torch.Tensor | None,
    last_group: torch.Tensor,
    speaking: torch.Tensor,
    going: torch.Tensor,
    tokens: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One step's speech bookkeeping, per row: which rows append the step's group (those `speaking` [B] and `going`
    [B], still decoding; a None `step_group`: the head did not run, nothing is appended), and which of them end their
    speech (an EOS code: the group becomes 5 × EOS and the text token [B] `<|audio_eos|>`).

    Returns `(kept, finished, appended [B, 5] (pad where not kept), tokens, speaking)`.
    """
    audio_config, text_config = config.audio_config, config.text_config
    kept = speaking & going
    if step_group is None:
        kept = torch.zeros_like(kept)
        step_group = last_group
    finished = kept & (step_group == audio_config.eos_token_id).any(dim=-1)
    appended = torch.where(finished[:, None], audio_config.eos_token_id, step_group)
    appended = torch.where(kept[:, None], appended, audio_config.pad_token_id)
    tokens = torch.where(finished, text_config.audio_eos_index, tokens)
    return kept, finished, appended, tokens, speaking & ~finished


def start_decoding(
    model,
    input_ids: torch.Tensor,
    outputs,
    prompt_mask: torch.Tensor | None,
    prompt_positions: torch.Tensor | None,
    static: bool,
    speech: bool,
    generation_config: GenerationConfig,
    speech_overrides: dict,
) -> DecodingState:
    """The decoding state after the prefill: the LLM's sequence (its cache holds the prompt), and in audio mode an
    empty speech head sequence of the same kind and the code chooser."""
    batch, length, device = input_ids.shape[0], input_ids.shape[1], input_ids.device
    cache = outputs.cache
    if static:
        llm = StaticSequence(cache, cache.get_max_length(), batch, device, prompt_mask, length)
    else:
        padded = prompt_mask is not None and not bool(prompt_mask.all())
        if prompt_positions is not None:
            next_position = prompt_positions[:, -1] + 1
        else:
            next_position = torch.full((batch,), length, dtype=torch.long, device=device)
        llm = GrowingSequence(cache, next_position, prompt_mask if padded else None)
    if not speech:
        return DecodingState(llm)
    head = model.audio_invert_tower
    head_config = head.crq_transformer.config
    sampling = SpeechSamplingConfig.resolve(generation_config, speech_overrides)
    if static:
        capacity = head.group_size * cache.get_max_length()
        sequence = StaticSequence.empty(head_config, capacity, batch, device)
        chooser = StaticSpeechSampler(sampling, batch, model.config.audio_config.codebook_size, device)
    else:
        sequence = GrowingSequence.empty(head_config, batch, device)
        chooser = ProcessorChooser(sampling, batch, model.config.audio_config.codebook_size, device)
    return DecodingState(llm, head.start_state(sequence, outputs.last_hidden_state), chooser)


__all__ = [
    "FunAudioChatGenerateOutput",
    "FunAudioChatGenerationMixin",
    "SpeechReply",
    "SpeechSamplingConfig",
    "ReplyStart",
    "joint_sample",
    "prefill_reply",
    "valid_speech_codes",
]
