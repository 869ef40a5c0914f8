"""Fun-Audio-Chat: a Qwen3 LLM at 5 Hz fed by two audio encoders, with a 25 Hz speech head.

The module tree and parameter names are those of the official checkpoint (`continuous_audio_tower.*`,
`audio_tower.*`, `audio_invert_tower.*`, `language_model.model.*`, `language_model.lm_head.*`), so
`FunAudioLLM/Fun-Audio-Chat-8B` loads unchanged and what we save stays readable by the official code, vLLM and
mlx-audio.

The token-to-waveform decoder (CosyVoice3, a [`FunAudioChatToken2Wav`]) is an explicit part of the model: the
registered submodule `model.token2wav` (None without one). As a submodule it follows `model.to(...)` (device and
dtype) and `eval()`/`train()`; it is loaded once, by `from_pretrained` (with its voices, so that choosing a voice
later reads nothing from disk or network), onto the model's device (the first one with a `device_map`). It is kept
out of the LLM checkpoint: `save_pretrained` writes the official `model.safetensors` key set unchanged and the decoder
(weights and voices) into a `token2wav/` subfolder that the saved config names, where `from_pretrained` finds it
again. Its parameters are frozen (fine-tuning never touches them). This module is the only one of the model's that
imports the decoder side (`token2wav_loading`), and `forward`/`generate` never load or download anything.
"""

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoModelForCausalLM, Cache, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import ModelOutput
from transformers.utils.deprecation import deprecate_kwarg

from .configuration_fun_audio_chat import FunAudioChatConfig
from .generation_fun_audio_chat import FunAudioChatGenerationMixin
from .modeling_audio_encoders import (
    FunAudioChatContinuousEncoder,
    FunAudioChatDiscreteEncoder,
    sinusoid_table,
)
from .modeling_speech_head import FunAudioChatSpeechHead
from .quantization import with_skip_modules
from .token2wav_loading import (
    TOKEN2WAV_FOLDER,
    VOICE_DIR,
    default_token2wav_source,
    load_token2wav,
    save_token2wav,
    saved_voice,
)


@dataclass
class FunAudioChatOutput(ModelOutput):
    """Output of [`FunAudioChatForConditionalGeneration.forward`].

    Args:
        loss: `text_loss + speech_loss` (when `labels` are given).
        text_loss: shifted causal LM loss of the LLM.
        speech_loss: loss of the speech head (the hidden state at position p predicts the 5 codes of position p+1).
        text_logits: [B, S, vocab] (also available as `.logits`).
        speech_logits: [B, 5 * S, codebook_size].
        cache: the LLM key/value cache.
        last_hidden_state: final (normalised) LLM hidden states, the input of the speech head.
    """

    loss: torch.FloatTensor | None = None
    text_loss: torch.FloatTensor | None = None
    speech_loss: torch.FloatTensor | None = None
    text_logits: torch.FloatTensor | None = None
    speech_logits: torch.FloatTensor | None = None
    cache: Cache | None = None
    last_hidden_state: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None

    @property
    def logits(self) -> torch.FloatTensor | None:
        return self.text_logits

    @property
    def past_key_values(self) -> Cache | None:
        return self.cache


@dataclass
class _AudioMerge:
    """What merging the audios into the LLM input produced."""

    inputs_embeds: torch.Tensor
    slot_mask: torch.Tensor
    slot_text_embeds: torch.Tensor | None
    labels: torch.Tensor | None
    speech_labels: torch.Tensor | None


class FunAudioChatPreTrainedModel(PreTrainedModel):
    config: FunAudioChatConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    input_modalities = ("audio", "text")
    supports_gradient_checkpointing = True
    _no_split_modules = ["FunAudioChatEncoderLayer", "Qwen3DecoderLayer"]
    _skip_keys_device_placement = ["cache", "past_key_values"]
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    # Trainer: the losses are means over the batch; let it scale them under gradient accumulation.
    accepts_loss_kwargs = False

    def _init_weights(self, module: nn.Module):
        super()._init_weights(module)
        if isinstance(module, FunAudioChatContinuousEncoder):
            table = sinusoid_table(module.positional_embedding.shape[0], module.positional_embedding.shape[1])
            init.copy_(module.positional_embedding, table)


