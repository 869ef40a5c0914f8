"""From a `datasets` dataset of spoken questions and replies to Fun-Audio-Chat training examples.

`prepare_dataset` reads one row per exchange: the user's audio (an `Audio` column, or file paths), the assistant's
reply text and, for speech replies, the assistant's audio (turned into 25 Hz CosyVoice3 codes with the speech
tokenizer, cached by `datasets`) or precomputed codes. It returns a dataset with the columns

- `user_audio` (`Audio(sampling_rate=16000)`): the question, resampled to 16 kHz when read;
- `system` (str): the system prompt (it selects the mode: speech reply, text reply, function calling);
- `messages` (list of `{"role", "content"}`): the conversation, with `AUDIO_TEMPLATE` where audio goes;
- `reply` (str): the assistant's reply text;
- `speech_codes` (list of int): the reply's speech codes (empty for text replies);
- `length` (int, when a processor is given): the number of LLM tokens of the example,

which [`FunAudioChatDataCollator`] turns into model inputs. Rows that cannot be used (missing, unreadable, empty,
silent, too short or too long audio, empty reply, invalid codes) are reported and skipped; missing columns raise
at once.

Example:
    >>> from datasets import Audio, Dataset
    >>> from transformers_fac.training import prepare_dataset
    >>> rows = Dataset.from_dict(
    ...     {"question": ["tests/fixtures/audio/question_en.wav"], "answer": ["Paris."], "codes": [[1, 2, 3]]}
    ... ).cast_column("question", Audio())
    >>> prepared = prepare_dataset(rows, task="s2s", user_audio_column="question", reply_column="answer",
    ...                            codes_column="codes")
    >>> prepared[0]["messages"][-1]
    {'role': 'assistant', 'content': '<|audio_bos|><|AUDIO|><|audio_eos|>'}
"""

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..audio_io import SAMPLING_RATE, AudioInputError, is_silent, load_audio
from ..processing_fun_audio_chat import DEFAULT_ASSISTANT_BOS_DELAY
from ..prompts import AUDIO_TEMPLATE, TOKEN_FPS, function_calling_prompt, reply_system_prompt
from ..speech_tokenizer import CODEBOOK_SIZE, SpeechCodeTokenizer

logger = logging.getLogger(__name__)

TASKS = ("s2s", "s2t", "function_calling")
"""`s2s`: spoken reply (text + speech codes); `s2t`: text reply (answers, transcripts, audio understanding);
`function_calling`: `<tool_call>` replies with the tools in the system prompt (text mode)."""

PREPARED_COLUMNS = ("user_audio", "system", "messages", "reply", "speech_codes")

DEFAULT_MAX_AUDIO_SECONDS = 300.0
"""Longest user audio accepted (the audio encoder's 1500 positions at 5 Hz)."""


def format_tool_calls(calls: Sequence[Mapping[str, Any]] | str) -> str:
    """The reply text of function calls, in the format the model was trained on (Qwen style):
    one `<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>` block per call, joined by newlines.

    `calls` is a list of `{"name", "arguments"}` dicts (arguments as a dict or a JSON string) or its JSON encoding.

    Example:
        >>> print(format_tool_calls([{"name": "get_weather", "arguments": {"city": "Paris"}}]))
        <tool_call>
        {"name": "get_weather", "arguments": {"city": "Paris"}}
        </tool_call>
    """
    if isinstance(calls, str):
        calls = json.loads(calls)
    if isinstance(calls, Mapping):
        calls = [calls]
    blocks = []
    for call in calls:
        if not isinstance(call, Mapping) or not isinstance(call.get("name"), str):
            raise ValueError(f"A tool call must be a dict with a 'name' string, got {call!r}.")
        arguments = call.get("arguments") or {}
        if isinstance(arguments, str):
            arguments = json.loads(arguments)
        body = json.dumps({"name": call["name"], "arguments": arguments}, ensure_ascii=False)
        blocks.append(f"<tool_call>\n{body}\n</tool_call>")
    if not blocks:
        raise ValueError("No tool calls given.")
    return "\n".join(blocks)


@dataclass
class SkippedRow:
    """A source row that `prepare_dataset` left out, and why."""

    index: int
    reason: str


@dataclass
class _Settings:
    """What `_convert_batch` needs (picklable and hashable, for `datasets.map` with `num_proc` and its cache)."""

    task: str
    user_audio_column: str
    reply_column: str | None
    assistant_audio_column: str | None
    codes_column: str | None
    system_prompt: str | None
    system_column: str | None
    instruction: str | None
    instruction_column: str | None
    tools: list | None
    tools_column: str | None
    tool_calls_column: str | None
    max_audio_seconds: float
    num_bos: int
    speech_tokenizer: SpeechCodeTokenizer | None = None
    tokenizer: Any = None
    group_size: int = 5


