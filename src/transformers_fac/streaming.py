"""Streamers for Fun-Audio-Chat generation: text ids and 25 Hz speech-code groups, step by step.

`generate` calls `put(prompt_ids)` once, then per step `put(text_ids [B])` and, in audio mode,
`put_speech(codes [B, 5], speaking [B])` for the rows that spoke at that step, and finally `end()`.
Any transformers streamer (e.g. `TextStreamer`) also works: it simply never sees the speech.
"""

import threading
from dataclasses import dataclass, field
from queue import Queue
from typing import Any

import torch
from transformers.generation.streamers import BaseStreamer


class FunAudioChatStreamer(BaseStreamer):
    """Base class: splits `put` into `on_prompt` and `on_text`, and receives speech groups in `on_speech`.

    Subclass it and override the three hooks (all receive CPU tensors) and `end`.
    """

    def __init__(self):
        self._prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self._prompt_seen:
            self._prompt_seen = True
            self.on_prompt(value)
        else:
            self.on_text(value.reshape(-1))

    def put_speech(self, codes: torch.Tensor, speaking: torch.Tensor) -> None:
        self.on_speech(codes, speaking)

    def on_prompt(self, prompt_ids: torch.Tensor) -> None:
        """The prompt ids [B, S], once, before the first step."""

    def on_text(self, text_ids: torch.Tensor) -> None:
        """One new text id per row [B]."""

    def on_speech(self, codes: torch.Tensor, speaking: torch.Tensor) -> None:
        """One new group of 5 speech codes per row [B, 5]; `speaking` [B] marks the rows whose group is real."""

    def end(self) -> None:
        """Generation finished."""


@dataclass
class StreamChunk:
    """One item of [`FunAudioChatIteratorStreamer`]: a text step or a speech-code step.

    Args:
        text: per row, the newly decoded text (may be empty while a multi-byte character is incomplete), or None.
        text_ids: per row, the new text id (text steps), or None.
        speech_codes: per row, the 5 new codes (empty list for rows not speaking), or None.
    """

    text: list[str] | None = None
    text_ids: list[int] | None = None
    speech_codes: list[list[int]] | None = None


@dataclass
class _RowText:
    ids: list[int] = field(default_factory=list)
    printed: int = 0


class FunAudioChatIteratorStreamer(FunAudioChatStreamer):
    """Iterate over text deltas and speech-code groups while `generate` runs in another thread.

    Example:

    ```python
    >>> from threading import Thread
    >>> streamer = FunAudioChatIteratorStreamer(processor.tokenizer)
    >>> Thread(target=model.generate, kwargs={**inputs, "generation_mode": "audio", "streamer": streamer}).start()
    >>> for chunk in streamer:
    ...     if chunk.text: print(chunk.text[0], end="")
    ...     if chunk.speech_codes: vocoder_stream.push(chunk.speech_codes[0])
    ```
    """

    def __init__(self, tokenizer, skip_special_tokens: bool = True, timeout: float | None = None):
        super().__init__()
        self.tokenizer = tokenizer
        self.skip_special_tokens = skip_special_tokens
        self.timeout = timeout
        self.queue: Queue = Queue()
        self._stop = object()
        self._rows: list[_RowText] = []

    def on_prompt(self, prompt_ids: torch.Tensor) -> None:
        self._rows = [_RowText() for _ in range(prompt_ids.shape[0])]

    def on_text(self, text_ids: torch.Tensor) -> None:
        ids = text_ids.tolist()
        deltas = [self._delta(row, token) for row, token in zip(self._rows, ids)]
        self.queue.put(StreamChunk(text=deltas, text_ids=ids), timeout=self.timeout)

    def on_speech(self, codes: torch.Tensor, speaking: torch.Tensor) -> None:
        groups = [row.tolist() if flag else [] for row, flag in zip(codes, speaking.tolist())]
        self.queue.put(StreamChunk(speech_codes=groups), timeout=self.timeout)

    def end(self) -> None:
        rest = [self._delta(row, None, final=True) for row in self._rows]
        if any(rest):
            self.queue.put(StreamChunk(text=rest), timeout=self.timeout)
        self.queue.put(self._stop, timeout=self.timeout)

    def _delta(self, row: _RowText, token: int | None, final: bool = False) -> str:
        """New printable text of a row; an incomplete multi-byte character is held back until `final`."""
        if token is not None:
            row.ids.append(token)
        text = self.tokenizer.decode(row.ids, skip_special_tokens=self.skip_special_tokens)
        if text.endswith("\ufffd") and not final:
            return ""
        delta = text[row.printed :]
        row.printed = len(text)
        return delta

    def __iter__(self):
        return self

    def __next__(self) -> StreamChunk:
        item = self.queue.get(timeout=self.timeout)
        if item is self._stop:
            raise StopIteration
        return item


class BackgroundGeneration:
    """Runs `model.generate(streamer=streamer, **generate_kwargs)` in a worker thread while the caller iterates the
    streamer. An error in `generate` ends the stream and is re-raised by `result()` in the caller's thread.

    Example:

    ```python
    >>> streamer = FunAudioChatIteratorStreamer(processor.tokenizer)
    >>> generation = BackgroundGeneration(model, streamer, **inputs, generation_mode="audio")
    >>> for chunk in streamer:
    ...     print(*chunk.text, end="")
    >>> output = generation.result()
    ```
    """

    def __init__(self, model, streamer: BaseStreamer, **generate_kwargs):
        self._output: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, args=(model, streamer, generate_kwargs), daemon=True, name="fac-generate"
        )
        self._thread.start()

    def _run(self, model, streamer: BaseStreamer, generate_kwargs: dict) -> None:
        try:
            self._output = model.generate(**generate_kwargs, streamer=streamer)
        except BaseException as error:  # noqa: BLE001 - re-raised in the caller's thread by `result`
            self._error = error
            streamer.end()

    def result(self) -> Any:
        """Waits for `generate` to return and gives its output (or raises its error)."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._output


__all__ = ["BackgroundGeneration", "FunAudioChatIteratorStreamer", "FunAudioChatStreamer", "StreamChunk"]
