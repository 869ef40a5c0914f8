"""Configurations of Fun-Audio-Chat: the audio towers + speech head, and the whole model.

Both classes load the official `config.json` of `FunAudioLLM/Fun-Audio-Chat-8B` unchanged (same `model_type`s and
keys); their defaults are the values of that checkpoint.
"""

from typing import Any

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

# The speech head is a Qwen3-0.6B-shaped transformer (values of the released checkpoint).
DEFAULT_SPEECH_HEAD_CONFIG: dict[str, Any] = {
    "model_type": "qwen3",
    "architectures": ["Qwen3ForCausalLM"],
    "hidden_size": 1024,
    "intermediate_size": 3072,
    "num_hidden_layers": 28,
    "num_attention_heads": 16,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "hidden_act": "silu",
    "rms_norm_eps": 1e-6,
    "rope_theta": 1000000.0,
    "rope_scaling": None,
    "max_position_embeddings": 32768,
    "attention_bias": False,
    "attention_dropout": 0.0,
    "sliding_window": None,
    "use_sliding_window": False,
    "max_window_layers": 28,
    "tie_word_embeddings": True,
    "vocab_size": 151936,
    "bos_token_id": 151643,
    "eos_token_id": 151643,
    "use_cache": True,
}

# The 8B LLM: a dense Qwen3 initialised from Qwen3-VL-8B, plus the three speech special-token ids.
DEFAULT_TEXT_CONFIG: dict[str, Any] = {
    "hidden_size": 4096,
    "intermediate_size": 12288,
    "num_hidden_layers": 36,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "hidden_act": "silu",
    "rms_norm_eps": 1e-6,
    "rope_theta": 5000000.0,
    "max_position_embeddings": 262144,
    "vocab_size": 151936,
    "tie_word_embeddings": False,
    "attention_bias": False,
    "use_sliding_window": False,
    "max_window_layers": 28,
    "bos_token_id": 151643,
    "eos_token_id": 151643,
    "audio_bos_index": 151670,
    "audio_eos_index": 151671,
    "sil_index": 151673,
}


@strict(accept_kwargs=True)
class FunAudioChatAudioEncoderConfig(PreTrainedConfig):
    r"""
    Configuration of the Fun-Audio-Chat audio side: the continuous Whisper-style encoder (`continuous_audio_tower`),
    the discrete grouping encoder over 25 Hz speech codes (`audio_tower`) and the 25 Hz speech head
    (`audio_invert_tower`, whose transformer is described by the `crq_transformer_config` dict).

    Args:
        num_mel_bins: log-mel bins of the input features.
        encoder_layers / encoder_attention_heads / encoder_ffn_dim / d_model: sizes of the continuous encoder.
        n_window: half of the attention window in mel frames (each window covers `2 * n_window` frames = 2 s).
        max_source_positions: rows of the sinusoid table; also the most 5 Hz positions one audio may fill.
        output_dim: width of the encoder outputs and of the speech head input; must equal the LLM hidden size.
        codebook_size: speech vocabulary (6561 CosyVoice3 codes + 4 specials).
        bos_token_id / eos_token_id / pad_token_id: speech BOS, EOS and padding ids.
        group_size: 25 Hz frames per LLM position (5 → the LLM runs at 5 Hz).
        continuous_features_mode: `"replace"` (the checkpoint) or `"add"`.
        enable_audio_invert_tower: build the speech head (False gives a speech-to-text-only model).
        crq_transformer_config: a plain dict (`model_type` "qwen3") describing the speech head transformer.

    Example:

    ```python
    >>> from transformers_fac import FunAudioChatAudioEncoderConfig
    >>> config = FunAudioChatAudioEncoderConfig(d_model=64, encoder_layers=2, encoder_attention_heads=4)
    >>> config.speech_head_config().model_type
    'qwen3'
    ```
    """

    model_type = "funaudiochat_audio_encoder"
    base_config_key = "audio_config"

    num_mel_bins: int = 128
    encoder_layers: int = 32
    encoder_attention_heads: int = 20
    encoder_ffn_dim: int = 5120
    d_model: int = 1280
    dropout: float | int = 0.0
    attention_dropout: float | int = 0.0
    activation_function: str = "gelu"
    activation_dropout: float | int = 0.0
    scale_embedding: bool = False
    initializer_range: float = 0.02
    max_source_positions: int = 1500
    n_window: int = 100
    output_dim: int = 4096
    bos_token_id: int | None = 6561
    eos_token_id: int | None = 6562
    pad_token_id: int | None = 6563
    codebook_size: int = 6565
    continuous_features_mode: str = "replace"
    crq_transformer_config: dict | None = None
    group_size: int = 5
    enable_audio_invert_tower: bool = True
    num_hidden_layers: int | None = None

    def __post_init__(self, **kwargs):
        if self.crq_transformer_config is None:
            self.crq_transformer_config = dict(DEFAULT_SPEECH_HEAD_CONFIG)
        elif isinstance(self.crq_transformer_config, PreTrainedConfig):
            self.crq_transformer_config = self.crq_transformer_config.to_dict()
        else:
            self.crq_transformer_config = dict(self.crq_transformer_config)
        if self.num_hidden_layers is None:
            self.num_hidden_layers = self.encoder_layers
        super().__post_init__(**kwargs)
        self.check_consistency()

    def check_consistency(self):
        """Raises a `ValueError` naming the inconsistent values."""
        if self.d_model % self.encoder_attention_heads != 0:
            raise ValueError(
                f"d_model ({self.d_model}) must be divisible by encoder_attention_heads ({self.encoder_attention_heads})."
            )
        if self.continuous_features_mode not in ("replace", "add"):
            raise ValueError(
                f"continuous_features_mode must be 'replace' or 'add', got {self.continuous_features_mode!r}."
            )
        if self.group_size < 1:
            raise ValueError(f"group_size must be >= 1, got {self.group_size}.")
        if self.n_window < 1:
            raise ValueError(f"n_window must be >= 1, got {self.n_window}.")
        specials = {
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
            "pad_token_id": self.pad_token_id,
        }
        for name, value in specials.items():
            if value is not None and not 0 <= value < self.codebook_size:
                raise ValueError(
                    f"codebook_size ({self.codebook_size}) must be above every speech special id, but {name}={value}."
                )
        if self.crq_transformer_config.get("model_type", "qwen3") != "qwen3":
            raise ValueError(
                "crq_transformer_config must describe a qwen3 transformer, got model_type="
                f"{self.crq_transformer_config.get('model_type')!r}."
            )

    @property
    def num_speech_codes(self) -> int:
        """How many real speech codes there are (ids `0 <= id < num_speech_codes`, what the token-to-waveform decoder
        reads): the ids below the first speech special id (6561 in the checkpoint)."""
        specials = [i for i in (self.bos_token_id, self.eos_token_id, self.pad_token_id) if i is not None]
        return min(specials, default=self.codebook_size)

    def speech_head_config(self) -> PreTrainedConfig:
        """The speech head transformer's config, built from the `crq_transformer_config` dict."""
        head = dict(self.crq_transformer_config)
        head.setdefault("model_type", "qwen3")
        attn_implementation = getattr(self, "_attn_implementation_internal", None)
        config = AutoConfig.for_model(**head)
        if attn_implementation is not None:
            config._attn_implementation = attn_implementation
        return config


