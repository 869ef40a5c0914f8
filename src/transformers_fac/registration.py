"""Registers the Fun-Audio-Chat classes with the transformers Auto classes (idempotent, no remote code)."""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForAudioTokenization,
    AutoModelForMultimodalLM,
    AutoModelForSeq2SeqLM,
    AutoProcessor,
)

from .configuration_fun_audio_chat import FunAudioChatAudioEncoderConfig, FunAudioChatConfig
from .modeling_fun_audio_chat import FunAudioChatForConditionalGeneration
from .pipeline_speech_to_speech import register_pipelines
from .processing_fun_audio_chat import FunAudioChatProcessor
from .token2wav import FunAudioChatToken2Wav, FunAudioChatToken2WavConfig


def register() -> None:
    """Make `AutoConfig`, `AutoModel*`, `AutoProcessor` and `pipeline()` know Fun-Audio-Chat. Safe to call twice."""
    for config_class in (FunAudioChatAudioEncoderConfig, FunAudioChatConfig, FunAudioChatToken2WavConfig):
        AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
    for auto_class in (AutoModelForMultimodalLM, AutoModelForSeq2SeqLM, AutoModel):
        auto_class.register(FunAudioChatConfig, FunAudioChatForConditionalGeneration, exist_ok=True)
    for auto_class in (AutoModelForAudioTokenization, AutoModel):
        auto_class.register(FunAudioChatToken2WavConfig, FunAudioChatToken2Wav, exist_ok=True)
    AutoProcessor.register(FunAudioChatConfig, FunAudioChatProcessor, exist_ok=True)
    register_pipelines()
