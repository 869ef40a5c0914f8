"""`FunAudioChatProcessor`: text tokenizer + Whisper feature extractor + speech-code tokenizer of Fun-Audio-Chat.

It reproduces the official processor's outputs exactly (inference and training inputs) and adds what the official one
lacks: every common audio input form, resampling, clear errors for bad audio, audio longer than 30 s without silent
truncation, chat templates with audio content blocks, and `post_process_multimodal_output` for the `any-to-any`
pipeline.
"""

import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np
from transformers.feature_extraction_utils import BatchFeature
from transformers.processing_utils import ProcessorMixin

from .audio_io import AudioInputError, load_audio
from .prompts import TOKEN_FPS

try:  # marked control tokens (sanitize_control_tokens=True) are user text, not placeholders
    from transformers.processing_utils import _UNMARKED
except ImportError:  # pragma: no cover - older/newer transformers
    _UNMARKED = ""

MAX_SOURCE_POSITIONS = 1500
"""Positions of the audio encoder (`audio_config.max_source_positions`): 1500 at 5 Hz = 300 s of audio."""

DEFAULT_MAX_AUDIO_SECONDS = 300.0
"""The longest audio the processor accepts by default (what the audio encoder's positions cover)."""

DEFAULT_ASSISTANT_BOS_DELAY = 10
"""Training targets start with this many `<|audio_bos|>` speech tokens before the codes (two 5-token groups)."""

_AUDIO_BLOCK_TYPES = ("audio", "input_audio", "audio_url")
_AUDIO_SOURCE_KEYS = ("audio", "path", "url")
_CONVERSATION_AUDIO_KEY = "_fun_audio_chat_audio"


def default_chat_template() -> str:
    """The official Fun-Audio-Chat chat template (ChatML), used when a checkpoint ships none."""
    return resources.files(__package__).joinpath("templates/chat_template.jinja").read_text(encoding="utf-8")


def format_speech_codes(
    codes: Sequence[int], num_bos: int = DEFAULT_ASSISTANT_BOS_DELAY, bos_token: str = "<|audio_bos|>"
) -> str:
    """Speech-token string of a training target: `num_bos` × `<|audio_bos|>` then `[AU%04d]` per CosyVoice3 code.

    This is the `token` of an assistant audio item (the official data preparation's format).

    Example:
        >>> format_speech_codes([5, 6560], num_bos=2)
        '<|audio_bos|><|audio_bos|>[AU0005][AU6560]'
    """
    return bos_token * num_bos + "".join(f"[AU{int(code):04d}]" for code in codes)


@dataclass
class _AudioItem:
    """One audio input after loading: its 16 kHz waveform (None for code-only items), speech-token string, reply text
    (None unless it is a training item)."""

    waveform: np.ndarray | None
    speech: str
    text: str | None = None