def prepare_dataset(
    dataset,
    task: str = "s2s",
    user_audio_column: str = "user_audio",
    reply_column: str | None = "reply",
    assistant_audio_column: str | None = None,
    codes_column: str | None = None,
    system_prompt: str | None = None,
    system_column: str | None = None,
    instruction: str | None = None,
    instruction_column: str | None = None,
    tools: list[dict] | None = None,
    tools_column: str | None = None,
    tool_calls_column: str | None = None,
    speech_tokenizer: SpeechCodeTokenizer | None = None,
    processor=None,
    num_proc: int | None = None,
    batch_size: int = 8,
    max_audio_seconds: float = DEFAULT_MAX_AUDIO_SECONDS,
    num_bos: int = DEFAULT_ASSISTANT_BOS_DELAY,
    return_skipped: bool = False,
    **map_kwargs,
):
    """Turn a dataset of spoken exchanges into Fun-Audio-Chat training examples (see the module docstring).

    Args:
        dataset: a `datasets.Dataset`, one exchange per row.
        task: `"s2s"` (spoken reply: needs `assistant_audio_column` or `codes_column`), `"s2t"` (text reply) or
            `"function_calling"` (text reply of `<tool_call>` blocks; needs `tools` or `tools_column`).
        user_audio_column: the question audio (`Audio` column, or paths).
        reply_column: the reply text (for function calling it may already hold the `<tool_call>` text; else give
            `tool_calls_column`).
        assistant_audio_column: the spoken reply (`Audio` or paths), tokenized into speech codes.
        codes_column: precomputed 25 Hz speech codes of the reply (used instead of `assistant_audio_column`).
        system_prompt / system_column: the system prompt (default: S2M for `s2s`, S2T for `s2t`, the official
            function-calling prompt for `function_calling`).
        instruction / instruction_column: text after the user audio in the user turn (e.g.
            `ASR_INSTRUCTION` for speech recognition), as `AUDIO_TEMPLATE + "\\n" + instruction`.
        tools / tools_column: tool definitions (a list of JSON-schema dicts, or its JSON string) for function calling.
        tool_calls_column: the expected calls, a list of `{"name", "arguments"}` (or its JSON string).
        speech_tokenizer: what turns assistant audio into codes (default: `SpeechCodeTokenizer()`, the real
            CosyVoice3 tokenizer, downloaded on first use).
        processor: a `FunAudioChatProcessor`; when given, a `length` column (LLM tokens) is added, for filtering by
            `max_length` and for `group_by_length`.
        num_proc / batch_size: `datasets.map` workers and rows per batch. With a `cuda` speech tokenizer the
            workers are spread over the GPUs (call this before anything in the process uses CUDA).
        max_audio_seconds: user audio longer than this is skipped.
        num_bos: `<|audio_bos|>` delay codes before the reply codes (10 in the official recipe).
        return_skipped: also return the list of [`SkippedRow`].
        map_kwargs: more `datasets.map` arguments (`cache_file_name`, `load_from_cache_file`, ...).

    Returns:
        The prepared dataset (and the skipped rows when `return_skipped=True`).
    """
    import datasets

    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}.")
    columns = {
        "user_audio_column": user_audio_column,
        "reply_column": reply_column,
        "assistant_audio_column": assistant_audio_column,
        "codes_column": codes_column,
        "system_column": system_column,
        "instruction_column": instruction_column,
        "tools_column": tools_column,
        "tool_calls_column": tool_calls_column,
    }
    missing = {arg: name for arg, name in columns.items() if name is not None and name not in dataset.column_names}
    if missing:
        details = ", ".join(f"{arg}={name!r}" for arg, name in missing.items())
        raise ValueError(f"Missing column(s): {details}. The dataset has the columns {dataset.column_names}.")
    if reply_column is None and not (task == "function_calling" and tool_calls_column):
        raise ValueError("reply_column is required (function calling may use tool_calls_column instead).")
    if task == "s2s" and not (assistant_audio_column or codes_column):
        raise ValueError("task='s2s' needs the spoken reply: pass assistant_audio_column or codes_column.")
    if task == "function_calling" and tools is None and tools_column is None and system_prompt is None:
        raise ValueError("task='function_calling' needs the tool definitions: pass tools or tools_column.")
    if task == "s2s" and codes_column is None and speech_tokenizer is None:
        speech_tokenizer = SpeechCodeTokenizer()
    if (num_proc or 1) > 1 and speech_tokenizer is not None and speech_tokenizer.device.startswith("cuda"):
        import torch

        if torch.cuda.is_initialized():
            logger.warning(
                "CUDA is already in use in this process, and forked datasets.map workers cannot use it: tokenizing "
                "in this process instead (num_proc=None). Prepare the data before loading models to use num_proc."
            )
            num_proc = None

    # Audio is read (and resampled) by `load_audio` inside the batch function, so that a bad file is one skipped
    # row rather than a crash of the whole `map`.
    for column in (user_audio_column, assistant_audio_column):
        if column is not None:
            dataset = dataset.cast_column(column, datasets.Audio(decode=False))
    settings = _Settings(
        task=task,
        user_audio_column=user_audio_column,
        reply_column=reply_column,
        assistant_audio_column=assistant_audio_column if codes_column is None else None,
        codes_column=codes_column,
        system_prompt=system_prompt,
        system_column=system_column,
        instruction=instruction,
        instruction_column=instruction_column,
        tools=tools,
        tools_column=tools_column,
        tool_calls_column=tool_calls_column,
        max_audio_seconds=max_audio_seconds,
        num_bos=num_bos,
        speech_tokenizer=speech_tokenizer if task == "s2s" else None,
        tokenizer=processor.tokenizer if processor is not None else None,
        group_size=processor.audio_group_size if processor is not None else 5,
    )
    map_kwargs.setdefault("desc", f"Preparing {task} examples")
    converted = dataset.map(
        _convert_batch,
        batched=True,
        batch_size=batch_size,
        with_indices=True,
        with_rank=True,
        num_proc=num_proc,
        fn_kwargs={"settings": settings},
        remove_columns=dataset.column_names,
        **map_kwargs,
    )
    errors = converted["error"]
    skipped = [SkippedRow(index, reason) for index, reason in enumerate(errors) if reason]
    if skipped:
        shown = "; ".join(f"row {row.index}: {row.reason}" for row in skipped[:10])
        more = f" (and {len(skipped) - 10} more)" if len(skipped) > 10 else ""
        logger.warning("Skipped %d of %d rows: %s%s", len(skipped), len(errors), shown, more)
        converted = converted.filter(lambda error: not error, input_columns="error", desc="Dropping bad rows")
    converted = converted.remove_columns("error").cast_column(
        "user_audio", datasets.Audio(sampling_rate=SAMPLING_RATE)
    )
    return (converted, skipped) if return_skipped else converted