class FunAudioChatForConditionalGeneration(FunAudioChatGenerationMixin, FunAudioChatPreTrainedModel):
    r"""Fun-Audio-Chat speech-to-speech model: speech (and text) in, text and 25 Hz speech codes out.

    Example:

    ```python
    >>> import transformers_fac  # registers the classes
    >>> from transformers import AutoModelForMultimodalLM, AutoProcessor
    >>> model = AutoModelForMultimodalLM.from_pretrained("FunAudioLLM/Fun-Audio-Chat-8B", dtype="bfloat16")
    >>> processor = AutoProcessor.from_pretrained("FunAudioLLM/Fun-Audio-Chat-8B")
    >>> inputs = processor(text=prompt, audio=[waveform_16khz], return_tensors="pt")
    >>> sequences, speech_ids = model.generate(**inputs, generation_mode="audio")
    ```
    """

    output_modalities = ("audio", "text")
    # Left in their dtype by a `quantization_config` (torchao, bitsandbytes, ...) that names no modules of its own:
    # only the Qwen3 backbone's linear layers are quantized; the audio encoders, the speech head, the embeddings, the
    # output heads and the decoder (attached after loading, never quantized) keep their precision.
    quantization_skip_modules = (
        "continuous_audio_tower",
        "audio_tower",
        "audio_invert_tower",
        "language_model.model.embed_tokens",
        "language_model.lm_head",
        "token2wav",
    )
    # With `quantize_speech_head=True`: the speech head's CRQ transformer is quantized too, its projections and code
    # head are not.
    speech_head_skip_modules = (
        "audio_invert_tower.pre_matching",
        "audio_invert_tower.input_matching",
        "audio_invert_tower.output_matching",
        "audio_invert_tower.lm_head",
    )
    _tied_weights_keys = {"audio_invert_tower.lm_head.weight": "audio_tower.embed_tokens.weight"}

    def __init__(self, config: FunAudioChatConfig):
        super().__init__(config)
        audio_config = config.audio_config
        self.continuous_audio_tower = FunAudioChatContinuousEncoder(audio_config)
        self.audio_tower = FunAudioChatDiscreteEncoder(audio_config)
        self.audio_invert_tower = None
        if audio_config.enable_audio_invert_tower:
            self.audio_invert_tower = FunAudioChatSpeechHead(audio_config)
        else:
            self._tied_weights_keys = {}
        self.language_model = AutoModelForCausalLM.from_config(config.text_config)
        # The token-to-waveform decoder: attached by `from_pretrained` / `attach_token2wav` (see the module docstring).
        self.register_module("token2wav", None)
        self.post_init()

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        *model_args,
        token2wav: Any = "auto",
        quantize_speech_head: bool = False,
        **kwargs,
    ):
        r"""Loads the checkpoint and its token-to-waveform decoder (for `generate(..., generation_mode="audio")` audio).

        Args:
            token2wav: `"auto"` (default): the decoder the config names (`token2wav_source`, e.g. the `token2wav/`
                subfolder of a saved model) or the one known for the official repo; a directory, a Hub repo id or a
                [`FunAudioChatToken2Wav`]; None: no audio output. It is loaded now, with its voices (downloads, if
                any, happen here, never in `generate`).
            quantize_speech_head: with a `quantization_config` that names no modules to skip, quantize the speech
                head's CRQ transformer too (default: only the backbone's linear layers; see
                `quantization_skip_modules`).

        Example:

        ```python
        >>> from transformers_fac.quantization import quantization_config
        >>> model = FunAudioChatForConditionalGeneration.from_pretrained(
        ...     "FunAudioLLM/Fun-Audio-Chat-8B", dtype="bfloat16", quantization_config=quantization_config("int8", "cuda")
        ... )
        ```
        """
        if quantize_speech_head and kwargs.get("quantization_config") is None:
            raise ValueError(
                "quantize_speech_head=True needs a quantization_config (e.g. quantization_config('int8'))."
            )
        if kwargs.get("quantization_config") is not None:
            kwargs["quantization_config"] = with_skip_modules(
                kwargs["quantization_config"], cls.modules_not_quantized(quantize_speech_head)
            )
        loaded = super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded  # (model, loading_info) on request
        if token2wav == "auto":
            token2wav = default_token2wav_source(model.config, pretrained_model_name_or_path)
        if token2wav is not None:
            voice = saved_voice(pretrained_model_name_or_path, kwargs.get("adapter_kwargs"))
            model.attach_token2wav(token2wav, checkpoint=pretrained_model_name_or_path, default_voice=voice)
        return loaded

    @classmethod
    def modules_not_quantized(cls, quantize_speech_head: bool = False) -> list[str]:
        """The modules a quantized load leaves in their dtype (see `quantization_skip_modules`).

        Example:
            >>> "language_model.lm_head" in FunAudioChatForConditionalGeneration.modules_not_quantized()
            True
        """
        if not quantize_speech_head:
            return list(cls.quantization_skip_modules)
        kept = [name for name in cls.quantization_skip_modules if name != "audio_invert_tower"]
        return kept + list(cls.speech_head_skip_modules)

    def attach_token2wav(self, source: Any, checkpoint: str | os.PathLike | None = None, default_voice: Any = None):
        """Loads `source` (instance, directory or Hub id; a relative directory is first looked up in `checkpoint`)
        with its voices, and makes it this model's frozen `token2wav` submodule on the model's device.
        `default_voice` (a voice saved next to the checkpoint or adapter) becomes what `voice=None` means."""
        decoder = load_token2wav(source, checkpoint=checkpoint, device=self.device, default_voice=default_voice)
        self.token2wav = decoder.requires_grad_(False)
        return decoder

    def save_pretrained(self, save_directory: str | os.PathLike, *args, state_dict: dict | None = None, **kwargs):
        """Saves the model as the official checkpoint layout, and its decoder (if any) in the `token2wav/` subfolder
        (weights and stock voices, named by the saved config) with its default voice in `voice/`, so that
        `from_pretrained` reloads both."""
        decoder = self.token2wav
        if decoder is not None and kwargs.get("push_to_hub"):
            raise ValueError(
                "save_pretrained(push_to_hub=True) would not upload the token2wav/ subfolder; use "
                "model.push_to_hub(repo_id), which uploads the model with its decoder."
            )
        source = self.config.token2wav_source
        if decoder is not None:
            self.config.token2wav_source = TOKEN2WAV_FOLDER
        # Detached while the LLM checkpoint is written, so that no state dict holds its keys (a quantizer's own
        # state dict, of a quantized model, included).
        self.token2wav = None
        try:
            super().save_pretrained(save_directory, *args, state_dict=state_dict, **kwargs)
        finally:
            self.token2wav = decoder
            self.config.token2wav_source = source
        if decoder is not None:
            save_token2wav(decoder, Path(save_directory) / TOKEN2WAV_FOLDER)
            if decoder.default_voice is not None:
                decoder.default_voice.save(Path(save_directory) / VOICE_DIR)

    # ------------------------------------------------------------------ accessors
    @property
    def group_size(self) -> int:
        return self.config.audio_config.group_size

    @property
    def has_speech_head(self) -> bool:
        return self.audio_invert_tower is not None

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module):
        self.language_model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.language_model.get_output_embeddings()

    def set_output_embeddings(self, value: nn.Module):
        self.language_model.set_output_embeddings(value)

    def get_decoder(self) -> nn.Module:
        return self.language_model.get_decoder()

    def set_decoder(self, decoder: nn.Module):
        self.language_model.set_decoder(decoder)

    # ------------------------------------------------------------------ audio → LLM input
    def get_audio_features(
        self,
        speech_ids: torch.Tensor,
        speech_attention_mask: torch.Tensor,
        input_features: torch.Tensor | None = None,
        feature_attention_mask: torch.Tensor | None = None,
        feature_exist_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One 5 Hz vector per group of 5 speech frames, for every audio: ([A, T5, dim], valid counts [A]).

        `speech_ids` [A, T25] are padded to a multiple of 5 with the speech pad id; waveform features (if any) are
        encoded by the continuous encoder and replace (or are added to) the discrete vectors of their audios.
        """
        group = self.group_size
        pad = (-speech_ids.shape[-1]) % group
        if pad:
            speech_ids = nn.functional.pad(speech_ids, (0, pad), value=self.config.audio_config.pad_token_id)
        continuous = None
        if input_features is not None:
            if feature_attention_mask is None:
                feature_attention_mask = torch.ones(
                    input_features.shape[0], input_features.shape[-1], dtype=torch.long
                )
            continuous, _ = self.continuous_audio_tower(
                input_features, feature_attention_mask.to(input_features.device), speech_ids.shape[-1]
            )
            continuous = continuous.to(self.audio_tower.embed_tokens.weight.dtype)
        features = self.audio_tower(speech_ids, continuous, feature_exist_mask)
        counts = (speech_attention_mask.sum(-1) + group - 1) // group
        return features, counts.to(features.device)

    def _slot_text(
        self, text_ids: torch.Tensor, text_attention_mask: torch.Tensor, slots: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Aligns the reply text of each audio to its 5 Hz slots (training): ids [A, slots] with eos/pad → `<|sil|>`."""
        text = self.config.text_config
        pad_id = text.pad_token_id if text.pad_token_id else text.eos_token_id
        text_ids = text_ids[:, :slots]
        if text_ids.shape[1] < slots:
            text_ids = nn.functional.pad(text_ids, (0, slots - text_ids.shape[1]), value=pad_id)
        filler = torch.zeros_like(text_ids, dtype=torch.bool)
        for special in (text.eos_token_id, text.pad_token_id):
            if special is not None:
                filler |= text_ids == special
        text_ids = text_ids.masked_fill(filler, text.sil_index)
        has_text = text_attention_mask.bool().to(text_ids.device)
        embeds = self.get_input_embeddings()(text_ids) * has_text[:, None, None]
        return text_ids, embeds

    def _merge_audio(
        self,
        input_ids: torch.Tensor,
        inputs_embeds: torch.Tensor,
        speech_ids: torch.Tensor,
        speech_attention_mask: torch.Tensor | None,
        input_features: torch.Tensor | None,
        feature_attention_mask: torch.Tensor | None,
        feature_exist_mask: torch.Tensor | None,
        text_ids: torch.Tensor | None,
        text_attention_mask: torch.Tensor | None,
        labels: torch.Tensor | None,
    ) -> _AudioMerge:
        cfg = self.config
        device = inputs_embeds.device
        speech_ids = speech_ids.to(device=device, dtype=torch.long)
        if speech_attention_mask is None:
            speech_attention_mask = torch.ones_like(speech_ids)
        speech_attention_mask = speech_attention_mask.to(device)
        features, counts = self.get_audio_features(
            speech_ids, speech_attention_mask, input_features, feature_attention_mask, feature_exist_mask
        )
        slots = features.shape[1]
        slot_valid = torch.arange(slots, device=device)[None, :] < counts[:, None]

        slot_text_ids = slot_text_embeds = None
        if text_ids is not None:
            if text_attention_mask is None:
                text_attention_mask = torch.ones(text_ids.shape[0], dtype=torch.bool, device=device)
            slot_text_ids, slot_text_embeds = self._slot_text(text_ids.to(device), text_attention_mask, slots)
            features = (slot_text_embeds.to(features.dtype) + features) / 2

        slot_mask = input_ids == cfg.audio_token_index
        n_tokens, n_features = int(slot_mask.sum()), int(slot_valid.sum())
        if n_tokens != n_features:
            raise ValueError(
                f"The prompt holds {n_tokens} {cfg.audio_token_index} (<|AUDIO|>) tokens but the audios give "
                f"{n_features} 5 Hz vectors: pass the processor's outputs unchanged (one <|AUDIO|> per 5 speech frames)."
            )
        inputs_embeds = inputs_embeds.masked_scatter(
            slot_mask[..., None].expand_as(inputs_embeds), features[slot_valid].to(inputs_embeds.dtype)
        )
        slot_text_selected = None if slot_text_embeds is None else slot_text_embeds[slot_valid]

        speech_labels = None
        if labels is not None:
            labels, speech_labels = self._build_labels(
                labels, slot_mask, slot_valid, speech_ids, speech_attention_mask, slot_text_ids, text_attention_mask
            )
        return _AudioMerge(inputs_embeds, slot_mask, slot_text_selected, labels, speech_labels)

    def _build_labels(
        self,
        labels: torch.Tensor,
        slot_mask: torch.Tensor,
        slot_valid: torch.Tensor,
        speech_ids: torch.Tensor,
        speech_attention_mask: torch.Tensor,
        slot_text_ids: torch.Tensor | None,
        text_attention_mask: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Text labels (audio slots → aligned reply text) and speech labels [B, 5 * S], as the official recipe."""
        cfg = self.config
        ignore = cfg.ignore_index
        group = self.group_size
        labels = labels.to(slot_mask.device)
        unlabeled = labels == ignore

        codes = torch.where(speech_attention_mask == 1, speech_ids, ignore)
        codes = nn.functional.pad(codes, (0, (-codes.shape[-1]) % group), value=ignore)
        codes = codes.view(codes.shape[0], -1, group)[slot_valid]
        speech_labels = torch.full((*labels.shape, group), ignore, dtype=labels.dtype, device=labels.device)
        speech_labels[slot_mask] = codes.to(labels.dtype)
        speech_labels[unlabeled] = ignore
        speech_labels[labels == cfg.text_config.audio_eos_index] = cfg.audio_config.eos_token_id

        text_labels = labels.masked_fill(labels == cfg.audio_token_index, ignore)
        if slot_text_ids is not None:
            has_text = text_attention_mask.bool().to(labels.device)[:, None]
            per_slot = torch.where(
                speech_attention_mask[:, ::group][:, : slot_text_ids.shape[1]] == 1, slot_text_ids, ignore
            )
            per_slot = per_slot.masked_fill(~has_text, ignore)
            text_labels = text_labels.clone()
            text_labels[slot_mask] = per_slot[slot_valid].to(labels.dtype)
            text_labels = text_labels.masked_fill(unlabeled, ignore)
        return text_labels, speech_labels.flatten(1)

    # ------------------------------------------------------------------ forward
    @deprecate_kwarg("past_key_values", "6.0.0", new_name="cache")
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        input_features: torch.FloatTensor | None = None,
        speech_ids: torch.LongTensor | None = None,
        text_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        speech_attention_mask: torch.Tensor | None = None,
        feature_attention_mask: torch.Tensor | None = None,
        feature_exist_mask: torch.Tensor | None = None,
        text_attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        text_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        output_speech_logits: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs,
    ) -> FunAudioChatOutput:
        r"""
        Args:
            input_ids: [B, S] text ids with one `<|AUDIO|>` per 5 speech frames of each audio.
            input_features: [A_wav, 128, T] log-mel features of the audios that have a waveform.
            speech_ids: [A, T25] speech codes of every audio (`<|audio_pad|>` ids for user audio).
            text_ids: [A, T5] reply text aligned to the 5 Hz slots of each audio (training of speech replies).
            attention_mask: [B, S] padding mask.
            speech_attention_mask / feature_attention_mask: masks of `speech_ids` / `input_features`.
            feature_exist_mask: [A] True for the audios that have `input_features`.
            text_attention_mask: [A] True for the audios whose `text_ids` are used.
            text_embeds: [B, S, dim] text-token embeddings added to the speech head input (defaults to the
                embeddings of `input_ids`, audio slots taking their aligned text).
            labels: [B, S] text labels (`-100` = ignored); speech labels are derived from them and `speech_ids`.
            output_speech_logits: run the speech head (default: when the model has one).
            logits_to_keep: compute text logits for the last N positions only (0 = all).
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of `input_ids` or `inputs_embeds`.")
        merge = None
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)
            if text_embeds is None:
                text_embeds = inputs_embeds
            if speech_ids is not None and input_ids.shape[1] != 1:
                merge = self._merge_audio(
                    input_ids,
                    inputs_embeds,
                    speech_ids,
                    speech_attention_mask,
                    input_features,
                    feature_attention_mask,
                    feature_exist_mask,
                    text_ids,
                    text_attention_mask,
                    labels.clone() if labels is not None else None,
                )
                inputs_embeds = merge.inputs_embeds
                if merge.slot_text_embeds is not None:
                    text_embeds = text_embeds.masked_scatter(
                        merge.slot_mask[..., None].expand_as(text_embeds), merge.slot_text_embeds.to(text_embeds.dtype)
                    )
                labels = merge.labels
            elif labels is not None:
                labels = labels.masked_fill(labels == self.config.audio_token_index, self.config.ignore_index)

        base = self.language_model.model(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            use_cache=use_cache,
            **kwargs,
        )
        hidden = base.last_hidden_state
        kept = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        text_logits = self.language_model.lm_head(hidden[:, kept])

        text_loss = speech_loss = speech_logits = None
        if labels is not None:
            text_loss = self.language_model.loss_function(
                text_logits, labels, vocab_size=self.config.text_config.vocab_size
            )
        if output_speech_logits is None:
            output_speech_logits = self.has_speech_head
        if output_speech_logits:
            if not self.has_speech_head:
                raise ValueError("This checkpoint has no speech head (audio_config.enable_audio_invert_tower=False).")
            speech_labels = merge.speech_labels if merge is not None else None
            speech_logits, speech_loss = self._speech_head_forward(
                hidden, text_embeds, speech_labels, attention_mask, position_ids
            )

        loss = None
        if text_loss is not None:
            loss = text_loss + speech_loss if speech_loss is not None else text_loss
        return FunAudioChatOutput(
            loss=loss,
            text_loss=text_loss,
            speech_loss=speech_loss,
            text_logits=text_logits,
            speech_logits=speech_logits,
            cache=base.cache if use_cache else None,
            last_hidden_state=hidden,
            hidden_states=base.hidden_states,
            attentions=base.attentions,
        )

    def _speech_head_forward(
        self,
        hidden: torch.Tensor,
        text_embeds: torch.Tensor | None,
        speech_labels: torch.Tensor | None,
        attention_mask: torch.Tensor | None,
        position_ids: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Teacher-forced speech head: logits [B, 5S, codebook] and, with labels, the shifted loss."""
        if text_embeds is None:
            raise ValueError("The speech head needs `text_embeds` when the model is called with `inputs_embeds`.")
        head_input = hidden + text_embeds.detach().to(hidden.dtype)
        code_embeddings = None
        if speech_labels is not None:
            targets = speech_labels.masked_fill(
                speech_labels == self.config.ignore_index, self.config.audio_config.pad_token_id
            )
            code_embeddings = self.audio_tower.embed_tokens(targets).to(hidden.dtype)
        logits = self.audio_invert_tower(head_input, code_embeddings, attention_mask, position_ids)
        if speech_labels is None:
            return logits, None
        shifted = nn.functional.pad(speech_labels, (0, self.group_size), value=self.config.ignore_index)
        loss = self.language_model.loss_function(
            logits,
            None,
            vocab_size=self.config.audio_config.codebook_size,
            shift_labels=shifted[:, self.group_size :].contiguous(),  # a slice of a batch > 1 is not contiguous
        )
        return logits, loss


__all__ = ["FunAudioChatForConditionalGeneration", "FunAudioChatOutput", "FunAudioChatPreTrainedModel"]
