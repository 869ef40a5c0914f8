"""Spoken replies that stream: text deltas and 24 kHz audio chunks while the model is still generating.

Generation runs in a worker thread and feeds a [`FunAudioChatIteratorStreamer`]; speech-code groups are pushed into
the CosyVoice3 stream decoder (`exact=True`: the official web-demo schedule; default: bounded cost per chunk) in the
caller's thread, so vocoding overlaps with generation. The returned [`ReplyStream`] owns the worker: closing it stops
generating at the next decoding step.
"""

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from transformers import StoppingCriteriaList

from .streaming import BackgroundGeneration, CancelCriteria, FunAudioChatIteratorStreamer


@dataclass
class ReplyChunk:
    """A piece of a streamed reply: new text, or new audio samples (24 kHz float32), never both."""

    text: str = ""
    audio: np.ndarray | None = None
    sampling_rate: int = 24000


class ReplyStream(Iterator[ReplyChunk]):
    """A reply being generated (what [`stream_reply`] returns): iterate it for [`ReplyChunk`]s.

    Stopping early is always safe and immediate: `close()`, leaving a `with` block, dropping the stream (garbage
    collection) or an exception/KeyboardInterrupt that ends the `with` block stop generating at the next decoding
    step, drop the audio not yet yielded and join the worker thread; the model is then ready for the next call.
    `cancel()` does the same without waiting, from any thread (e.g. a stop button or a barge-in while another thread
    iterates): the iteration then ends at its next chunk.

    Example:

    ```python
    >>> with stream_reply(model, processor, inputs) as reply:
    ...     for chunk in reply:
    ...         if chunk.audio is not None and user_started_talking():
    ...             break  # generation stops within one decoding step
    ```
    """

    def __init__(self, generation: BackgroundGeneration, chunks: Iterator[ReplyChunk]):
        self._generation = generation
        self._chunks = chunks

    def __iter__(self) -> "ReplyStream":
        return self

    def __next__(self) -> ReplyChunk:
        try:
            return next(self._chunks)
        except BaseException:  # the end, a model error, or a KeyboardInterrupt while waiting: never leave the worker
            self.close()
            raise

    @property
    def generation(self) -> BackgroundGeneration:
        """The owner of the generation worker (`running`, `ended_at`, ...)."""
        return self._generation

    @property
    def cancelled(self) -> bool:
        return self._generation.cancelled

    def cancel(self) -> None:
        """Stops generating at the next decoding step and ends the iteration at its next chunk (returns at once)."""
        self._generation.cancel()

    def close(self) -> None:
        """Cancels (if still generating) and joins the worker thread. Safe to call more than once."""
        self._generation.close()

    def __enter__(self) -> "ReplyStream":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __del__(self) -> None:
        generation = getattr(self, "_generation", None)
        if generation is not None:
            generation.close()


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
) -> ReplyStream:
    """Starts generating a spoken reply to `inputs` (processor outputs, batch of 1); iterate the result for its pieces.

    Args:
        model: a [`FunAudioChatForConditionalGeneration`] with a token-to-waveform decoder attached.
        tokenizer: the processor or its tokenizer (decodes the text deltas).
        speaker: the voice, passed unchanged to the decoder (a stock voice name, a [192] embedding, a
            `FunAudioChatVoice` or a saved voice's path; see `generate`).
        exact: stream with the official web-demo schedule (whole-history recomputation) instead of bounded cost.
        interrupt: set it to stop generating but still flush the audio produced so far (a graceful stop; closing the
            stream instead drops it).
        generation_mode: `"audio"` (default) or `"text"`: a written reply only (text chunks; no decoder needed).
        generate_kwargs: more `generate` arguments (`max_new_tokens`, sampling, `stopping_criteria`, ...).

    Returns:
        A [`ReplyStream`]: iterate it; close it (or use `with`) to stop early.

    Example:

    ```python
    >>> import soundfile as sf
    >>> with sf.SoundFile("reply.wav", "w", samplerate=24000, channels=1) as wav:
    ...     for chunk in stream_reply(model, processor, inputs, max_new_tokens=300):
    ...         print(chunk.text, end="") if chunk.text else wav.write(chunk.audio)
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
    codebook = vocoder.config.vocab_size if spoken else 0
    streamer = FunAudioChatIteratorStreamer(getattr(tokenizer, "tokenizer", tokenizer), timeout=timeout)
    criteria = StoppingCriteriaList(generate_kwargs.pop("stopping_criteria", None) or [])
    if interrupt is not None:
        criteria.append(CancelCriteria(interrupt))
    generation = BackgroundGeneration(
        model,
        streamer,
        **inputs,
        **generate_kwargs,
        generation_mode=generation_mode,
        return_audio=False,
        stopping_criteria=criteria,
    )

    def chunks() -> Iterator[ReplyChunk]:
        for chunk in streamer:
            if generation.cancelled:
                return  # what is still queued was never heard: drop it
            if chunk.text and chunk.text[0]:
                yield ReplyChunk(text=chunk.text[0], sampling_rate=rate)
            if chunk.speech_codes:
                codes = [code for code in chunk.speech_codes[0] if 0 <= code < codebook]
                if codes:
                    yield from _audio_chunk(decoder.push(codes), rate)
        generation.result()
        if spoken and decoder.codes_received and not generation.cancelled:
            yield from _audio_chunk(decoder.finish(), rate)

    return ReplyStream(generation, chunks())


def _audio_chunk(waveform: torch.Tensor, rate: int) -> Iterator[ReplyChunk]:
    samples = waveform.detach().reshape(-1).float().cpu().numpy()
    if samples.size:
        yield ReplyChunk(audio=samples, sampling_rate=rate)


__all__ = ["ReplyChunk", "ReplyStream", "stream_reply"]
