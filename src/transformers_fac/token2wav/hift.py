"""Causal HiFT vocoder of CosyVoice3: mel (50 Hz) -> f0 -> harmonic source -> iSTFTNet decoder -> 24 kHz waveform.

Module and parameter names follow the reference `CausalHiFTGenerator`, so that `hift.pt` loads strictly (weight norm as
`torch.nn.utils.parametrizations.weight_norm`, i.e. `<conv>.parametrizations.weight.original0/1`).
"""

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from .configuration_token2wav import FunAudioChatToken2WavConfig


class CausalConv1d(nn.Conv1d):
    """Stride-1 conv padded with `(kernel - 1) * dilation` zeros on the left (causal) or on the right (look-ahead).

    With `look_ahead=True` and `finalize=False` the input's own last frames serve as the right context (no padding),
    so the output is `kernel - 1` frames shorter than the input.
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, dilation: int = 1, look_ahead: bool = False
    ):
        super().__init__(in_channels, out_channels, kernel_size, dilation=dilation)
        self.look_ahead = look_ahead
        self.pad = (kernel_size - 1) * dilation

    def forward(self, x: torch.Tensor, finalize: bool = True) -> torch.Tensor:
        if self.look_ahead:
            if finalize:
                x = F.pad(x, (0, self.pad))
        else:
            x = F.pad(x, (self.pad, 0))
        return self._conv_forward(x, self.weight, self.bias)


class CausalUpsampleConv1d(nn.Conv1d):
    """Nearest up-sampling by `rate`, then a causal conv (not a transposed conv)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, rate: int):
        super().__init__(in_channels, out_channels, kernel_size)
        self.rate = rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x.repeat_interleave(self.rate, dim=-1), (self.kernel_size[0] - 1, 0))
        return self._conv_forward(x, self.weight, self.bias)