@strict(accept_kwargs=True)
class FunAudioChatConfig(PreTrainedConfig):
    r"""
    Configuration of [`FunAudioChatForConditionalGeneration`]: a Qwen3 LLM running at 5 Hz (`text_config`) fed by two
    audio encoders and followed by a 25 Hz speech head (`audio_config`).

    Args:
        audio_config: a [`FunAudioChatAudioEncoderConfig`] or its dict.
        text_config: the LLM config (dict or object; `model_type` "qwen3"). Besides the usual Qwen3 keys it holds
            `audio_bos_index`, `audio_eos_index` and `sil_index`, the text ids of `<|audio_bos|>`, `<|audio_eos|>`
            and `<|sil|>`.
        audio_token_index: text id of the `<|AUDIO|>` placeholder (151669 in the real tokenizer).
        ignore_index: label value ignored by the losses.
        hidden_size: defaults to the LLM hidden size.
        token2wav_source: Hub id or directory (absolute, or relative to the checkpoint) of the CosyVoice3
            token-to-waveform decoder that `from_pretrained` attaches by default.

    Example:

    ```python
    >>> from transformers_fac import FunAudioChatConfig
    >>> config = FunAudioChatConfig()
    >>> config.get_text_config().hidden_size, config.audio_config.output_dim
    (4096, 4096)
    ```
    """

    model_type = "funaudiochat"
    attribute_map = {"audio_token_id": "audio_token_index"}
    sub_configs_defaults = {
        "text_config": SubConfigSpec(AutoConfig, model_type="qwen3", init_kwargs=DEFAULT_TEXT_CONFIG),
        "audio_config": SubConfigSpec(FunAudioChatAudioEncoderConfig),
    }

    audio_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    audio_token_index: int = 151669
    ignore_index: int = -100
    hidden_size: int | None = None
    token2wav_source: str | None = None
    tie_word_embeddings: bool = True

    def __post_init__(self, **kwargs):
        if isinstance(self.text_config, dict) and "model_type" not in self.text_config:
            self.text_config = {**self.text_config, "model_type": "qwen3"}
        super().__post_init__(**kwargs)
        if self.hidden_size is None:
            self.hidden_size = self.text_config.hidden_size
        self.check_consistency()

    def check_consistency(self):
        """Raises a `ValueError` naming the inconsistent values."""
        self.audio_config.check_consistency()
        text = self.text_config
        if self.audio_config.output_dim != text.hidden_size:
            raise ValueError(
                f"audio_config.output_dim ({self.audio_config.output_dim}) must equal the LLM hidden size "
                f"text_config.hidden_size ({text.hidden_size})."
            )
        for name in ("audio_bos_index", "audio_eos_index", "sil_index"):
            value = getattr(text, name, None)
            if value is None:
                raise ValueError(f"text_config.{name} is missing: it is the text id of a speech special token.")
            if not 0 <= value < text.vocab_size:
                raise ValueError(f"text_config.{name}={value} is outside the text vocabulary ({text.vocab_size}).")
        if not 0 <= self.audio_token_index < text.vocab_size:
            raise ValueError(
                f"audio_token_index={self.audio_token_index} is outside the text vocabulary ({text.vocab_size})."
            )

    def get_text_config(self, decoder=None, encoder=None) -> PreTrainedConfig:
        """The LLM config (what vLLM, PEFT and generation utilities look for)."""
        return self.text_config

    def to_dict(self) -> dict[str, Any]:
        """Also writes the legacy `rope_theta` key, so that transformers 4.x readers (the official code) keep it."""
        output = super().to_dict()
        text = output.get("text_config", {})
        rope_theta = (text.get("rope_parameters") or {}).get("rope_theta")
        if rope_theta is not None:
            text.setdefault("rope_theta", rope_theta)
        return output


__all__ = ["FunAudioChatAudioEncoderConfig", "FunAudioChatConfig"]
