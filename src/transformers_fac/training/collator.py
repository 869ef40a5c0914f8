"""Batches of Fun-Audio-Chat training inputs, built as the official training path (LLaMA-Factory) builds them.

Each example is rendered with the official ChatML training template and processed by [`FunAudioChatProcessor`]
(right padding). Labels follow the official template (`funaudiochat`, ChatML with `replace_eos`): in every assistant
turn the content and its closing `<|im_end|>` are learned; the `<|im_start|>assistant\\n` header, the `\\n` after
`<|im_end|>`, the system prompt, user turns and padding are `-100`. The model derives the rest itself:
`<|AUDIO|>` slots of a spoken reply learn the aligned reply text (then `<|sil|>`), and their 5 speech codes (10
`<|audio_bos|>` delay codes first, speech EOS ×5 at `<|audio_eos|>`) train the speech head.

A batch without any spoken reply (text-only targets) also gets `output_speech_logits=False`: the speech head is
skipped, since it has no target (its mean loss over zero codes would be NaN).

Every audio is passed as a training item with its reply text (`""` for user audio), so `text_ids` and
`text_attention_mask` are always present, as in the official plugin (the model then averages every audio's features
with its text embedding, zero for user audio).

Accepted examples:

- prepared rows of [`prepare_dataset`]: `user_audio`, `system`, `messages`, `reply`, `speech_codes`;
- the official (LLaMA-Factory sharegpt) format: `messages` (with `AUDIO_TEMPLATE` placeholders), optional `system`,
  and `audios` (or `audio`): one item per placeholder in order, a dict or JSON string `{"path", "token", "text"}`
  (a user item may give its waveform as `array` + `sampling_rate` and leave `token` out). Multi-turn is fine.
"""

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..audio_io import SAMPLING_RATE, load_audio
from ..processing_fun_audio_chat import DEFAULT_ASSISTANT_BOS_DELAY, format_speech_codes
from .data import render_chatml