class CausalDownsampleConv1d(nn.Conv1d):
    """Strided conv (kernel `2 * stride`) with `stride - 1` zeros of left padding."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__(in_channels, out_channels, 2 * stride, stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(F.pad(x, (self.stride[0] - 1, 0)), self.weight, self.bias)


class Snake(nn.Module):
    """Snake activation `x + sin(alpha * x)^2 / (alpha + 1e-9)` with a per-channel linear-scale `alpha`."""

    def __init__(self, channels: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        alpha = self.alpha[None, :, None]
        return x + (1.0 / (alpha + 1e-9)) * torch.sin(x * alpha).pow(2)


class ResBlock(nn.Module):
    """Causal residual block: for each dilation, Snake -> dilated conv -> Snake -> conv, added to the input."""

    def __init__(self, channels: int, kernel_size: int, dilations: list[int]):
        super().__init__()
        self.convs1 = nn.ModuleList(
            weight_norm(CausalConv1d(channels, channels, kernel_size, dilation=d)) for d in dilations
        )
        self.convs2 = nn.ModuleList(weight_norm(CausalConv1d(channels, channels, kernel_size)) for _ in dilations)
        self.activations1 = nn.ModuleList(Snake(channels) for _ in dilations)
        self.activations2 = nn.ModuleList(Snake(channels) for _ in dilations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for act1, conv1, act2, conv2 in zip(self.activations1, self.convs1, self.activations2, self.convs2):
            x = conv2(act2(conv1(act1(x)))) + x
        return x


class Float32Module(nn.Module):
    """A module whose floating-point parameters stay float32 whatever `.to(dtype)` the parent model receives."""

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        for tensor in list(self.parameters()) + list(self.buffers()):
            if tensor.is_floating_point() and tensor.dtype != torch.float32:
                tensor.data = tensor.data.float()
        return self


class CausalConvF0Predictor(Float32Module):
    """Mel -> f0 in Hz: a right-looking conv (3 frames of look-ahead), four causal convs with ELU, a linear, `abs`.

    Always float32 (the voiced/unvoiced threshold and the cumulative phase amplify any error), with TF32 disabled.
    """

    def __init__(self, in_channels: int, cond_channels: int):
        super().__init__()
        layers: list[nn.Module] = [weight_norm(CausalConv1d(in_channels, cond_channels, 4, look_ahead=True)), nn.ELU()]
        for _ in range(4):
            layers += [weight_norm(CausalConv1d(cond_channels, cond_channels, 3)), nn.ELU()]
        self.condnet = nn.Sequential(*layers)
        self.classifier = nn.Linear(cond_channels, 1)

    @property
    def look_ahead(self) -> int:
        return self.condnet[0].pad

    def forward(self, mel: torch.Tensor, finalize: bool = True) -> torch.Tensor:
        """mel [1, C, T] -> f0 [1, T] (finalize=True) or [1, T - 3] (the last 3 frames are look-ahead only)."""
        with torch.backends.cudnn.flags(enabled=True, benchmark=False, deterministic=False, allow_tf32=False):
            x = self.condnet[0](mel.float(), finalize=finalize)
            for layer in self.condnet[1:]:
                x = layer(x)
            return self.classifier(x.transpose(1, 2)).squeeze(-1).abs()


class HarmonicSource(Float32Module):
    """Neural-source-filter excitation: sines at f0 and its harmonics (phase constant within each mel frame, as in the
    causal reference), fixed uniform noise, merged by `l_linear` + tanh."""

    def __init__(self, config: FunAudioChatToken2WavConfig):
        super().__init__()
        self.harmonics = config.nb_harmonics + 1
        self.sampling_rate = config.sampling_rate
        self.sine_amp = config.nsf_alpha
        self.noise_std = config.nsf_sigma
        self.voiced_threshold = config.nsf_voiced_threshold
        self.samples_per_frame = config.samples_per_frame
        self.l_linear = nn.Linear(self.harmonics, 1)

    def cycles(self, f0: torch.Tensor) -> torch.Tensor:
        """Per-frame phase increment in cycles for each harmonic, [1, F, H], float32 as the reference computes it."""
        multiples = torch.arange(1, self.harmonics + 1, device=f0.device, dtype=torch.float32)
        return (f0.float()[..., None] * multiples) / self.sampling_rate % 1

    def phase(self, accumulated: torch.Tensor) -> torch.Tensor:
        """Accumulated cycles [1, F, H] (the running sum of `cycles`) -> phase in radians, with the reference's float32
        rounding (its cumulative sum is float32, then scaled by 2 pi and by the samples per frame)."""
        return accumulated.float() * 2 * math.pi * self.samples_per_frame

    def reference_phase(self, f0: torch.Tensor) -> torch.Tensor:
        """Phase (radians) of every frame, accumulated from frame 0 exactly as the reference does."""
        return self.phase(torch.cumsum(self.cycles(f0), dim=1))

    def forward(self, f0: torch.Tensor, noise: torch.Tensor, phase: torch.Tensor | None = None) -> torch.Tensor:
        """f0 [1, F] (Hz), noise [1, F * 480, H] uniform, optional phase [1, F, H] -> source [1, 1, F * 480]."""
        phase = self.reference_phase(f0) if phase is None else phase.float()
        step = self.samples_per_frame
        uv = (f0.float() > self.voiced_threshold).float()[..., None]  # [1, F, 1]
        sines = torch.sin(phase) * self.sine_amp * uv
        noise_amp = uv * self.noise_std + (1 - uv) * self.sine_amp / 3
        waves = sines.repeat_interleave(step, dim=1) + noise_amp.repeat_interleave(step, dim=1) * noise.float()
        return torch.tanh(self.l_linear(waves)).transpose(1, 2)


class CausalHiFTGenerator(nn.Module):
    """The causal HiFT vocoder. `forward(mel, noise, finalize)` is the reference `inference`; its pieces
    (`predict_f0`, `source`, `decode`) are public so that streaming can re-use exact f0 and phase."""

    def __init__(self, config: FunAudioChatToken2WavConfig):
        super().__init__()
        self.config = config
        self.n_fft = config.istft_n_fft
        self.hop = config.istft_hop_length
        self.lrelu_slope = config.lrelu_slope
        self.audio_limit = config.audio_limit
        self.samples_per_frame = config.samples_per_frame
        self.look_right = config.conv_pre_look_right
        base = config.hift_base_channels
        stft_channels = config.istft_n_fft + 2

        self.m_source = HarmonicSource(config)
        self.conv_pre = weight_norm(
            CausalConv1d(config.mel_bins, base, config.conv_pre_look_right + 1, look_ahead=True)
        )
        self.ups = nn.ModuleList(
            weight_norm(CausalUpsampleConv1d(base // 2**i, base // 2 ** (i + 1), k, u))
            for i, (u, k) in enumerate(zip(config.upsample_rates, config.upsample_kernel_sizes))
        )
        # source branch i meets the main branch after up-sampling stage i: down-sample the source STFT to that rate
        stages = len(config.upsample_rates)
        self.source_downs = nn.ModuleList()
        self.source_resblocks = nn.ModuleList()
        for i in range(stages):
            channels = base // 2 ** (i + 1)
            stride = math.prod(config.upsample_rates[i + 1 :])
            if stride == 1:
                self.source_downs.append(CausalConv1d(stft_channels, channels, 1))
            else:
                self.source_downs.append(CausalDownsampleConv1d(stft_channels, channels, stride))
            self.source_resblocks.append(
                ResBlock(channels, config.source_resblock_kernel_sizes[i], config.source_resblock_dilation_sizes[i])
            )
        self.resblocks = nn.ModuleList(
            ResBlock(base // 2 ** (i + 1), k, d)
            for i in range(stages)
            for k, d in zip(config.resblock_kernel_sizes, config.resblock_dilation_sizes)
        )
        self.conv_post = weight_norm(CausalConv1d(base // 2**stages, stft_channels, 7))
        self.f0_predictor = CausalConvF0Predictor(config.mel_bins, config.f0_cond_channels)

    @property
    def holdback_frames(self) -> int:
        """Mel frames not yet turned into audio when `finalize=False`."""
        return self.f0_predictor.look_ahead + self.look_right + 1

    def _window(self, device: torch.device) -> torch.Tensor:
        # float64 then float32: the same values as scipy's periodic Hann window used by the reference
        return torch.hann_window(self.n_fft, periodic=True, dtype=torch.float64, device=device).float()

    def predict_f0(self, mel: torch.Tensor, finalize: bool = True) -> torch.Tensor:
        """mel [1, C, T] -> f0 [1, T] Hz (or [1, T - 3] when `finalize=False`), float32."""
        return self.f0_predictor(mel, finalize=finalize)

    def source(self, f0: torch.Tensor, noise: torch.Tensor, phase: torch.Tensor | None = None) -> torch.Tensor:
        """Harmonic excitation [1, 1, 480 * F] for f0 [1, F]; `phase` [1, F, H] (radians) overrides the phase
        accumulated from frame 0."""
        return self.m_source(f0, noise, phase)

    def decode(self, mel: torch.Tensor, source: torch.Tensor, finalize: bool = True) -> torch.Tensor:
        """mel [1, C, T] + source [1, 1, 480 * T] -> wav [1, 480 * T]; with `finalize=False` the last
        `conv_pre_look_right` frames are look-ahead and one more frame is held back (wav [1, 480 * (T - 5)])."""
        window = self._window(source.device)
        spec = torch.view_as_real(
            torch.stft(source.float().squeeze(1), self.n_fft, self.hop, self.n_fft, window=window, return_complex=True)
        )
        real, imag = spec[..., 0], spec[..., 1]
        dtype = self.conv_pre.bias.dtype
        x = self.conv_pre(mel.to(dtype), finalize=finalize)
        if not finalize:
            trim = self.samples_per_frame // self.hop * self.look_right
            real, imag = real[..., :-trim], imag[..., :-trim]
        s_stft = torch.cat([real, imag], dim=1).to(dtype)

        kernels = len(self.config.resblock_kernel_sizes)
        for i, up in enumerate(self.ups):
            x = up(F.leaky_relu(x, self.lrelu_slope))
            if i == len(self.ups) - 1:
                x = F.pad(x, (1, 0), mode="reflect")
            x = x + self.source_resblocks[i](self.source_downs[i](s_stft))
            xs = self.resblocks[i * kernels](x)
            for j in range(1, kernels):
                xs = xs + self.resblocks[i * kernels + j](x)
            x = xs / kernels
        x = self.conv_post(F.leaky_relu(x)).float()

        bins = self.n_fft // 2 + 1
        magnitude = torch.exp(x[:, :bins]).clip(max=1e2)
        phase = torch.sin(x[:, bins:])
        spec = torch.complex(magnitude * torch.cos(phase), magnitude * torch.sin(phase))
        wav = torch.istft(spec, self.n_fft, self.hop, self.n_fft, window=window)
        if not finalize:
            wav = wav[:, : -self.samples_per_frame]
        return wav.clamp(-self.audio_limit, self.audio_limit)

    def forward(
        self, mel: torch.Tensor, noise: torch.Tensor, finalize: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The reference `inference`: mel [1, C, T] -> (wav [1, 480 * T], f0); with `finalize=False` the last 8
        frames are held back (wav [1, 480 * (T - 8)]). `noise` must cover at least 480 * T samples."""
        f0 = self.predict_f0(mel, finalize=finalize)
        source = self.source(f0, noise[:, : f0.shape[1] * self.samples_per_frame])
        if not finalize:
            mel = mel[..., : f0.shape[1]]
        return self.decode(mel, source, finalize=finalize), f0
