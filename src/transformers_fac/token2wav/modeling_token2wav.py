"""FunAudioChatToken2Wav: Fun-Audio-Chat speech codes (25 Hz, ids 0..6560) -> 24 kHz waveform, natively in PyTorch.

The flow (`self.flow`, keys of the official `flow.pt`) turns codes into an 80-bin mel at 50 Hz, the causal HiFT
(`self.hift`, keys of `hift.pt`) turns the mel into audio: 480 samples per mel frame, 960 per code.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from os import PathLike
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from ..voice.voice_file import FunAudioChatVoice
from .configuration_token2wav import FunAudioChatToken2WavConfig
from .flow import CausalMaskedDiffWithDiT
from .flow_dit import RotaryEmbedding
from .hift import CausalHiFTGenerator, Snake
from .noise import FixedNoise
from .speakers import load_speaker_file
from .voices import VoiceLike, resolve_voice

CodesLike = torch.Tensor | Sequence[int]


@dataclass
class FunAudioChatToken2WavOutput(ModelOutput):
    """Output of [`FunAudioChatToken2Wav.forward`].

    Args:
        waveform: 24 kHz audio [1, samples], in [-0.99, 0.99].
    """

    waveform: torch.Tensor | None = None


class FunAudioChatToken2Wav(PreTrainedModel):
    r"""
    The CosyVoice3 token-to-waveform decoder used by Fun-Audio-Chat: code embedding + pre-look-ahead layer, a
    conditional flow-matching DiT (10 Euler steps, cosine schedule, CFG 0.7, fixed noise) and the causal HiFT vocoder.

    Load the official weights with [`~FunAudioChatToken2Wav.from_cosyvoice`] (reads `cosyvoice3.yaml`, `flow.pt`,
    `hift.pt`), or a converted checkpoint with `from_pretrained`.

    Every `voice` argument takes a stock voice name (`"中文女"`, `"中文男"`), a speaker embedding [192], a
    [`FunAudioChatVoice`] (e.g. from [`~FunAudioChatToken2Wav.clone_voice`]) or the path of a saved voice; a voice
    with a prompt conditions the flow on the reference clip's codes and mel (CosyVoice3 zero-shot cloning).

    Example:

    ```python
    >>> import torch
    >>> from transformers_fac import FunAudioChatToken2Wav, FunAudioChatToken2WavConfig
    >>> config = FunAudioChatToken2WavConfig(
    ...     dit_dim=64, dit_depth=1, dit_heads=4, dit_head_dim=16, pre_lookahead_channels=32,
    ...     hift_base_channels=32, f0_cond_channels=32,
    ... )
    >>> model = FunAudioChatToken2Wav(config).eval()
    >>> wav = model.decode(torch.tensor([[1, 2, 3, 4, 6562]]), voice=torch.randn(192))
    >>> wav.shape  # 4 valid codes -> 4 * 960 samples; 6562 (EOS) is dropped
    torch.Size([1, 3840])
    ```
    """

    config_class = FunAudioChatToken2WavConfig
    config: FunAudioChatToken2WavConfig
    base_model_prefix = "token2wav"
    main_input_name = "codes"
    _keep_in_fp32_modules_strict = ["f0_predictor", "m_source"]
    _no_split_modules = ["DiTBlock", "ResBlock"]

    def __init__(self, config: FunAudioChatToken2WavConfig):
        super().__init__(config)
        self.flow = CausalMaskedDiffWithDiT(config)
        self.hift = CausalHiFTGenerator(config)
        self.noise = FixedNoise(config.mel_bins, config.flow_noise_frames, config.nb_harmonics + 1, config.noise_seed)
        self._voices: dict[str, torch.Tensor] | None = None
        self._voice_frontend = None
        self.default_voice: FunAudioChatVoice | None = None
        self.post_init()

    @property
    def sampling_rate(self) -> int:
        """Output sample rate (24000)."""
        return self.config.sampling_rate

    # ----------------------------------------------------------------------------------------------- initialisation
    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if parametrize.is_parametrized(module, "weight"):
            original = module.parametrizations.weight
            init.normal_(original.original1, mean=0.0, std=0.01)
            init.copy_(
                original.original0,
                original.original1.norm(dim=tuple(range(1, original.original1.dim())), keepdim=True),
            )
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, (nn.Linear, nn.Conv1d)):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=1.0)
        elif isinstance(module, Snake):
            init.ones_(module.alpha)
        elif isinstance(module, RotaryEmbedding):
            init.copy_(
                module.inv_freq, RotaryEmbedding.default_inv_freq(self.config.dit_head_dim, self.config.rope_theta)
            )

    # ----------------------------------------------------------------------------------------------- loading
    @classmethod
    def from_cosyvoice(cls, path_or_repo_id: str | PathLike, **kwargs) -> "FunAudioChatToken2Wav":
        """Build from a CosyVoice3 directory or hub repo (`cosyvoice3.yaml`, `flow.pt`, `hift.pt`; default repo
        `FunAudioLLM/Fun-CosyVoice3-0.5B-2512`). Keyword arguments go to
        [`~transformers_fac.token2wav.cosyvoice_loading.load_cosyvoice`]."""
        from .cosyvoice_loading import load_cosyvoice

        return load_cosyvoice(path_or_repo_id, model_class=cls, **kwargs)

    # ----------------------------------------------------------------------------------------------- speed
    def compile_flow(self, **compile_options) -> None:
        """Compile the flow's DiT step (one Euler step, run `n_timesteps` times per chunk) with `torch.compile`.

        The bounded streaming decoder feeds the flow fixed-shape windows once its context is full (hop + context +
        look-ahead codes), so its steps replay one graph; on CUDA the default `mode="reduce-overhead"` runs them as CUDA
        graphs. Other lengths (the first chunks, offline segments) compile their own graphs, then `torch.compile`
        makes the length dynamic. `compile_options` go to `torch.compile` (default: `fullgraph=True`, and
        `mode="reduce-overhead"` on CUDA); the first calls of each shape compile (tens of seconds). Sampling a voice
        prompt's prefix stays eager.
        """
        options = {"fullgraph": True, "mode": "reduce-overhead" if self.device.type == "cuda" else None}
        options.update(compile_options)
        if options.get("options") is not None:
            options.pop("mode", None)  # torch.compile takes `mode` or `options`
        self.flow.decoder.compiled_estimator = torch.compile(self.flow.decoder.estimator.forward, **options)

    def set_dit_dtype(self, dtype: torch.dtype) -> None:
        """Run the flow's DiT (most of the decoder's work) in `dtype`, e.g. `torch.bfloat16` or `torch.float16` on a
        GPU; the code embedding, the Euler updates and the vocoder stay as they are. Quality against float32:
        `benchmarks/bench_token2wav.py` reports the mel SNR."""
        self.flow.decoder.estimator.to(dtype)

    # ----------------------------------------------------------------------------------------------- noise and voices
    def set_noise(self, flow_noise: torch.Tensor | None = None, source_noise: torch.Tensor | None = None) -> None:
        """Substitute prefixes of the fixed noise: `flow_noise` [1, 80, K] (flow frames < K) and `source_noise`
        [1, L, 9] (the vocoder's uniform noise for output samples < L). Used to reproduce reference outputs."""
        self.noise.override(flow_noise=flow_noise, source_noise=source_noise)

    def reset_noise(self) -> None:
        """Go back to the generated noise (forget `set_noise`)."""
        self.noise.reset()

    def load_voices(self, path: str | PathLike | None = None, check_hash: bool = True) -> list[str]:
        """Read a speaker file (default: the official `new_spk2info.pt`, downloaded once) and return the voice names."""
        self._voices = load_speaker_file(path, check_hash=check_hash)
        return list(self._voices)

    @property
    def voice_names(self) -> list[str]:
        """The names of the available voices: the default voice first when one is set (`set_default_voice`), then
        the stock voices (the official speaker file is loaded on first use)."""
        names = list(self._stock_voices())
        if self.default_voice is not None and self.default_voice.name not in names:
            names.insert(0, self.default_voice.name)
        return names

    def _stock_voices(self) -> dict[str, torch.Tensor]:
        if self._voices is None:
            self.load_voices()
        return self._voices

    @property
    def stock_voices(self) -> dict[str, torch.Tensor]:
        """The loaded speaker file: voice name -> speaker vector [192] (the official file is loaded on first use)."""
        return dict(self._stock_voices())

    def resolve_voice(self, voice: VoiceLike = None) -> FunAudioChatVoice:
        """Any accepted voice -> the [`FunAudioChatVoice`] the decoder speaks with, checked against its sizes.

        None gives `default_voice` (see `set_default_voice`) or the stock `"中文女"`; a name gives a stock voice (or
        the default voice of that name); a path loads a saved voice; a speaker embedding [192] is a voice without
        prompt."""
        config = self.config
        voice = resolve_voice(voice, self._stock_voices, config.speaker_embedding_dim, default=self.default_voice)
        if voice.speaker_embedding.shape[1] != config.speaker_embedding_dim:
            raise ValueError(
                f"A speaker embedding must have shape [{config.speaker_embedding_dim}] or "
                f"[1, {config.speaker_embedding_dim}], got {tuple(voice.speaker_embedding.shape)}."
            )
        if voice.has_prompt:
            if voice.prompt_mel.shape[-1] != config.mel_bins:
                raise ValueError(
                    f"The voice's prompt mel has {voice.prompt_mel.shape[-1]} bins, expected {config.mel_bins}."
                )
            if int(voice.prompt_codes.max()) >= config.vocab_size:
                raise ValueError(f"The voice's prompt codes must be < {config.vocab_size}.")
        return voice

    def speaker_embedding(self, voice: VoiceLike = None) -> torch.Tensor:
        """The speaker embedding [1, 192] float32 of any accepted voice (see `resolve_voice`)."""
        return self.resolve_voice(voice).speaker_embedding

    def set_default_voice(self, voice: VoiceLike) -> FunAudioChatVoice | None:
        """Make `voice` (a voice, a voice path, a name or a speaker embedding) what `voice=None` means; None restores
        the stock `"中文女"`. A voice saved next to a checkpoint or adapter (`voice/`) becomes the default when it loads."""
        voice = None if voice is None else self.resolve_voice(voice)
        if voice is not None and voice.name is None:  # named, so that voice lists can offer it
            voice = FunAudioChatVoice(
                voice.speaker_embedding,
                voice.prompt_codes,
                voice.prompt_mel,
                name="default voice",
                source=voice.source,
            )
        self.default_voice = voice
        return voice

    # ----------------------------------------------------------------------------------------------- cloning
    @property
    def voice_frontend(self):
        """The [`~transformers_fac.voice.VoiceFrontend`] used to clone voices: `campplus.onnx` and the v3 speech
        tokenizer from this decoder's directory or Hub repo, else from the CosyVoice3 repository (fetched on first use,
        not before). Assign another frontend to override."""
        if self._voice_frontend is None:
            from ..voice.frontend import VoiceFrontend

            config = self.config
            self._voice_frontend = VoiceFrontend.from_source(
                self.name_or_path or None,
                sampling_rate=config.sampling_rate,
                mel_bins=config.mel_bins,
                hop_length=config.samples_per_frame,
            )
        return self._voice_frontend

    @voice_frontend.setter
    def voice_frontend(self, frontend) -> None:
        self._voice_frontend = frontend

    def clone_voice(
        self, audio: Any, name: str | None = None, trim: bool = False, sampling_rate: int | None = None
    ) -> FunAudioChatVoice:
        """Clone a voice from a reference clip (a path, URL, bytes, array, `(array, rate)`, dict or `datasets` audio;
        a bare array is at `sampling_rate`, default 16 kHz), as CosyVoice3's zero-shot frontend does: CAM++ speaker
        vector, v3 speech codes and the decoder's mel of the clip, aligned. The clip must last 1 to 30 s (`trim=True`
        uses the first 30 s of a longer one), hold speech and no NaN. Needs `pip install "transformers-fac[voice]"`.

        ```python
        >>> voice = token2wav.clone_voice("me.wav", name="me")  # doctest: +SKIP
        >>> voice.save("voices/me")  # later: voice="voices/me"  # doctest: +SKIP
        ```
        """
        return self.voice_frontend.clone(audio, name=name, sampling_rate=sampling_rate, trim=trim)

    def speaker_similarity(self, audio: Any, reference: Any, sampling_rate: int | None = None) -> float:
        """Cosine similarity of the CAM++ speaker vectors of `audio` (e.g. a reply: `sampling_rate=24000` for a bare
        array) and `reference` (a clip, a [`FunAudioChatVoice`] or a vector); 1 = same direction."""
        return self.voice_frontend.similarity(audio, reference, sampling_rate=sampling_rate)

    # ----------------------------------------------------------------------------------------------- input checks
    def filter_codes(self, codes: CodesLike) -> torch.Tensor:
        """Codes (list, [N] or [1, N]) -> LongTensor [1, M] without the ids >= vocab_size (BOS/EOS/pad).
        Raises on negative ids, non-integers or a batch of several sequences; may return an empty [1, 0]."""
        codes = self._as_code_tensor(codes)
        if (codes < 0).any():
            raise ValueError(f"Speech codes must be >= 0, got {int(codes.min())}.")
        return codes[codes < self.config.vocab_size].view(1, -1)

    def _as_code_tensor(self, codes: CodesLike) -> torch.Tensor:
        if not isinstance(codes, torch.Tensor):
            codes = torch.tensor(list(codes), dtype=torch.long)
        if codes.is_floating_point() or codes.is_complex() or codes.dtype == torch.bool:
            raise ValueError(f"Speech codes must be integers, got {codes.dtype}.")
        if codes.dim() == 2 and codes.shape[0] == 1:
            codes = codes[0]
        if codes.dim() != 1:
            raise ValueError(f"Speech codes must be a list, [N] or [1, N] (batch size 1), got {tuple(codes.shape)}.")
        return codes.long().cpu()

    def _check_codes(self, codes: torch.Tensor, minimum: int = 1) -> torch.Tensor:
        codes = self._as_code_tensor(codes)
        if codes.numel() < minimum:
            raise ValueError(f"Need at least {minimum} speech code(s), got {codes.numel()}.")
        bad = (codes < 0) | (codes >= self.config.vocab_size)
        if bad.any():
            raise ValueError(
                f"Speech codes must be in [0, {self.config.vocab_size}), got {int(codes[bad][0])}; "
                "use decode() (or filter_codes()) to drop BOS/EOS/pad ids."
            )
        return codes.view(1, -1).to(self.device)

    # ----------------------------------------------------------------------------------------------- building blocks
    @torch.no_grad()
    def token2mel(
        self,
        codes: torch.Tensor,
        voice: VoiceLike = None,
        finalize: bool = True,
        chunk_causal: bool = False,
        frame_offset: int = 0,
    ) -> torch.Tensor:
        """Flow: codes [1, N] (ids in [0, 6561)) + a voice (see `resolve_voice`) -> mel [1, 80, 2N], float32.

        `finalize=False` treats the last 3 codes as look-ahead only (mel [1, 80, 2(N - 3)]); `chunk_causal=True` uses
        the 50-frame chunk-causal attention mask instead of full attention (the chunk grid starts at the prompt's first
        frame). A voice's prompt (L codes, 2L mel frames) is prepended as in CosyVoice3's zero-shot path; its frames are
        not returned. The prompt's frames take columns 0..2L-1 of the fixed noise, frame k of the codes column
        `2L + frame_offset + k` (`frame_offset` 0 as in the reference).
        """
        look_ahead = self.flow.look_ahead
        codes = self._check_codes(codes, minimum=1 if finalize else look_ahead + 1)
        voice = self.resolve_voice(voice)
        frames = self.config.token_mel_ratio * (codes.shape[1] - (0 if finalize else look_ahead))
        noise = self.flow_noise(voice, frame_offset, frames)
        prompt = (
            (voice.prompt_codes.to(self.device), voice.prompt_mel.to(self.device))
            if voice.has_prompt
            else (None, None)
        )
        embedding = voice.speaker_embedding.to(self.device)
        return self.flow(codes, embedding, noise, finalize, chunk_causal, *prompt)

    def flow_noise(self, voice: FunAudioChatVoice, frame_offset: int, frames: int) -> torch.Tensor:
        """The fixed noise of a flow call: the prompt's 2L frames (columns 0..2L-1), then `frames` columns from
        `2L + frame_offset`: [1, 80, 2L + frames]."""
        prompt_frames = voice.prompt_mel.shape[1]
        noise = self.noise.flow(prompt_frames + frame_offset, frames, device=self.device)
        if not prompt_frames:
            return noise
        return torch.cat([self.noise.flow(0, prompt_frames, device=self.device), noise], dim=-1)

    @torch.no_grad()
    def mel2wav(self, mel: torch.Tensor, finalize: bool = True) -> torch.Tensor:
        """Vocoder: mel [1, 80, T] -> wav [1, 480 T] (24 kHz); `finalize=False` holds back the last 8 frames
        (wav [1, 480 (T - 8)]) that need look-ahead."""
        wav, _ = self._vocode(mel, finalize)
        return wav

    @torch.no_grad()
    def predict_f0(self, mel: torch.Tensor, finalize: bool = True) -> torch.Tensor:
        """The vocoder's f0 (Hz) per mel frame: [1, T] (or [1, T - 3] when not finalising)."""
        return self.hift.predict_f0(self._check_mel(mel, finalize), finalize=finalize)

    def _check_mel(self, mel: torch.Tensor, finalize: bool) -> torch.Tensor:
        bins = self.config.mel_bins
        if not isinstance(mel, torch.Tensor) or mel.dim() != 3 or mel.shape[0] != 1 or mel.shape[1] != bins:
            shape = tuple(mel.shape) if isinstance(mel, torch.Tensor) else type(mel).__name__
            raise ValueError(f"mel must be [1, {bins}, T], got {shape}.")
        minimum = 1 if finalize else self.hift.holdback_frames + 1
        if mel.shape[-1] < minimum:
            raise ValueError(f"mel needs at least {minimum} frame(s) (finalize={finalize}), got {mel.shape[-1]}.")
        return mel.to(self.device)

    def _vocode(self, mel: torch.Tensor, finalize: bool) -> tuple[torch.Tensor, torch.Tensor]:
        mel = self._check_mel(mel, finalize)
        noise = self.noise.source(0, mel.shape[-1] * self.config.samples_per_frame, device=self.device)
        return self.hift(mel, noise, finalize=finalize)

    # ----------------------------------------------------------------------------------------------- offline
    def segments(self, num_codes: int) -> list[tuple[int, int]]:
        """The official offline split: 30 s pieces (750 codes); if there are several and the last one is shorter than
        2 s (50 codes), the last two are merged and cut into two halves. Returns (start, end) pairs."""
        size, tail = self.config.segment_codes, self.config.min_tail_codes
        bounds = [(start, min(start + size, num_codes)) for start in range(0, num_codes, size)]
        if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < tail:
            start, end = bounds[-2][0], bounds[-1][1]
            middle = start + (end - start) // 2
            bounds[-2:] = [(start, middle), (middle, end)]
        return bounds

    @torch.no_grad()
    def decode(
        self,
        codes: CodesLike,
        voice: VoiceLike = None,
        progress: bool = False,
    ) -> torch.Tensor:
        """Speech codes -> 24 kHz waveform [1, 960 N], exactly as Fun-Audio-Chat's offline detokenizer: ids >= 6561
        are dropped, the codes are cut into 30 s segments (see `segments`), each decoded fully (finalize=True, full
        attention) and the pieces are concatenated without cross-fade.

        `voice` is a voice name (`"中文女"` (default) or `"中文男"`, from the official speaker file), a speaker
        embedding [192] / [1, 192], a [`FunAudioChatVoice`] or a saved voice's path (each segment is conditioned on the voice's
        prompt). `progress=True` shows a progress bar over the segments.
        """
        valid = self.filter_codes(codes)
        if valid.numel() == 0:
            raise ValueError("No speech codes to decode (empty input, or only BOS/EOS/pad ids).")
        voice = self.resolve_voice(voice)
        bounds = self.segments(valid.shape[1])
        if progress:
            from tqdm.auto import tqdm

            bounds = tqdm(bounds, desc="token2wav", unit="segment")
        pieces = [self.mel2wav(self.token2mel(valid[:, start:end], voice)) for start, end in bounds]
        return torch.cat(pieces, dim=1)

    def forward(self, codes: torch.Tensor, voice: VoiceLike = None) -> FunAudioChatToken2WavOutput:
        """Same as [`~FunAudioChatToken2Wav.decode`], wrapped in a [`FunAudioChatToken2WavOutput`]."""
        return FunAudioChatToken2WavOutput(waveform=self.decode(codes, voice=voice))

    # ----------------------------------------------------------------------------------------------- streaming
    def stream_decoder(self, voice: VoiceLike = None, exact: bool = False):
        """A streaming decoder with `push(codes) -> wav chunk` and `finish() -> last chunk`.

        `exact=True` reproduces Fun-Audio-Chat's web-demo pattern (every 15 codes + 3 look-ahead, the flow re-run on all
        codes so far, the vocoder over the whole mel history); the default keeps the cost per chunk bounded (flow over
        the last `stream_flow_context_codes` codes, vocoder over a short window with carried f0 phase).
        Both emit audio as soon as 18 codes are available and never depend on how the codes are split across pushes.
        With a voice prompt, the exact mode re-runs the flow on prompt + all codes; the bounded mode samples the prompt
        once per stream and reuses its keys and values (see `transformers_fac.token2wav.streaming`).
        """
        from .streaming import BoundedStreamDecoder, ExactStreamDecoder

        return (ExactStreamDecoder if exact else BoundedStreamDecoder)(self, self.resolve_voice(voice))

    def stream_batch(self):
        """Streams of many replies decoded together ([`~stream_batch.StreamBatch`]: `open(key, voice)`,
        `push(key, codes)`, `due()`, `step(keys)`, `finish(keys)`, `drop(key)`): the bounded streams' steps of all
        replies run as one flow call and one vocoder call per group of equal shapes (`due()` tells each due step's
        shape, so that a caller can choose which streams to decode first).

        Example:

        ```python
        >>> streams = model.token2wav.stream_batch()
        >>> streams.open("a", "中文女"); streams.open("b", "中文男")
        >>> streams.push("a", codes_a); streams.push("b", codes_b)
        >>> audio = streams.step()  # {"a": samples, "b": samples} as far as each could decode
        ```
        """
        from .stream_batch import StreamBatch

        return StreamBatch(self)


__all__ = ["FunAudioChatToken2Wav", "FunAudioChatToken2WavOutput"]
