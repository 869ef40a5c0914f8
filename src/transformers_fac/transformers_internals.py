"""The private transformers names this package relies on, in one place, with the version they were checked against.

"Private": not exported by transformers' public namespaces (`transformers`, `transformers.generation`,
`transformers.pipelines`, `transformers.utils`), or named with a leading underscore. A transformers release may change
them without notice: `tests/test_package_structure.py` fails when a module imports one that is not listed here, and
checks that every listed name still exists.
"""

CHECKED_WITH = "5.24.0"

# `module:name` imported by a module of the package (`module:` for a module import), and who uses it.
PRIVATE_IMPORTS: tuple[str, ...] = (
    "transformers.activations:ACT2FN",  # modeling_audio_encoders: the activation by config name, as model files do
    "transformers.initialization:",  # modeling_*, token2wav: the v5 weight-init helpers of `_init_weights`
    "transformers.utils.deprecation:deprecate_kwarg",  # modeling_fun_audio_chat: `past_key_values` -> `cache`
    "transformers.configuration_utils:SubConfigSpec",  # configuration_fun_audio_chat: nested config declaration
    "transformers.audio_utils:load_audio",  # audio_io: URL / path / base64 audio loading
    "transformers.audio_utils:mel_filter_bank",  # voice.features: the Kaldi-style mel filters of voice cloning
    "transformers.pipelines.audio_utils:ffmpeg_read",  # audio_io: decoding bytes without a file
    "transformers.processing_utils:_UNMARKED",  # processing_fun_audio_chat: the chat template's unmarked text
    "transformers.utils.chat_template_utils:Chat",  # pipeline_speech_to_speech: chat inputs
    "transformers.quantizers:AutoHfQuantizer",  # quantization: which parameters a config quantizes (no kernels run)
)

# `module.Class.attribute`: private methods and attributes of transformers classes that the package calls, reads or
# overrides.
PRIVATE_ATTRIBUTES: tuple[str, ...] = (
    "transformers.generation.utils.GenerationMixin._prefill",  # joint_sample: the standard prefill
    "transformers.generation.utils.GenerationMixin._prepare_cache_for_generation",  # bucketed static caches
    "transformers.generation.utils.GenerationMixin._prepare_special_tokens",  # sets `_pad_token_tensor`, read per step
    "transformers.configuration_utils.PreTrainedConfig._attn_implementation",  # attention of the towers / decoding
    "transformers.modeling_utils.PreTrainedModel._init_weights",  # overridden for custom parameters
    "transformers.modeling_utils.PreTrainedModel._tied_weights_keys",  # speech head output = code embedding
)

# `module:key`: private keyword keys that transformers fills in and the package reads.
PRIVATE_KEYS: tuple[str, ...] = (
    # token2wav_loading.saved_voice: the adapter folder an Auto class loads, handed to `from_pretrained` in `adapter_kwargs`
    "transformers.models.auto.auto_factory:_adapter_model_path",
)
