"""Streaming token-to-waveform decoding of several replies at once ([`StreamBatch`]): one flow call and one vocoder
call per step for all the streams whose step has the same shapes.

The bounded stream decoder (`transformers_fac.token2wav.streaming.BoundedStreamDecoder`) works in fixed steps: once a
stream is past its first `stream_flow_context_codes` codes, every step runs the flow on the same number of codes and
the vocoder on the same number of mel frames. The replies of one generation batch start together and get 5 codes per
step each, so their steps line up. `step_together` runs the steps of many streams with the decoder's own pieces
(`start_step`, `flow_codes`, `new_frames`, `add_frames`, `vocoder_window`, `excitation`, `emit`), batching the two
expensive calls (the flow's DiT with its Euler steps, and the HiFT vocoder) over the streams of equal shapes; the
per-stream bookkeeping (f0 history, accumulated phase, noise columns) stays in each stream. Streams with a voice
prompt (cloned voices) run the flow alone (they attend to their own cached prompt states) and share the vocoder call.

Example:

```python
>>> streams = [model.token2wav.stream_decoder(voice) for voice in ("中文女", "中文男")]
>>> for stream, codes in zip(streams, new_codes):
...     stream.add(codes)
>>> chunks = step_together(streams)  # [1, S] audio per stream (S = 0 when it had no complete step)
```
"""

from collections import defaultdict
from collections.abc import Hashable
from typing import Any

import numpy as np
import torch

from .streaming import BoundedStreamDecoder


def _groups(items: list, key) -> list[list]:
    grouped = defaultdict(list)
    for item in items:
        grouped[key(item)].append(item)
    return list(grouped.values())


@torch.no_grad()
def _one_step(streams: list[BoundedStreamDecoder], finalize: bool) -> list[torch.Tensor]:
    """One step of each stream (a non-final step of `ready` streams, or their final step)."""
    model = streams[0].model
    ratio, device = model.config.token_mel_ratio, model.device
    look_ahead = 0 if finalize else model.flow.look_ahead
    plans = []
    for stream in streams:
        start = stream.start_step()
        if stream.voice.has_prompt:
            stream.add_frames(stream.flow_alone(start, finalize), finalize)
        else:
            plans.append((stream, start, stream.flow_codes(start, finalize)))
    for group in _groups(plans, key=lambda plan: plan[2].shape[1]):
        codes = torch.cat([plan[2] for plan in group]).to(device)
        frames = ratio * (codes.shape[1] - look_ahead)
        noise = torch.cat([model.flow_noise(stream.voice, ratio * start, frames) for stream, start, _ in group])
        embeddings = torch.cat([stream.voice.speaker_embedding for stream, _, _ in group]).to(device)
        mel = model.flow(codes, embeddings, noise, finalize=finalize)
        for row, (stream, start, _) in enumerate(group):
            stream.add_frames(stream.new_frames(mel[row : row + 1], start), finalize)

    hift = model.hift
    windows = [(stream, stream.vocoder_window()) for stream in streams]
    audio = {}
    for group in _groups(windows, key=lambda window: window[1].shape[-1]):
        mel = torch.cat([window for _, window in group])
        f0_windows = hift.predict_f0(mel, finalize=finalize)
        parts = [stream.excitation(f0_windows[row : row + 1], finalize) for row, (stream, _) in enumerate(group)]
        f0, phase, noise = (torch.cat(part) for part in zip(*parts))
        wav = hift.decode(mel[..., : f0.shape[1]], hift.source(f0, noise, phase=phase), finalize=finalize)
        for row, (stream, _) in enumerate(group):
            audio[id(stream)] = stream.emit(wav[row : row + 1], finalize)
    return [audio[id(stream)] for stream in streams]


def _batchable(stream) -> bool:
    return isinstance(stream, BoundedStreamDecoder)


@torch.no_grad()
def step_together(streams: list, steps: int | None = None) -> list[torch.Tensor]:
    """Decodes the steps that are `ready` in each stream (codes given with `add`), at most `steps` per stream (all
    by default); returns each stream's new audio [1, S] (S may be 0), the same as `stream.push([])` would with all
    steps. A stream that cannot share calls (the exact mode) decodes all its ready steps."""
    chunks = {id(stream): [torch.zeros(1, 0, device=stream.model.device)] for stream in streams}
    batched = [stream for stream in streams if _batchable(stream)]
    for stream in streams:
        if not _batchable(stream):
            chunks[id(stream)].append(stream.push([]))
    done = 0
    while steps is None or done < steps:
        ready = [stream for stream in batched if stream.ready]
        if not ready:
            break
        for stream, wav in zip(ready, _one_step(ready, finalize=False)):
            chunks[id(stream)].append(wav)
        done += 1
    return [torch.cat(chunks[id(stream)], dim=1) for stream in streams]