def _convert_batch(batch: dict, indices: list[int], rank: int | None, settings: _Settings) -> dict:
    if rank is not None:  # a `num_proc` worker
        _single_threaded_worker()
    rows = [{key: values[position] for key, values in batch.items()} for position in range(len(indices))]
    outputs: dict[str, list] = {key: [] for key in (*PREPARED_COLUMNS, "error")}
    frames, assistant_waveforms = [], {}
    for position, row in enumerate(rows):
        example = {"user_audio": row[settings.user_audio_column], "system": "", "messages": [], "reply": ""}
        example.update(speech_codes=[], error="")
        try:
            converted, user_frames = _convert_row(row, settings)
            example.update(converted)
            if settings.assistant_audio_column is not None:
                assistant_waveforms[position] = _load_checked(row[settings.assistant_audio_column], "assistant audio")
        except (AudioInputError, ValueError, TypeError, KeyError) as error:
            example["error"], user_frames = str(error) or type(error).__name__, 0
        frames.append(user_frames)
        for key in outputs:
            outputs[key].append(example[key])
    if assistant_waveforms:
        tokenizer = settings.speech_tokenizer.for_rank(rank)
        positions = list(assistant_waveforms)
        for position, codes in zip(positions, tokenizer.batch_encode([assistant_waveforms[p] for p in positions])):
            outputs["speech_codes"][position] = codes
            if not codes:
                outputs["error"][position] = "assistant audio: the speech tokenizer returned no codes"
    if settings.tokenizer is not None:
        outputs["length"] = [
            0 if outputs["error"][position] else _example_length(outputs, position, frames[position], settings)
            for position in range(len(rows))
        ]
    return outputs


_WORKER_READY = False


def _single_threaded_worker() -> None:
    """One torch thread per `datasets.map` worker: the workers are the parallelism, and a forked worker whose parent
    had already used torch's OpenMP thread pool hangs at its first parallel operation unless the pool is reset."""
    global _WORKER_READY
    if not _WORKER_READY:
        import torch

        torch.set_num_threads(1)
        _WORKER_READY = True


def _load_checked(value: Any, what: str) -> np.ndarray:
    if value is None or (isinstance(value, Mapping) and not value.get("bytes") and not value.get("path")):
        raise AudioInputError(f"{what}: missing (no file or bytes).")
    try:
        waveform = load_audio(value, name=what)
    except AudioInputError as error:
        message = str(error)
        raise AudioInputError(message if message.startswith(what) else f"{what}: {message}") from error
    if is_silent(waveform):
        raise AudioInputError(f"{what}: silent (below -60 dBFS).")
    return waveform


