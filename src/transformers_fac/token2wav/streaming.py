"""Streaming decoders: `push(codes) -> wav chunk`, `finish() -> last chunk`.

Both work in steps of `hop` codes (15 = 0.6 s) once `hop + 3` look-ahead codes are available, so their output never
depends on how the codes are split across `push` calls, and `finish()` vocodes everything that is left (nothing is
dropped). Concatenating all chunks gives 960 samples per code.

- `ExactStreamDecoder` reproduces Fun-Audio-Chat's web-demo pattern: each step re-runs the flow on *all* codes so far
  (full attention, `finalize=False`) keeping only the new mel frames, and the vocoder over the whole mel history, keeping
  only the new samples. Its cost per step grows with the length of the reply. (The web demo also trims its code history
  after 8 s and restarts the vocoder every 24 s; that is not reproduced here.)
- `BoundedStreamDecoder` (the default) bounds the cost per step: the flow sees at most `stream_flow_context_codes` past
  codes plus the new hop and look-ahead; the vocoder re-runs only a window of `stream_hift_context_frames` past frames
  (at least its receptive field) with the f0 of earlier frames and the accumulated source phase carried over, so the
  vocoder output equals the whole-history vocoder. Only the flow's truncated left context makes it deviate from the
  exact mode.

A voice prompt (L codes, 2L mel frames) is a fixed prefix of every flow call. The exact mode re-runs it with the
codes at every step, as the reference does. For the bounded mode, what is truly invariant across its calls depends on
the attention mask: under the reference's full attention the prompt frames also attend to the codes after them, so
their hidden states, keys and values - and even their Euler trajectory x_t - change with every window; only their
inputs (prompt mel, code condition, speaker embedding) stay fixed, a negligible share of the work. The bounded mode therefore
lets the prompt frames attend only to each other (the codes' frames still attend to the prompt and to each other, as
in the chunk-causal mode where whole prompt chunks ignore later frames). Then the prompt's trajectory, and at every
Euler step its keys/values in every block and the last projected frames its causal position embedding hands on, are
the same for all windows: `CausalMaskedDiffWithDiT.prompt_prefix` samples them once per stream (at the first step,
when the reply's first 3 codes, which the prompt's last codes look ahead into, are known), and each step then runs
the DiT on its window only, attending to the cached prefix. Cost per step: window frames through the DiT plus their
attention over the 2L prompt keys; memory: n_timesteps x depth x 2 (CFG rows) x 2 (keys, values) x 2L x dim values
(about 1.8 GB in float32 for a 10 s prompt with the release sizes, half in bfloat16). The window's frames keep the
noise columns and the prompt the positions of the offline decode (prompt at 0..2L-1, code frame k at 2L + k).
"""

from collections import deque

import torch
from transformers import PreTrainedModel

from ..voice.voice_file import FunAudioChatVoice


class _StreamDecoder:
    def __init__(self, model: PreTrainedModel, voice: FunAudioChatVoice):
        self.model = model
        self.config = model.config
        self.voice = voice
        self.hop = self.config.stream_hop_codes
        self.look_ahead = self.config.pre_lookahead_len
        self.ratio = self.config.token_mel_ratio
        self.samples_per_frame = self.config.samples_per_frame
        self.codes = torch.zeros(0, dtype=torch.long)  # retained codes; codes[0] is code number `code_base`
        self.code_base = 0
        self.offset = 0  # codes whose mel frames are known
        self.samples_emitted = 0
        self.finished = False
        # work of the latest steps: mel frames computed by the flow and frames re-run by the vocoder
        self.steps: deque[dict[str, int]] = deque(maxlen=100)
        self._cost: dict[str, int] = {}

    def __getstate__(self) -> dict:
        """Pickled without its model: a stream moved to another process is `bind`-ed to that process's copy."""
        return {**self.__dict__, "model": None}

    def bind(self, model: PreTrainedModel) -> None:
        """Attaches the token2wav model that decodes this stream (after unpickling)."""
        self.model = model

    @property
    def codes_received(self) -> int:
        return self.code_base + self.codes.numel()

    @torch.no_grad()
    def push(self, codes) -> torch.Tensor:
        """Add speech codes (ids >= 6561 are dropped) and return the audio they complete ([1, S], S may be 0)."""
        self.add(codes)
        chunks = [self._empty()]
        while self.ready:
            chunks.append(self._step(finalize=False))
        return torch.cat(chunks, dim=1)

    def add(self, codes) -> None:
        """Add speech codes without decoding them (`push` is `add`, then every step that is `ready`)."""
        if self.finished:
            raise ValueError("This stream is finished; start a new one with model.stream_decoder().")
        new = self.model.filter_codes(codes)[0]
        self.codes = torch.cat([self.codes, new])

    @property
    def ready(self) -> bool:
        """Whether the codes for the next step (`hop` new codes and the look-ahead) have arrived."""
        return self.codes_received >= self.offset + self.hop + self.look_ahead

    @torch.no_grad()
    def finish(self) -> torch.Tensor:
        """Vocode every remaining code (finalize=True) and close the stream."""
        if not self.end_input():
            return self._empty()
        return self._step(finalize=True)

    def end_input(self) -> bool:
        """Closes the stream to new codes; returns whether a final step is left to decode (what `finish` does)."""
        if self.finished:
            raise ValueError("This stream is already finished.")
        self.finished = True
        return self.codes_received > self.offset

    def _empty(self) -> torch.Tensor:
        return torch.zeros(1, 0, device=self.model.device)

    def _codes(self, start: int, end: int) -> torch.Tensor:
        return self.codes[start - self.code_base : end - self.code_base][None]

    def _flow(self, start: int, finalize: bool) -> torch.Tensor:
        """New mel frames for codes [offset, offset + hop) (or up to the end), the flow seeing codes from `start`."""
        return self.new_frames(self._mel(self.flow_codes(start, finalize), start, finalize), start)

    def flow_codes(self, start: int, finalize: bool) -> torch.Tensor:
        """The codes the flow reads at this step: [1, N] from code `start` on."""
        end = self.codes_received if finalize else self.offset + self.hop + self.look_ahead
        return self._codes(start, end)

    def new_frames(self, mel: torch.Tensor, start: int) -> torch.Tensor:
        """The frames of a flow output (for the codes from `start`) that this step adds."""
        self._cost["flow_frames"] = mel.shape[-1]
        return mel[..., self.ratio * (self.offset - start) :]

    def _mel(self, codes: torch.Tensor, start: int, finalize: bool) -> torch.Tensor:
        return self.model.token2mel(codes, self.voice, finalize=finalize, frame_offset=self.ratio * start)

    def _step(self, finalize: bool) -> torch.Tensor:
        raise NotImplementedError