@dataclass
class FunAudioChatDataCollator:
    """Collates examples into `FunAudioChatForConditionalGeneration` training inputs with `labels`.

    Args:
        processor: the checkpoint's `FunAudioChatProcessor`.
        num_bos: `<|audio_bos|>` delay codes before the codes of a spoken reply (10 in the official recipe).
        max_length: longest batch row allowed (`None`: no limit); a longer example raises a `ValueError` (filter the
            dataset on its `length` column beforehand: audio cannot be cut without breaking its alignment).
        return_speech_labels: also return `speech_labels` [B, 5 * S] (the speech head's targets, as the model
            derives them; for evaluation; do not pass them to the model).

    Example:
        >>> from transformers import AutoProcessor
        >>> import transformers_fac
        >>> from transformers_fac.training import FunAudioChatDataCollator
        >>> processor = AutoProcessor.from_pretrained("tests/fixtures/golden/tiny-fac")
        >>> collator = FunAudioChatDataCollator(processor)
        >>> batch = collator([{
        ...     "user_audio": "tests/fixtures/audio/question_en.wav",
        ...     "system": "You are asked to generate both text and speech tokens at the same time.",
        ...     "messages": [{"role": "user", "content": "<|audio_bos|><|AUDIO|><|audio_eos|>"},
        ...                  {"role": "assistant", "content": "<|audio_bos|><|AUDIO|><|audio_eos|>"}],
        ...     "reply": "The capital of France is Paris.",
        ...     "speech_codes": [5580, 4179, 3353],
        ... }])
        >>> sorted(batch)  # doctest: +NORMALIZE_WHITESPACE
        ['attention_mask', 'feature_attention_mask', 'feature_exist_mask', 'input_features', 'input_ids', 'labels',
         'speech_attention_mask', 'speech_ids', 'text_attention_mask', 'text_ids']
    """

    processor: Any
    num_bos: int = DEFAULT_ASSISTANT_BOS_DELAY
    max_length: int | None = None
    return_speech_labels: bool = False

    def __call__(self, examples: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        texts, items, assistant_turns = [], [], []
        for index, example in enumerate(examples):
            system, messages, audios = self.conversation(example, index)
            texts.append(render_chatml(system, messages))
            items.extend(audios)
            assistant_turns.append(sum(message["role"] == "assistant" for message in messages))
        batch = self.processor(text=texts, audio=items, padding_side="right", return_tensors="pt")
        batch = dict(batch)
        if self.max_length is not None and batch["input_ids"].shape[1] > self.max_length:
            raise ValueError(
                f"An example has {batch['input_ids'].shape[1]} tokens > max_length={self.max_length}; filter the "
                "dataset on its `length` column (prepare_dataset(..., processor=processor)) before training."
            )
        batch["labels"] = self.labels(batch["input_ids"], batch["attention_mask"], assistant_turns)
        if not (batch["labels"] == self.processor.audio_token_id).any():
            # No spoken reply in the batch: the speech head has nothing to learn (its loss would be a mean over
            # zero codes, NaN), so it is not run.
            batch["output_speech_logits"] = False
        if self.return_speech_labels:
            batch["speech_labels"] = self.speech_labels(batch)
        return batch

    def prompt_inputs(self, examples: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        """Inference inputs of the examples' prompts: every turn before the last assistant turn, then
        `<|im_start|>assistant\\n` (left padding, no reply text), for `model.generate` in evaluation."""
        texts, items = [], []
        for index, example in enumerate(examples):
            system, messages, audios = self.conversation(example, index)
            last = max(position for position, message in enumerate(messages) if message["role"] == "assistant")
            placeholders = sum(message["content"].count(self.processor.audio_token) for message in messages[:last])
            texts.append(render_chatml(system, messages[:last]) + "<|im_start|>assistant\n")
            items.extend(self._waveform_source(item, index) for item in audios[:placeholders])
        return dict(self.processor(text=texts, audio=items or None, return_tensors="pt"))

    @staticmethod
    def _waveform_source(item: Mapping[str, Any], index: int) -> Any:
        """A prompt audio item as a plain (inference) audio input: its waveform, without speech tokens or text."""
        if item.get("array") is not None:
            return {"array": item["array"], "sampling_rate": item.get("sampling_rate", SAMPLING_RATE)}
        if item.get("path") or item.get("wav_path"):
            return item.get("path") or item["wav_path"]
        raise ValueError(f"example {index}: a prompt audio item has no waveform ('path' or 'array') to generate from.")

    # ---------------------------------------------------------------- examples → conversations
    def conversation(self, example: Mapping[str, Any], index: int = 0) -> tuple[str | None, list[dict], list[dict]]:
        """`(system, messages, audio items)` of one example, in either accepted format."""
        messages = [{"role": message["role"], "content": message["content"]} for message in example["messages"]]
        if messages and messages[0]["role"] == "system":
            system = messages.pop(0)["content"]
        else:
            system = example.get("system") or None
        official = example.get("audios")
        if official is None and isinstance(example.get("audio"), (list, tuple)):
            official = example["audio"]
        if official is not None:
            audios = [self._official_item(item, f"example {index} audio[{k}]") for k, item in enumerate(official)]
        else:
            audios = self._prepared_items(example, messages, index)
        return system, messages, audios

    def _official_item(self, item: Any, name: str) -> dict:
        if isinstance(item, str):
            item = json.loads(item)
        item = dict(item)
        item.setdefault("text", "")
        if "array" in item and item.get("token") is None:  # a user waveform given inline
            item["array"] = load_audio(item, name=name)
            item["sampling_rate"] = SAMPLING_RATE
        return item

    def _prepared_items(self, example: Mapping[str, Any], messages: list[dict], index: int) -> list[dict]:
        placeholder = self.processor.audio_token
        audios = []
        for message in messages:
            for _ in range(message["content"].count(placeholder)):
                if message["role"] == "assistant":
                    codes = example.get("speech_codes")
                    if not codes:
                        raise ValueError(f"example {index}: a spoken assistant turn needs `speech_codes`.")
                    token = format_speech_codes(codes, self.num_bos, self.processor.audio_bos_token)
                    audios.append({"path": "", "token": token, "text": example.get("reply") or ""})
                else:
                    waveform = load_audio(example["user_audio"], name=f"example {index} user_audio")
                    audios.append({"array": waveform, "sampling_rate": SAMPLING_RATE, "text": ""})
        return audios

    # ---------------------------------------------------------------- labels
    def _ids(self, token: str) -> int:
        return self.processor.tokenizer.convert_tokens_to_ids(token)

    def labels(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, assistant_turns: Sequence[int]
    ) -> torch.Tensor:
        """Text labels: each assistant turn's content and its `<|im_end|>`; everything else `-100`."""
        tokenizer = self.processor.tokenizer
        im_start, im_end = self._ids("<|im_start|>"), self._ids("<|im_end|>")
        header = tokenizer("assistant\n", add_special_tokens=False)["input_ids"]
        labels = torch.full_like(input_ids, -100)
        for row, expected in enumerate(assistant_turns):
            ids = input_ids[row][attention_mask[row].bool()].tolist()
            found = 0
            for start, token in enumerate(ids):
                if token != im_start or ids[start + 1 : start + 1 + len(header)] != header:
                    continue
                first = start + 1 + len(header)
                last = ids.index(im_end, first) if im_end in ids[first:] else len(ids) - 1
                labels[row, first : last + 1] = input_ids[row, first : last + 1]
                found += 1
            if found != expected:
                raise ValueError(
                    f"Example {row}: found {found} assistant turn(s) in the tokens but the conversation has "
                    f"{expected}; a reply must not start with a newline and no message may contain '<|im_start|>assistant'."
                )
        return labels

    def speech_labels(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The speech head's targets [B, 5 * S]: at each learned `<|AUDIO|>` slot the 5 codes of that slot, at a
        learned `<|audio_eos|>` the speech EOS ×5, elsewhere `-100` (what the model derives from `labels`)."""
        group = self.processor.audio_group_size
        input_ids, labels = batch["input_ids"], batch["labels"]
        speech_ids, speech_mask = batch["speech_ids"], batch["speech_attention_mask"]
        audio_token, audio_eos = self.processor.audio_token_id, self._ids(self.processor.audio_eos_token)
        eos_code = self.processor.speech_tokenizer.convert_tokens_to_ids(self.processor.audio_eos_token)
        codes = speech_ids.masked_fill(speech_mask == 0, -100)
        slot_codes = [
            codes[audio, : -(-int(speech_mask[audio].sum()) // group) * group].view(-1, group)
            for audio in range(codes.shape[0])
        ]
        slots = torch.cat(slot_codes) if slot_codes else codes.new_zeros(0, group)
        result = torch.full((*input_ids.shape, group), -100, dtype=torch.long)
        result[input_ids == audio_token] = slots
        result[labels == -100] = -100
        result[labels == audio_eos] = eos_code
        return result.flatten(1)


__all__ = ["FunAudioChatDataCollator"]