def _text(row: Mapping, column: str | None, what: str, required: bool = True) -> str | None:
    if column is None:
        return None
    value = row.get(column)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise ValueError(f"{what} is empty.")
        return None
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a string, got {type(value).__name__}.")
    return value


def _convert_row(row: Mapping, settings: _Settings) -> tuple[dict, int]:
    waveform = _load_checked(row[settings.user_audio_column], "user audio")
    seconds = len(waveform) / SAMPLING_RATE
    if int(seconds * TOKEN_FPS) < 1:
        raise AudioInputError(f"user audio: too short ({seconds:.3f} s; at least {1 / TOKEN_FPS:.2f} s).")
    if seconds > settings.max_audio_seconds:
        raise AudioInputError(
            f"user audio: too long ({seconds:.1f} s > max_audio_seconds={settings.max_audio_seconds:g})."
        )

    system = _text(row, settings.system_column, "system prompt", required=False) or settings.system_prompt
    if settings.task == "function_calling":
        tools = row.get(settings.tools_column) if settings.tools_column else settings.tools
        if isinstance(tools, str):
            tools = json.loads(tools)
        if system is None:
            if not tools:
                raise ValueError("no tool definitions.")
            system = function_calling_prompt(list(tools))
        calls = row.get(settings.tool_calls_column) if settings.tool_calls_column else None
        reply = format_tool_calls(calls) if calls else _text(row, settings.reply_column, "reply")
    else:
        reply = _text(row, settings.reply_column, "reply")
    if system is None:
        system = reply_system_prompt("audio" if settings.task == "s2s" else "text")

    instruction = _text(row, settings.instruction_column, "instruction", required=False) or settings.instruction
    user_content = AUDIO_TEMPLATE + ("\n" + instruction if instruction else "")
    codes: list[int] = []
    if settings.task == "s2s":
        assistant_content = AUDIO_TEMPLATE
        if settings.codes_column is not None:
            codes = _checked_codes(row.get(settings.codes_column))
    else:
        assistant_content = reply
    messages = [{"role": "user", "content": user_content}, {"role": "assistant", "content": assistant_content}]
    return {"system": system, "messages": messages, "reply": reply, "speech_codes": codes}, int(seconds * TOKEN_FPS)


def _checked_codes(codes: Any) -> list[int]:
    if isinstance(codes, str):
        codes = json.loads(codes)
    if codes is None or len(codes) == 0:
        raise ValueError("speech codes are empty.")
    array = np.asarray(codes)
    if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
        raise ValueError("speech codes must be a flat list of integers.")
    if array.min() < 0 or array.max() >= CODEBOOK_SIZE:
        raise ValueError(f"speech codes must be in 0..{CODEBOOK_SIZE - 1}, got {array.min()}..{array.max()}.")
    return array.astype(int).tolist()


def _example_length(outputs: dict, position: int, user_frames: int, settings: _Settings) -> int:
    """LLM tokens of a prepared example: its rendered text plus one `<|AUDIO|>` per 5 speech frames of each audio."""
    group = settings.group_size
    text = render_chatml(outputs["system"][position], outputs["messages"][position])
    length = len(settings.tokenizer(text, add_special_tokens=False)["input_ids"])
    length += math.ceil(user_frames / group) - 1
    if settings.task == "s2s":
        length += math.ceil((settings.num_bos + len(outputs["speech_codes"][position])) / group) - 1
    return length


DEFAULT_SYSTEM = "You are a helpful assistant."
"""The system prompt of conversations that have none (the official training template's default)."""


def render_chatml(system: str | None, messages: Sequence[Mapping[str, str]]) -> str:
    """The ChatML text of a conversation with string contents, as the official training template (LLaMA-Factory
    `funaudiochat`) renders it; a conversation without a system prompt gets `DEFAULT_SYSTEM`.

    Example:
        >>> render_chatml("Be brief.", [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}])
        '<|im_start|>system\\nBe brief.<|im_end|>\\n<|im_start|>user\\nHi<|im_end|>\\n<|im_start|>assistant\\nHello<|im_end|>\\n'
    """
    parts = [f"<|im_start|>system\n{DEFAULT_SYSTEM if system is None else system}<|im_end|>\n"]
    parts.extend(f"<|im_start|>{message['role']}\n{message['content']}<|im_end|>\n" for message in messages)
    return "".join(parts)


__all__ = [
    "DEFAULT_SYSTEM",
    "PREPARED_COLUMNS",
    "TASKS",
    "SkippedRow",
    "format_tool_calls",
    "prepare_dataset",
    "render_chatml",
]