class ExactStreamDecoder(_StreamDecoder):
    """Fun-Audio-Chat's web-demo streaming (whole-history flow and vocoder), see the module docstring."""

    def __init__(self, model: PreTrainedModel, voice: FunAudioChatVoice):
        super().__init__(model, voice)
        self.mel = torch.zeros(1, self.config.mel_bins, 0, device=model.device)

    def _step(self, finalize: bool) -> torch.Tensor:
        self._cost = {}
        self.mel = torch.cat([self.mel, self._flow(0, finalize)], dim=-1)
        self._cost["hift_frames"] = self.mel.shape[-1]
        self.steps.append(self._cost)
        wav = self.model.mel2wav(self.mel, finalize=finalize)[:, self.samples_emitted :]
        self.samples_emitted += wav.shape[1]
        if not finalize:
            self.offset += self.hop
        return wav


class BoundedStreamDecoder(_StreamDecoder):
    """Constant-cost streaming: bounded flow context, windowed vocoder with carried f0 phase (module docstring)."""

    def __init__(self, model: PreTrainedModel, voice: FunAudioChatVoice):
        super().__init__(model, voice)
        self.prefix = None  # the voice prompt's cached DiT states, sampled at the first step (module docstring)
        self.flow_context = self.config.stream_flow_context_codes
        self.hift_context = self.config.stream_hift_context_frames
        hift = model.hift
        self.f0_look_ahead = hift.f0_predictor.look_ahead
        self.holdback = hift.holdback_frames
        self.harmonics = self.config.nb_harmonics + 1
        device = model.device
        # retained history: mel frames from `mel_base`; f0 and accumulated source cycles from `f0_base`. The cycles are
        # summed in float64 and rounded to float32 like the reference's cumulative sum, so that the windowed vocoder
        # reproduces the whole-history one.
        self.mel = torch.zeros(1, self.config.mel_bins, 0, device=device)
        self.mel_base = 0
        self.f0 = torch.zeros(1, 0, device=device)
        self.cycles = torch.zeros(1, 0, self.harmonics, dtype=torch.float64, device=device)
        self.f0_base = 0
        self.frames_emitted = 0
        self._window_start = 0  # first mel frame the vocoder re-runs at the current step

    def _mel(self, codes: torch.Tensor, start: int, finalize: bool) -> torch.Tensor:
        if not self.voice.has_prompt:
            return super()._mel(codes, start, finalize)
        model, voice, device = self.model, self.voice, self.model.device
        embedding, prompt_frames = voice.speaker_embedding.to(device), voice.prompt_mel.shape[1]
        if self.prefix is None:
            self.prefix = model.flow.prompt_prefix(
                voice.prompt_codes.to(device),
                voice.prompt_mel.to(device),
                self._codes(0, min(self.look_ahead, self.codes_received)).to(device),
                embedding,
                model.noise.flow(0, prompt_frames, device=device),
            )
            self._cost["prompt_frames"] = prompt_frames
        frames = self.ratio * (codes.shape[1] - (0 if finalize else self.look_ahead))
        noise = model.noise.flow(prompt_frames + self.ratio * start, frames, device=device)
        return model.flow.forward_after_prefix(
            codes.to(device), embedding, noise, self.prefix, finalize=finalize, follows_prompt=start == 0
        )

    # A step in pieces, so that the steps of several streams can share one flow and one vocoder call (see
    # `transformers_fac.serving.stream_batch`): `start_step` -> `flow_codes` -> flow -> `new_frames` -> `add_frames`
    # -> `vocoder_window` -> f0 -> `excitation` -> source and vocoder -> `emit`.
    def _step(self, finalize: bool) -> torch.Tensor:
        start = self.start_step()
        self.add_frames(self._flow(start, finalize), finalize)
        return self._vocode(finalize)

    def start_step(self) -> int:
        """Begins a step; returns the first code the flow sees (at most `stream_flow_context_codes` before the new
        ones)."""
        self._cost = {}
        return max(0, self.offset - self.flow_context)

    def flow_alone(self, start: int, finalize: bool) -> torch.Tensor:
        """This step's new mel frames from a flow call of this stream alone (a stream with a voice prompt attends to
        its own cached prompt states, so its flow cannot share a call with other streams)."""
        return self._flow(start, finalize)

    def add_frames(self, new_mel: torch.Tensor, finalize: bool) -> None:
        """Appends the step's new mel frames and moves on by one hop."""
        self.mel = torch.cat([self.mel, new_mel], dim=-1)
        if not finalize:
            self.offset += self.hop

    def _vocode(self, finalize: bool) -> torch.Tensor:
        hift = self.model.hift
        mel = self.vocoder_window()
        f0, phase, noise = self.excitation(self.model.predict_f0(mel, finalize=finalize), finalize)
        source = hift.source(f0, noise, phase=phase)
        return self.emit(hift.decode(mel[..., : f0.shape[1]], source, finalize=finalize), finalize)

    def vocoder_window(self) -> torch.Tensor:
        """The mel frames the vocoder re-runs at this step: [1, 80, W]."""
        self._window_start = max(0, self.frames_emitted - self.hift_context)
        mel = self.mel[..., self._window_start - self.mel_base :]
        self._cost["hift_frames"] = mel.shape[-1]
        return mel

    def excitation(self, f0_window: torch.Tensor, finalize: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """From the f0 predicted over the window: f0 [1, F], phase [1, F, H] and noise of the vocoder's source."""
        hift, window_start = self.model.hift, self._window_start
        total = self.mel_base + self.mel.shape[-1]  # mel frames known so far
        # f0: keep the values of frames already final, append the newly final ones (their left context is in window)
        f0_end = total if finalize else total - self.f0_look_ahead
        f0_known_end = self.f0_base + self.f0.shape[1]
        new_f0 = f0_window[:, f0_known_end - window_start :]
        step_cycles = hift.m_source.cycles(new_f0).double()
        last = self.cycles[:, -1:] if self.cycles.shape[1] else torch.zeros(1, 1, self.harmonics).to(step_cycles)
        new_cycles = last + torch.cumsum(step_cycles, dim=1)
        self.f0 = torch.cat([self.f0, new_f0], dim=1)
        self.cycles = torch.cat([self.cycles, new_cycles], dim=1)

        # source for frames [window_start, f0_end) with the carried phase
        f0 = self.f0[:, window_start - self.f0_base : f0_end - self.f0_base]
        cycles = self.cycles[:, window_start - self.f0_base : f0_end - self.f0_base]
        step = self.samples_per_frame
        noise = self.model.noise.source(window_start * step, f0.shape[1] * step, device=self.model.device)
        return f0, hift.m_source.phase(cycles), noise

    def emit(self, wav: torch.Tensor, finalize: bool) -> torch.Tensor:
        """Keeps the new samples of the vocoder's output and ends the step."""
        total = self.mel_base + self.mel.shape[-1]
        emit_end = total if finalize else total - self.holdback
        wav = wav[:, (self.frames_emitted - self._window_start) * self.samples_per_frame :]
        self.frames_emitted = emit_end
        self.samples_emitted += wav.shape[1]
        self.steps.append(self._cost)
        self._trim()
        return wav

    def _trim(self) -> None:
        """Forget what no later step can read (keeps memory bounded)."""
        keep_codes_from = max(0, self.offset - self.flow_context)
        if keep_codes_from > self.code_base:
            self.codes = self.codes[keep_codes_from - self.code_base :]
            self.code_base = keep_codes_from
        keep_frames_from = max(0, self.frames_emitted - self.hift_context)
        if keep_frames_from > self.mel_base:
            self.mel = self.mel[..., keep_frames_from - self.mel_base :]
            self.mel_base = keep_frames_from
        keep_f0_from = max(0, keep_frames_from - 1)
        if keep_f0_from > self.f0_base:
            self.f0 = self.f0[:, keep_f0_from - self.f0_base :]
            self.cycles = self.cycles[:, keep_f0_from - self.f0_base :]
            self.f0_base = keep_f0_from