class FunAudioChatProcessor(ProcessorMixin):
    r"""Processor of Fun-Audio-Chat: prepares text prompts with audio for `FunAudioChatForConditionalGeneration`.

    `processor(text=..., audio=[...], return_tensors="pt")` expands each `<|AUDIO|>` placeholder of `text` (wrapped in
    `<|audio_bos|>…<|audio_eos|>` when the text has not already done so) to one `<|AUDIO|>` per 5 speech frames
    (0.2 s) of the matching audio, in order, and returns:

    - `input_ids`, `attention_mask`: the tokenized prompts (padded on the **left** by default; pass
      `padding_side="right"` for training batches);
    - `speech_ids`, `speech_attention_mask`: one speech token per 25 Hz frame per audio (`<|audio_pad|>` for
      waveform inputs, the codes for training targets), right-padded to a multiple of `audio_group_size`;
    - `input_features` [A, 128, T], `feature_attention_mask` [A, T]: Whisper log-mel features of the audios that
      have a waveform, padded to `chunk_length` (30 s) or, for longer audio, to the next multiple of it (nothing is
      truncated); absent when no audio has a waveform;
    - `feature_exist_mask` [N]: which audios have a waveform;
    - `text_ids`, `text_attention_mask`: only when an audio is a training item (see below): the tokenized reply text
      of every audio, right-padded with the text pad id, and whether it is non-empty.

    Audio inputs (one per placeholder): any form `transformers_fac.audio_io.load_audio` reads (waveform at 16 kHz or
    at the `sampling_rate` keyword, path, URL, `(waveform, rate)`, `{"array", "sampling_rate"}`, `datasets.Audio`
    value, ...), or a **training item**: a dict or JSON string `{"path": wav path or "", "token": speech-token
    string, "text": reply text}` as in the official training data. `token` is `"<|audio_pad|>" * frames` for user
    audio or `format_speech_codes(codes)` for an assistant target (whose waveform, if any, is ignored); `text` is
    the assistant reply aligned with the codes ("" for user audio).

    Args:
        feature_extractor (`WhisperFeatureExtractor`): 128-bin log-mel features at 16 kHz.
        tokenizer (`PreTrainedTokenizerBase`): the text tokenizer (Qwen3 vocabulary + audio special tokens).
        speech_tokenizer (`PreTrainedTokenizerBase`): the speech-code tokenizer (`[AU0000]`…`[AU6560]` = ids 0…6560,
            then `<|audio_bos|>`, `<|audio_eos|>`, `<|audio_pad|>`, `<|endoftext|>`), stored in `speech_tokenizer/`.
        chat_template (`str`, *optional*): Jinja chat template; defaults to the official one.
        audio_token / audio_bos_token / audio_eos_token / audio_pad_token (`str`): the special tokens.
        audio_group_size (`int`, defaults to 5): speech frames per LLM position (25 Hz → 5 Hz).
        max_audio_seconds (`float`, defaults to 300): longest accepted audio, per audio; longer audio raises a
            `ValueError` naming the limit. 300 s is what the audio encoder's `max_source_positions=1500` positions
            at 5 Hz hold.

    Example:
        >>> import transformers_fac  # registers the processor with AutoProcessor
        >>> from transformers import AutoProcessor
        >>> processor = AutoProcessor.from_pretrained("tests/fixtures/golden/tiny-fac")
        >>> messages = [
        ...     {"role": "system", "content": "You are asked to generate text tokens."},
        ...     {"role": "user", "content": [{"type": "audio", "path": "tests/fixtures/audio/question_en.wav"}]},
        ... ]
        >>> inputs = processor.apply_chat_template(
        ...     messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
        ... )
        >>> sorted(inputs)  # doctest: +NORMALIZE_WHITESPACE
        ['attention_mask', 'feature_attention_mask', 'feature_exist_mask', 'input_features', 'input_ids',
         'speech_attention_mask', 'speech_ids']
    """

    default_padding_side = "left"

    def __init__(
        self,
        feature_extractor=None,
        tokenizer=None,
        speech_tokenizer=None,
        chat_template: str | None = None,
        audio_token: str = "<|AUDIO|>",
        audio_bos_token: str = "<|audio_bos|>",
        audio_eos_token: str = "<|audio_eos|>",
        audio_pad_token: str = "<|audio_pad|>",
        audio_group_size: int = 5,
        max_audio_seconds: float = DEFAULT_MAX_AUDIO_SECONDS,
    ):
        if chat_template is None:
            chat_template = default_chat_template()
        self.audio_token = getattr(tokenizer, "audio_token", None) or audio_token
        self.audio_bos_token = getattr(tokenizer, "audio_bos_token", None) or audio_bos_token
        self.audio_eos_token = getattr(tokenizer, "audio_eos_token", None) or audio_eos_token
        self.audio_pad_token = getattr(tokenizer, "audio_pad_token", None) or audio_pad_token
        self.audio_token_id = tokenizer.convert_tokens_to_ids(self.audio_token)
        if speech_tokenizer is not None:
            audio_group_size = speech_tokenizer.init_kwargs.get("audio_group_size", audio_group_size)
        self.audio_group_size = int(audio_group_size)
        if not max_audio_seconds > 0:
            raise ValueError(f"max_audio_seconds must be positive, got {max_audio_seconds!r}.")
        self.max_audio_seconds = max_audio_seconds
        super().__init__(feature_extractor, tokenizer, speech_tokenizer, chat_template=chat_template)

    # ------------------------------------------------------------------------------------------------------------
    # __call__
    # ------------------------------------------------------------------------------------------------------------

    def __call__(self, text=None, audio=None, **kwargs) -> BatchFeature:
        """Tokenize `text` (a string or a list) and prepare `audio` (a list, one entry per `<|AUDIO|>` in order).

        Keyword arguments go to the tokenizer (`padding`, `padding_side`, `return_tensors`, ...); `sampling_rate`
        is the rate of bare waveforms in `audio` (default 16 kHz; they are resampled).
        """
        sampling_rate = kwargs.pop("sampling_rate", None)
        if isinstance(kwargs.get("audio_kwargs"), Mapping):
            audio_kwargs = dict(kwargs["audio_kwargs"])
            sampling_rate = audio_kwargs.pop("sampling_rate", sampling_rate)
            kwargs["audio_kwargs"] = audio_kwargs
        for key, value in (("padding", True), ("padding_side", self.default_padding_side)):
            if key not in kwargs and key not in (kwargs.get("text_kwargs") or {}):
                kwargs[key] = value

        if text is not None:
            text = self._prepare_text(text)
        if audio is not None:
            audio = self._load_audio_items(audio, text, sampling_rate)
        return super().__call__(text=text, audio=audio, **kwargs)

    def prepare_inputs_layout(self, images=None, text=None, videos=None, audio=None, **kwargs):
        # `__call__` already normalized text and loaded the audio items.
        return images, text, videos, audio

    def _prepare_text(self, text: str | Sequence[str]) -> list[str]:
        texts = [text] if isinstance(text, str) else list(text)
        if not all(isinstance(sample, str) for sample in texts):
            raise ValueError("`text` must be a string or a list of strings.")
        return [self._wrap_placeholders(sample) for sample in texts]

    def _wrap_placeholders(self, sample: str) -> str:
        """Wrap each `<|AUDIO|>` that has neither `<|audio_bos|>` before it nor `<|audio_eos|>` after it."""
        bos, eos, token = self.audio_bos_token, self.audio_eos_token, self.audio_token
        pieces, start = [], 0
        for match in self._placeholder_pattern().finditer(sample):
            begin, end = match.span()
            has_bos = sample[max(0, begin - len(bos)) : begin] == bos
            has_eos = sample[end : end + len(eos)] == eos
            pieces.append(sample[start:begin])
            pieces.append(token if (has_bos or has_eos) else bos + token + eos)
            start = end
        pieces.append(sample[start:])
        return "".join(pieces)

    def _placeholder_pattern(self) -> re.Pattern:
        return re.compile(_UNMARKED + re.escape(self.audio_token))

    def _load_audio_items(self, audio: Any, text: list[str] | None, sampling_rate: float | None) -> list[_AudioItem]:
        items = self._as_audio_list(audio)
        if text is not None:
            num_placeholders = sum(len(self._placeholder_pattern().findall(sample)) for sample in text)
            if num_placeholders != len(items):
                raise ValueError(
                    f"The text has {num_placeholders} {self.audio_token} placeholder(s) but {len(items)} audio "
                    f"input(s) were given; pass exactly one audio per placeholder, in order."
                )
        return [self._load_item(item, index, sampling_rate) for index, item in enumerate(items)]

    @staticmethod
    def _as_audio_list(audio: Any) -> list[Any]:
        """One audio or a list of audios → a list of audios (a bare array or tensor is one audio)."""
        if isinstance(audio, tuple) and len(audio) == 2 and any(_is_number(part) for part in audio):
            return [audio]  # (waveform, sampling_rate) or (sampling_rate, waveform)
        if isinstance(audio, (list, tuple)):
            if audio and all(_is_number(value) for value in audio):
                return [audio]  # one waveform given as a list of numbers
            return list(audio)
        return [audio]

    @property
    def _sampling_rate(self) -> int:
        return int(getattr(self.feature_extractor, "sampling_rate", 16000))

    def _frames(self, num_samples: int) -> int:
        """25 Hz speech frames of a waveform, as the official processor counts them (float, then floor)."""
        return int(num_samples / self._sampling_rate * TOKEN_FPS)

    def _load_item(self, item: Any, index: int, sampling_rate: float | None) -> _AudioItem:
        name = f"audio[{index}]"
        if isinstance(item, str) and item.lstrip().startswith("{"):
            try:
                item = json.loads(item)
            except json.JSONDecodeError as error:
                raise AudioInputError(
                    f"{name}: looks like a JSON training item but is not valid JSON ({error})."
                ) from error
        if isinstance(item, Mapping) and ("token" in item or "text" in item):
            return self._load_training_item(item, name)
        if item is None:
            raise AudioInputError(f"{name}: no audio given (None).")
        waveform = load_audio(item, sampling_rate=sampling_rate, target_sampling_rate=self._sampling_rate, name=name)
        return _AudioItem(waveform, self.audio_pad_token * self._checked_frames(waveform, name))

    def _load_training_item(self, item: Mapping, name: str) -> _AudioItem:
        speech, text = item.get("token"), item.get("text") or ""
        if speech is not None and (not isinstance(speech, str) or not speech):
            raise AudioInputError(f"{name}: a training item's 'token' must be a non-empty speech-token string.")
        if not isinstance(text, str):
            raise AudioInputError(f"{name}: a training item's 'text' must be a string, got {type(text).__name__}.")
        # Assistant targets (codes after <|audio_bos|>) never get continuous features, as in the official plugin.
        is_target = speech is not None and speech.startswith(self.audio_bos_token) and "AU" in speech
        source = {key: value for key, value in item.items() if key not in ("token", "text")}
        if not _present(source.get("path")) and _present(source.get("wav_path")):
            source["path"] = source["wav_path"]
        waveform = None
        if not is_target and any(_present(source.get(key)) for key in ("path", "array", "raw", "bytes")):
            waveform = load_audio(source, target_sampling_rate=self._sampling_rate, name=name)
            frames = self._checked_frames(waveform, name)
            speech = speech if speech is not None else self.audio_pad_token * frames
        if speech is None:
            raise AudioInputError(f"{name}: a training item needs a 'token' string or a waveform ('path' or 'array').")
        return _AudioItem(waveform, speech, text)

    def _checked_frames(self, waveform: np.ndarray, name: str) -> int:
        frames = self._frames(len(waveform))
        if frames == 0:
            minimum = math.ceil(self._sampling_rate / TOKEN_FPS)
            raise AudioInputError(
                f"{name}: the audio is too short ({len(waveform)} samples); at least {minimum} samples "
                f"({1000 // TOKEN_FPS} ms, one speech frame) are needed."
            )
        self._check_length(frames, name)
        return frames

    def _check_length(self, frames: int, name: str) -> None:
        if frames > self.max_audio_seconds * TOKEN_FPS:
            raise AudioInputError(
                f"{name}: the audio is {frames / TOKEN_FPS:.1f} s long, but the processor accepts at most "
                f"{self.max_audio_seconds:g} s per audio (`max_audio_seconds`; Fun-Audio-Chat's audio encoder has "
                f"max_source_positions={MAX_SOURCE_POSITIONS} positions at 5 Hz = "
                f"{MAX_SOURCE_POSITIONS * self.audio_group_size // TOKEN_FPS} s). Split it into shorter pieces."
            )

    # ------------------------------------------------------------------------------------------------------------
    # audio → model inputs
    # ------------------------------------------------------------------------------------------------------------

    def _process_audio(self, audio: list[_AudioItem], **kwargs) -> tuple[dict[str, np.ndarray], list[str]]:
        outputs = self._speech_inputs(audio)
        waveforms = [item.waveform for item in audio if item.waveform is not None]
        if waveforms:
            outputs.update(self._feature_inputs(waveforms, device=kwargs.get("device")))
        outputs["feature_exist_mask"] = np.array([item.waveform is not None for item in audio], dtype=bool)
        if any(item.text is not None for item in audio):
            outputs.update(self._reply_text_inputs([item.text or "" for item in audio]))
        lengths = outputs["speech_attention_mask"].sum(-1).tolist()
        replacements = [self.audio_token * math.ceil(length / self.audio_group_size) for length in lengths]
        return outputs, replacements

    def _speech_inputs(self, audio: list[_AudioItem]) -> dict[str, np.ndarray]:
        encoded = self.speech_tokenizer(
            [item.speech for item in audio],
            padding=True,
            pad_to_multiple_of=self.audio_group_size,
            padding_side="right",
            return_attention_mask=True,
            return_token_type_ids=False,
            return_tensors="np",
        )
        speech_ids = encoded["input_ids"].astype(np.int64)
        speech_mask = encoded["attention_mask"].astype(np.int64)
        unknown_id = self.speech_tokenizer.unk_token_id
        for index, length in enumerate(speech_mask.sum(-1).tolist()):
            name = f"audio[{index}]"
            if unknown_id is not None and np.any(speech_ids[index, :length] == unknown_id):
                raise AudioInputError(
                    f"{name}: the speech-token string contains text the speech tokenizer does not know; expected "
                    f"'{self.audio_pad_token}' or '{self.audio_bos_token}' tokens and [AU0000]...[AU6560] codes."
                )
            self._check_length(length, name)
        return {"speech_ids": speech_ids, "speech_attention_mask": speech_mask}

    def _feature_inputs(self, waveforms: list[np.ndarray], device: Any = None) -> dict[str, np.ndarray]:
        # The official processor pads (and truncates) every waveform to `chunk_length` (30 s). Longer audio is padded
        # to the next multiple of it instead, so that no frame is lost; up to 30 s the features are the same.
        window = int(self.feature_extractor.n_samples)
        longest = max(len(waveform) for waveform in waveforms)
        extra = {"device": device} if device is not None else {}
        features = self.feature_extractor(
            waveforms,
            sampling_rate=self._sampling_rate,
            padding="max_length",
            max_length=window * max(1, math.ceil(longest / window)),
            truncation=False,
            return_attention_mask=True,
            return_tensors="np",
            **extra,
        )
        return {
            "input_features": features["input_features"],
            "feature_attention_mask": features["attention_mask"].astype(np.int32),
        }

    def _reply_text_inputs(self, texts: list[str]) -> dict[str, np.ndarray]:
        text_ids = self.tokenizer(
            texts,
            padding=True,
            padding_side="right",
            return_attention_mask=False,
            return_token_type_ids=False,
            return_tensors="np",
        )["input_ids"]
        return {
            "text_ids": np.asarray(text_ids, dtype=np.int64).reshape(len(texts), -1),
            "text_attention_mask": np.array([text != "" for text in texts], dtype=bool),
        }

    @property
    def model_input_names(self) -> list[str]:
        names = list(self.tokenizer.model_input_names) + [
            "speech_ids",
            "speech_attention_mask",
            "input_features",
            "feature_attention_mask",
            "feature_exist_mask",
            "text_ids",
            "text_attention_mask",
        ]
        return list(dict.fromkeys(names))

    # ------------------------------------------------------------------------------------------------------------
    # chat template
    # ------------------------------------------------------------------------------------------------------------

    def apply_chat_template(
        self, conversation, chat_template: str | None = None, normalize_audio_content: bool = True, **kwargs
    ):
        """Render (and with `tokenize=True, return_dict=True`, process) a conversation with audio content blocks.

        Content blocks: `{"type": "audio", "audio" | "path" | "url": <any audio input>}` (also OpenAI-style
        `{"type": "input_audio", "input_audio": {"data": <base64>, "format": "wav"}}` and
        `{"type": "audio_url", "audio_url": {"url": ...}}`) and `{"type": "text", "text": ...}`.

        With `normalize_audio_content=True` (default) a message's content list is rendered the way the model was
        trained: each audio block becomes `<|audio_bos|><|AUDIO|><|audio_eos|>` and the blocks are joined with
        `"\\n"` (so `[audio, text]` gives `AUDIO_TEMPLATE + "\\n" + text`), then the template renders the message as a
        string. With `False` the template renders the blocks itself (the official template writes
        `Audio 1: ...`). All other arguments are those of `ProcessorMixin.apply_chat_template`.
        """
        # Marked control tokens would turn the inserted placeholders into plain text: let the template render then.
        if normalize_audio_content and not kwargs.get("sanitize_control_tokens"):
            conversations, is_batched = self._normalize_conversations(conversation)
            conversations = [[self._flatten_message(message) for message in chat] for chat in conversations]
            conversation = conversations if is_batched else conversations[0]
        return super().apply_chat_template(conversation, chat_template=chat_template, **kwargs)

    def _flatten_message(self, message: dict) -> dict:
        content = message.get("content")
        if not isinstance(content, list):
            return message
        parts, sources = [], []
        for block in content:
            if isinstance(block, str):
                parts.append(block)
                continue
            block_type = block.get("type")
            if block_type in _AUDIO_BLOCK_TYPES:
                parts.append(self.audio_bos_token + self.audio_token + self.audio_eos_token)
                sources.append(self._audio_source(block))
            elif block_type == "text" or (block_type is None and "text" in block):
                parts.append(block.get("text") or "")
            else:
                raise ValueError(f"Fun-Audio-Chat takes audio and text content only; got a {block_type!r} block.")
        flattened = {key: value for key, value in message.items() if key != "content"}
        flattened["content"] = "\n".join(parts)
        if sources:
            flattened[_CONVERSATION_AUDIO_KEY] = sources
        return flattened

    @staticmethod
    def _audio_source(block: Mapping) -> Any:
        if block.get("type") == "input_audio" and isinstance(block.get("input_audio"), Mapping):
            data = block["input_audio"]
            return f"data:audio/{data.get('format', 'wav')};base64,{data.get('data', '')}"
        if block.get("type") == "audio_url":
            url = block.get("audio_url")
            return url.get("url") if isinstance(url, Mapping) else url
        return next((block[key] for key in _AUDIO_SOURCE_KEYS if block.get(key) is not None), None)

    def _multimodal_inputs_from_conversations(self, conversations, audio_loading_params, load_audio_from_video=False):
        """Collect the audio of each conversation in order (loaded later by `__call__`, which reads every form)."""
        audios = []
        for conversation in conversations:
            for message in conversation:
                audios.extend(message.get(_CONVERSATION_AUDIO_KEY, []))
                content = message.get("content")
                if isinstance(content, list):
                    audios.extend(
                        self._audio_source(block)
                        for block in content
                        if isinstance(block, Mapping) and block.get("type") in _AUDIO_BLOCK_TYPES
                    )
        for index, source in enumerate(audios):
            if source is None:
                raise ValueError(f"Audio content block #{index} has no 'audio', 'path' or 'url' to load.")
        empty = [[] for _ in conversations]
        return empty, [list(batch) for batch in empty], audios, {}

    # ------------------------------------------------------------------------------------------------------------
    # decoding
    # ------------------------------------------------------------------------------------------------------------

    def _ids_to_skip(self) -> set[int]:
        tokens = [self.audio_token, self.audio_bos_token, self.audio_eos_token, self.audio_pad_token, "<|sil|>"]
        skip = set(self.tokenizer.all_special_ids)
        skip.update(self.tokenizer.convert_tokens_to_ids(token) for token in tokens)
        # Tool-call tags stay in the text (the real tokenizer does not mark them special), for `parse_tool_calls`.
        skip.difference_update(
            self.tokenizer.convert_tokens_to_ids(token) for token in ("<tool_call>", "</tool_call>")
        )
        return skip

    @staticmethod
    def _as_id_list(ids: Any) -> list:
        return ids.tolist() if hasattr(ids, "tolist") else list(ids)

    def batch_decode(self, sequences, skip_special_tokens: bool = False, **kwargs) -> list[str]:
        """Decode token-id sequences to text. `skip_special_tokens=True` also removes `<|sil|>`, `<|audio_bos|>`,
        `<|audio_eos|>`, `<|AUDIO|>` and `<|audio_pad|>` (but keeps `<tool_call>` tags)."""
        sequences = [self._as_id_list(sequence) for sequence in self._as_id_list(sequences)]
        if skip_special_tokens:
            skip = self._ids_to_skip()
            sequences = [[token for token in sequence if token not in skip] for sequence in sequences]
        return self.tokenizer.batch_decode(sequences, skip_special_tokens=False, **kwargs)

    def decode(self, token_ids, skip_special_tokens: bool = False, **kwargs) -> str:
        """Decode one token-id sequence to text (see `batch_decode`)."""
        return self.batch_decode([token_ids], skip_special_tokens=skip_special_tokens, **kwargs)[0]

    def post_process_multimodal_output(
        self, generated_outputs, skip_special_tokens=True, generation_mode=None, **kwargs
    ):
        """Turn `generate` outputs into what `pipeline("any-to-any")` returns.

        - `generation_mode="text"` (or None): a list with the decoded text of each sequence. `generated_outputs` may
          be the token ids ([B, L] or [L]), a `(sequences, audio)` tuple, or an output object with `sequences`.
        - `generation_mode="audio"`: a list of mono float32 numpy waveforms, read from the outputs' `audio` (an
          attribute or a dict key (a [`SpeechReply`] or a [`FunAudioChatGenerateOutput`]).
        """
        if generation_mode in (None, "text"):
            sequences = self._as_id_list(_field(generated_outputs, "sequences", 0))
            if sequences and _is_number(sequences[0]):
                sequences = [sequences]  # a single sequence
            return self.batch_decode(sequences, skip_special_tokens=skip_special_tokens, **kwargs)
        if generation_mode == "audio":
            audio = _field(generated_outputs, "audio", None)
            if audio is generated_outputs and isinstance(generated_outputs, tuple) and len(generated_outputs) > 1:
                audio = getattr(generated_outputs[1], "audio", None)  # a SpeechReply rebuilt as a plain tuple
            if audio is None or audio is generated_outputs:
                raise ValueError(
                    "The generate() output carries no `audio`: generate with generation_mode='audio' on a model "
                    "that has its speech decoder (token2wav) loaded."
                )
            if not isinstance(audio, (list, tuple)):
                audio = list(audio) if getattr(audio, "ndim", 1) > 1 else [audio]
            return [_to_numpy_waveform(waveform) for waveform in audio]
        raise ValueError(
            f"{type(self).__name__} got generation_mode={generation_mode!r}; supported modes are 'text' and 'audio'."
        )

    # ------------------------------------------------------------------------------------------------------------
    # saving
    # ------------------------------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        # The feature extractor has its own `preprocessor_config.json` (the official Hub layout), not a nested copy.
        output = super().to_dict()
        output.pop("feature_extractor", None)
        return output

    def save_pretrained(self, save_directory: str | os.PathLike, push_to_hub: bool = False, **kwargs) -> list[str]:
        """Save in the official Hub layout: `processor_config.json` (processor settings), `preprocessor_config.json`
        (feature extractor), the text tokenizer files, `speech_tokenizer/` and `chat_template.jinja`."""
        os.makedirs(save_directory, exist_ok=True)
        files = self.feature_extractor.save_pretrained(save_directory, push_to_hub=push_to_hub, **kwargs)
        return list(files) + super().save_pretrained(save_directory, push_to_hub=push_to_hub, **kwargs)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.number)) and not isinstance(value, (bool, np.bool_))


def _present(value: Any) -> bool:
    """A non-empty audio source (path, array, bytes)."""
    return value is not None and (not hasattr(value, "__len__") or len(value) > 0)


def _field(outputs: Any, name: str, position: int | None) -> Any:
    """`outputs.<name>`, `outputs[name]`, or `outputs[position]` of a tuple; else the outputs themselves."""
    if isinstance(outputs, Mapping):
        return outputs.get(name)
    if hasattr(outputs, name):
        return getattr(outputs, name)
    if position is not None and isinstance(outputs, tuple) and len(outputs) > position:
        return outputs[position]
    return outputs


def _to_numpy_waveform(waveform: Any) -> np.ndarray:
    if hasattr(waveform, "detach"):
        waveform = waveform.detach().float().cpu().numpy()
    return np.asarray(waveform, dtype=np.float32).reshape(-1)


__all__ = ["FunAudioChatProcessor", "default_chat_template", "format_speech_codes"]
