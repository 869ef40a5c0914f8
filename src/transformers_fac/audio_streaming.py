"""Spoken replies that stream: text deltas and 24 kHz audio chunks while the model is still generating.

Generation runs in a worker thread and feeds a [`FunAudioChatIteratorStreamer`]; speech-code groups are pushed into
the CosyVoice3 stream decoder (`exact=True`: the official web-demo schedule; default: bounded cost per chunk) in the
caller's thread, so vocoding overlaps with generation.
"""

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from .streaming import BackgroundGeneration, FunAudioChatIteratorStreamer

VOCODER_CODES = 6561


@dataclass
class ReplyChunk:
    """A piece of a streamed reply: new text, or new audio samples (24 kHz float32), never both."""

    text: str = ""
    audio: np.ndarray | None = None
    sampling_rate: int = 24000


class InterruptCriteria(StoppingCriteria):
    """Stops generation (every row) as soon as `event` is set, e.g. when the user starts speaking again."""

    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor | None = None, **kwargs):
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


def stream_reply(
    model,
    tokenizer,
    inputs: dict,
    speaker: Any = None,
    exact: bool = False,
    interrupt: threading.Event | None = None,
    timeout: float | None = None,
    generation_mode: str = "audio",
    **generate_kwargs,
) -> Iterator[ReplyChunk]:
    """Generates a spoken reply to `inputs` (processor outputs, batch of 1) and yields it piece by piece.

    Args:
        model: a [`FunAudioChatForConditionalGeneration`] with a token-to-waveform decoder attached.
        tokenizer: the processor or its tokenizer (decodes the text deltas).
        speaker: voice name, [192] embedding, `FunAudioChatVoice` or saved voice path (see `generate`).
        exact: stream with the official web-demo schedule (whole-history recomputation) instead of bounded cost.
        interrupt: set it to stop generating (the audio produced so far is still flushed).
        generation_mode: `"audio"` (default) or `"text"`: a written reply only (text chunks; no decoder needed).
        generate_kwargs: more `generate` arguments (`max_new_tokens`, sampling, ...).

    Example:

    ```python
    >>> for chunk in stream_reply(model, processor, inputs, max_new_tokens=300):
    ...     if chunk.text:
    ...         print(chunk.text, end="")
    ...     else:
    ...         player.write(chunk.audio)
    ```
    """
    if inputs["input_ids"].shape[0] != 1:
        raise ValueError("stream_reply streams one conversation at a time (batch size 1).")
    spoken = generation_mode == "audio"
    vocoder = model.token2wav if spoken else None
    if spoken and vocoder is None:
        raise ValueError("Streaming audio needs the CosyVoice3 decoder: from_pretrained(..., token2wav=...).")
    decoder = vocoder.stream_decoder(speaker, exact=exact) if spoken else None
    rate = vocoder.config.sampling_rate if spoken else ReplyChunk.sampling_rate
    streamer = FunAudioChatIteratorStreamer(getattr(tokenizer, "tokenizer", tokenizer), timeout=timeout)
    criteria = StoppingCriteriaList(generate_kwargs.pop("stopping_criteria", None) or [])
    if interrupt is not None:
        criteria.append(InterruptCriteria(interrupt))
    generation = BackgroundGeneration(
        model,
        streamer,
        **inputs,
        **generate_kwargs,
        generation_mode=generation_mode,
        return_audio=False,
        stopping_criteria=criteria,
    )
    for chunk in streamer:
        if chunk.text and chunk.text[0]:
            yield ReplyChunk(text=chunk.text[0], sampling_rate=rate)
        if chunk.speech_codes:
            codes = [code for code in chunk.speech_codes[0] if 0 <= code < VOCODER_CODES]
            if codes:
                yield from _audio_chunk(decoder.push(codes), rate)
    generation.result()
    if spoken and decoder.codes_received:
        yield from _audio_chunk(decoder.finish(), rate)


def _audio_chunk(waveform: torch.Tensor, rate: int) -> Iterator[ReplyChunk]:
    samples = waveform.detach().reshape(-1).float().cpu().numpy()
    if samples.size:
        yield ReplyChunk(audio=samples, sampling_rate=rate)


__all__ = ["InterruptCriteria", "ReplyChunk", "stream_reply"]