def step_shape(stream) -> Hashable:
    """What the next non-final step of a `ready` stream runs on: streams with equal shapes share its flow call
    (those without a voice prompt) and its vocoder call; a stream that cannot share calls has a shape of its own."""
    if not _batchable(stream):
        return ("alone", id(stream))
    flow_codes = stream.offset + stream.hop + stream.look_ahead - max(0, stream.offset - stream.flow_context)
    frames_after = stream.mel_base + stream.mel.shape[-1] + stream.ratio * stream.hop
    vocoder_frames = frames_after - max(0, stream.frames_emitted - stream.hift_context)
    return (flow_codes, vocoder_frames)


@torch.no_grad()
def finish_together(streams: list) -> list[torch.Tensor]:
    """Decodes everything left in each stream and closes it: the rest of its steps, then its final step, batched
    where shapes agree; returns each stream's last audio [1, S], the same as `push([])` then `finish()` would."""
    rest = step_together(streams)
    final = {}
    for stream in streams:
        if not _batchable(stream):
            final[id(stream)] = stream.finish()
    closing = [stream for stream in streams if _batchable(stream) and stream.end_input()]
    if closing:
        final.update({id(stream): wav for stream, wav in zip(closing, _one_step(closing, finalize=True))})
    empty = torch.zeros(1, 0)
    return [torch.cat([chunk, final.get(id(stream), empty).to(chunk)], dim=1) for stream, chunk in zip(streams, rest)]


class StreamBatch:
    """Bounded streams of many replies decoded together, keyed by reply (what `FunAudioChatToken2Wav.stream_batch()`
    returns): each `step` runs the streams' due steps with one flow call and one vocoder call per group of equal
    shapes ([`step_together`]).

    Example:

    ```python
    >>> streams = model.token2wav.stream_batch()
    >>> streams.open("a", voice="中文女")
    >>> streams.push("a", [12, 4051, 77, 6562])  # ids >= 6561 (BOS/EOS/pad) are dropped
    >>> streams.due()  # {key: shape} of the streams with a complete step waiting
    >>> audio = streams.step()  # {key: float32 samples} for the streams that completed a chunk
    >>> other = model.token2wav.stream_batch()
    >>> other.attach("a", streams.detach("a"))  # the stream moves to another batch as it stands
    >>> tails = other.finish(["a"])  # {key: the rest of its audio}
    ```
    """

    def __init__(self, token2wav: Any):
        self.token2wav = token2wav
        self.sampling_rate = token2wav.config.sampling_rate
        self.vocab_size = token2wav.config.vocab_size
        self._decoders: dict[Hashable, Any] = {}

    def open(self, key: Hashable, voice: Any, exact: bool = False) -> None:
        """Starts the stream of a row (an unknown voice raises here); `exact`: the official web-demo schedule."""
        self._decoders[key] = self.token2wav.stream_decoder(voice, exact=exact)

    def push(self, key: Hashable, codes: list[int]) -> int:
        """Hands a row's new codes to its stream (decoded by the next `step`); returns how many are decoder codes."""
        valid = [code for code in codes if 0 <= code < self.vocab_size]
        self._decoders[key].add(valid)
        return len(valid)

    def due(self) -> dict[Hashable, Hashable]:
        """The rows with a complete step to decode, each with the shape of that step ([`step_shape`]): a `step` of
        rows of equal shape runs one flow call and one vocoder call for all of them."""
        return {key: step_shape(decoder) for key, decoder in self._decoders.items() if decoder.ready}

    def next_step_codes(self, key: Hashable) -> int:
        """How many codes the row must have received for its next complete step (its audio so far covers the steps
        before)."""
        decoder = self._decoders[key]
        return decoder.offset + decoder.hop + decoder.look_ahead

    def step(self, keys: list[Hashable] | None = None, steps: int | None = None) -> dict[Hashable, np.ndarray]:
        """Decodes the complete steps of these rows (all rows by default), at most `steps` per row (all by default);
        returns the new audio of the rows that produced some."""
        keys = list(self._decoders) if keys is None else keys
        chunks = step_together([self._decoders[key] for key in keys], steps)
        audio = {key: _samples(chunk) for key, chunk in zip(keys, chunks)}
        return {key: samples for key, samples in audio.items() if samples.size}

    def finish(self, keys: list[Hashable]) -> dict[Hashable, np.ndarray]:
        """Decodes everything left of these rows (together) and closes their streams."""
        chunks = finish_together([self._decoders.pop(key) for key in keys])
        return {key: _samples(chunk) for key, chunk in zip(keys, chunks)}

    def drop(self, key: Hashable) -> None:
        """Forgets a row (cancelled or failed) without decoding the rest."""
        self._decoders.pop(key, None)

    def detach(self, key: Hashable) -> Any:
        """Removes a row's stream and returns it as it stands, to `attach` it to another batch (one that another
        thread decodes, say)."""
        return self._decoders.pop(key)

    def attach(self, key: Hashable, stream: Any) -> None:
        """Adds a row's stream `detach`ed from another batch (of this process or, pickled, of another): it goes on
        where it stood."""
        if stream.model is None:  # unpickled: it decodes with this batch's model
            stream.bind(self.token2wav)
        self._decoders[key] = stream


def _samples(waveform) -> np.ndarray:
    return waveform.detach().reshape(-1).float().cpu().numpy()


__all__ = ["StreamBatch", "finish_together", "step_shape", "step_together"]
