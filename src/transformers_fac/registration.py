"""Registers the Fun-Audio-Chat classes with the transformers Auto classes (idempotent, no remote code)."""

from transformers import AutoConfig, AutoModel, AutoModelForMultimodalLM, AutoModelForSeq2SeqLM, AutoProcessor

from .configuration_fun_audio_chat import FunAudioChatAudioEncoderConfig, FunAudioChatConfig
from .modeling_fun_audio_chat import FunAudioChatForConditionalGeneration
from .pipeline_speech_to_speech import register_pipelines
from .processing_fun_audio_chat import FunAudioChatProcessor


def register() -> None:
    """Make `AutoConfig`, `AutoModel*`, `AutoProcessor` and `pipeline()` know Fun-Audio-Chat. Safe to call twice."""
    AutoConfig.register(FunAudioChatAudioEncoderConfig.model_type, FunAudioChatAudioEncoderConfig, exist_ok=True)
    AutoConfig.register(FunAudioChatConfig.model_type, FunAudioChatConfig, exist_ok=True)
    for auto_class in (AutoModelForMultimodalLM, AutoModelForSeq2SeqLM, AutoModel):
        auto_class.register(FunAudioChatConfig, FunAudioChatForConditionalGeneration, exist_ok=True)
    AutoProcessor.register(FunAudioChatConfig, FunAudioChatProcessor, exist_ok=True)
    register_pipelines()
