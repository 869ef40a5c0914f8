"""Configuration of the CosyVoice3 token-to-waveform decoder (flow-matching DiT + causal HiFT vocoder)."""

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

IntList = list[int] | tuple[int, ...]
IntListList = list[list[int]] | tuple[tuple[int, ...], ...] | list[tuple[int, ...]] | tuple[list[int], ...]


@strict(accept_kwargs=True)
class FunAudioChatToken2WavConfig(PreTrainedConfig):
    r"""
    Configuration of [`FunAudioChatToken2Wav`], the decoder that turns Fun-Audio-Chat's 25 Hz speech codes into 24 kHz
    audio with the flow-matching DiT and the causal HiFT vocoder of `FunAudioLLM/Fun-CosyVoice3-0.5B-2512`. The defaults
    are the sizes of that release.

    Args:
        vocab_size: speech codes (6561 = 3^8); larger ids (BOS/EOS/pad) are dropped before decoding.
        token_embedding_dim: width of the code embedding (the flow's `input_size`).
        mel_bins: mel channels produced by the flow and read by the vocoder.
        speaker_embedding_dim: size of the CAM++ x-vector given as speaker.
        token_mel_ratio: mel frames (50 Hz) per speech code (25 Hz).
        pre_lookahead_len / pre_lookahead_channels: look-ahead codes and hidden width of the pre-look-ahead layer.
        dit_dim / dit_depth / dit_heads / dit_head_dim / dit_ff_mult: sizes of the DiT estimator.
        dit_mu_dim / dit_speaker_dim: widths of the code condition and of the projected speaker vector.
        dit_time_embed_dim: sinusoidal width of the time embedding.
        dit_conv_pos_kernel_size / dit_conv_pos_groups: the causal convolutional position embedding.
        rope_theta: rotary base (rotary covers `dit_head_dim` channels, i.e. only the first head).
        static_chunk_size: frames per chunk of the chunk-causal attention mask (`chunk_causal=True`).
        n_timesteps / t_scheduler / inference_cfg_rate: Euler steps, time grid and classifier-free guidance.
        flow_noise_frames / noise_seed: the fixed flow noise is `randn(1, mel_bins, flow_noise_frames)` drawn by a CPU
            generator seeded with `noise_seed` (the source noise uses the same seed).
        sampling_rate: output sample rate.
        hift_base_channels: width of the vocoder after `conv_pre` (halved at each up-sampling stage).
        nb_harmonics / nsf_alpha / nsf_sigma / nsf_voiced_threshold: the harmonic (neural source filter) source.
        upsample_rates / upsample_kernel_sizes: nearest up-sampling factors and causal conv kernels of the vocoder.
        istft_n_fft / istft_hop_length: the final inverse STFT.
        resblock_kernel_sizes / resblock_dilation_sizes: residual blocks after each up-sampling stage.
        source_resblock_kernel_sizes / source_resblock_dilation_sizes: residual blocks of the source branches.
        lrelu_slope: leaky-ReLU slope inside the up-sampling loop.
        audio_limit: output clamp.
        conv_pre_look_right: mel frames of right context read by `conv_pre`.
        f0_cond_channels: width of the f0 predictor.
        segment_codes / min_tail_codes: offline segmentation (30 s pieces; a shorter tail is merged and split).
        stream_hop_codes: codes emitted per streaming step.
        stream_flow_context_codes: past codes re-run by the flow in the bounded streaming mode.
        stream_hift_context_frames: past mel frames re-run by the vocoder in the bounded streaming mode (default: the
            vocoder's receptive field + 8, i.e. 39 for the release).
        initializer_range: std of the random initialisation.

    Example:

    ```python
    >>> from transformers_fac import FunAudioChatToken2WavConfig
    >>> config = FunAudioChatToken2WavConfig()
    >>> config.samples_per_code
    960
    ```
    """

    model_type = "funaudiochat_token2wav"

    vocab_size: int = 6561
    token_embedding_dim: int = 80
    mel_bins: int = 80
    speaker_embedding_dim: int = 192
    token_mel_ratio: int = 2
    pre_lookahead_len: int = 3
    pre_lookahead_channels: int = 1024
    dit_dim: int = 1024
    dit_depth: int = 22
    dit_heads: int = 16
    dit_head_dim: int = 64
    dit_ff_mult: int | float = 2
    dit_mu_dim: int = 80
    dit_speaker_dim: int = 80
    dit_time_embed_dim: int = 256
    dit_conv_pos_kernel_size: int = 31
    dit_conv_pos_groups: int = 16
    rope_theta: float | int = 10000.0
    static_chunk_size: int = 50
    n_timesteps: int = 10
    t_scheduler: str = "cosine"
    inference_cfg_rate: float | int = 0.7
    flow_noise_frames: int = 15000
    noise_seed: int = 0
    sampling_rate: int = 24000
    hift_base_channels: int = 512
    nb_harmonics: int = 8
    nsf_alpha: float | int = 0.1
    nsf_sigma: float | int = 0.003
    nsf_voiced_threshold: float | int = 10.0
    upsample_rates: IntList = (8, 5, 3)
    upsample_kernel_sizes: IntList = (16, 11, 7)
    istft_n_fft: int = 16
    istft_hop_length: int = 4
    resblock_kernel_sizes: IntList = (3, 7, 11)
    resblock_dilation_sizes: IntListList = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    source_resblock_kernel_sizes: IntList = (7, 7, 11)
    source_resblock_dilation_sizes: IntListList = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    lrelu_slope: float | int = 0.1
    audio_limit: float | int = 0.99
    conv_pre_look_right: int = 4
    f0_cond_channels: int = 512
    segment_codes: int = 750
    min_tail_codes: int = 50
    stream_hop_codes: int = 15
    stream_flow_context_codes: int = 60
    stream_hift_context_frames: int | None = None
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        for name in (
            "upsample_rates",
            "upsample_kernel_sizes",
            "resblock_kernel_sizes",
            "source_resblock_kernel_sizes",
        ):
            setattr(self, name, [int(v) for v in getattr(self, name)])
        for name in ("resblock_dilation_sizes", "source_resblock_dilation_sizes"):
            setattr(self, name, [[int(d) for d in ds] for ds in getattr(self, name)])
        if self.stream_hift_context_frames is None:
            self.stream_hift_context_frames = self.hift_receptive_field_frames + 8
        super().__post_init__(**kwargs)
        self.validate_architecture()

    def validate_architecture(self):
        """Raises a `ValueError` naming the inconsistent values."""
        if self.dit_dim % self.dit_conv_pos_groups != 0:
            raise ValueError(
                f"dit_dim ({self.dit_dim}) must be divisible by dit_conv_pos_groups ({self.dit_conv_pos_groups})."
            )
        if self.dit_head_dim < 2 or self.dit_head_dim % 2 != 0:
            raise ValueError(f"dit_head_dim must be even and positive, got {self.dit_head_dim}.")
        if self.dit_mu_dim != self.token_embedding_dim:
            raise ValueError(
                f"dit_mu_dim ({self.dit_mu_dim}) must equal token_embedding_dim ({self.token_embedding_dim}): the DiT "
                "reads the pre-look-ahead output as its condition."
            )
        if self.dit_conv_pos_kernel_size % 2 == 0:
            raise ValueError(f"dit_conv_pos_kernel_size must be odd, got {self.dit_conv_pos_kernel_size}.")
        if len(self.upsample_rates) != len(self.upsample_kernel_sizes):
            raise ValueError("upsample_rates and upsample_kernel_sizes must have the same length.")
        if len(self.source_resblock_kernel_sizes) != len(self.upsample_rates):
            raise ValueError("source_resblock_kernel_sizes needs one entry per up-sampling stage.")
        if len(self.resblock_kernel_sizes) != len(self.resblock_dilation_sizes):
            raise ValueError("resblock_kernel_sizes and resblock_dilation_sizes must have the same length.")
        if len(self.source_resblock_kernel_sizes) != len(self.source_resblock_dilation_sizes):
            raise ValueError("source_resblock_kernel_sizes and source_resblock_dilation_sizes must match in length.")
        if self.hift_base_channels % (2 ** len(self.upsample_rates)) != 0:
            raise ValueError(
                f"hift_base_channels ({self.hift_base_channels}) must be divisible by 2**{len(self.upsample_rates)}."
            )
        if self.t_scheduler not in ("cosine", "linear"):
            raise ValueError(f"t_scheduler must be 'cosine' or 'linear', got {self.t_scheduler!r}.")
        if self.min_tail_codes > self.segment_codes or self.segment_codes < 1:
            raise ValueError("segment_codes must be >= 1 and >= min_tail_codes.")
        if (
            self.stream_hop_codes * self.token_mel_ratio <= self.hift_holdback_frames
            or self.stream_flow_context_codes < 0
        ):
            raise ValueError(
                f"stream_hop_codes must give more than {self.hift_holdback_frames} mel frames per step and "
                "stream_flow_context_codes must be >= 0."
            )
        if self.stream_hift_context_frames < self.hift_receptive_field_frames:
            raise ValueError(
                f"stream_hift_context_frames ({self.stream_hift_context_frames}) must cover the vocoder's receptive "
                f"field ({self.hift_receptive_field_frames} frames)."
            )

    @property
    def samples_per_frame(self) -> int:
        """Output samples per mel frame (480 at 24 kHz)."""
        hop = self.istft_hop_length
        for rate in self.upsample_rates:
            hop *= rate
        return hop

    @property
    def samples_per_code(self) -> int:
        """Output samples per speech code (960 at 24 kHz)."""
        return self.samples_per_frame * self.token_mel_ratio

    @property
    def hift_holdback_frames(self) -> int:
        """Mel frames the vocoder holds back when not finalising (f0 look-ahead + conv_pre look-ahead + 1)."""
        return 3 + self.conv_pre_look_right + 1

    @property
    def hift_receptive_field_frames(self) -> int:
        """Mel frames of past context the vocoder's causal convolutions can see (an upper bound, rounded up).

        The longest path enters through the source branch of the first stage: down-sampling conv + source resblock,
        then every later resblock and up-sampling conv. (The f0 predictor's own context is handled separately.)
        """

        def resblock(kernel: int, dilations: list[int]) -> int:
            return sum((kernel - 1) * d + (kernel - 1) for d in dilations)

        rates, rate = [], 1
        for up in self.upsample_rates:
            rate *= up
            rates.append(rate)
        main = [
            max(resblock(k, d) for k, d in zip(self.resblock_kernel_sizes, self.resblock_dilation_sizes)) / r
            for r in rates
        ]
        ups = [(k - 1) / r for k, r in zip(self.upsample_kernel_sizes, rates)]
        # source branch i: a strided conv over 2 * (STFT frames per stage-i step), then a resblock at rate r
        source = [
            resblock(k, d) / r + 2 / r
            for k, d, r in zip(self.source_resblock_kernel_sizes, self.source_resblock_dilation_sizes, rates)
        ]
        tail = 1.0  # conv_post, reflection pad and the iSTFT window: well under one frame
        via_mel = sum(ups) + sum(main) + tail
        via_source = max(source[i] + sum(main[i:]) + sum(ups[i + 1 :]) + tail for i in range(len(rates)))
        return int(max(via_mel, via_source)) + 2


__all__ = ["FunAudioChatToken2WavConfig"]
