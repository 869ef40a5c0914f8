"""Registers the Fun-Audio-Chat classes with the transformers Auto classes (idempotent, no remote code)."""

from transformers import AutoConfig, AutoModel, AutoModelForAudioTokenization

from .configuration_fun_audio_chat import FunAudioChatAudioEncoderConfig, FunAudioChatConfig
from .token2wav import FunAudioChatToken2Wav, FunAudioChatToken2WavConfig


def register() -> None:
    """Make `AutoConfig`, `AutoModel*`, `AutoProcessor` and `pipeline()` know Fun-Audio-Chat. Safe to call twice."""
    AutoConfig.register(FunAudioChatAudioEncoderConfig.model_type, FunAudioChatAudioEncoderConfig, exist_ok=True)
    AutoConfig.register(FunAudioChatConfig.model_type, FunAudioChatConfig, exist_ok=True)
    AutoConfig.register(FunAudioChatToken2WavConfig.model_type, FunAudioChatToken2WavConfig, exist_ok=True)
    AutoModel.register(FunAudioChatToken2WavConfig, FunAudioChatToken2Wav, exist_ok=True)
    AutoModelForAudioTokenization.register(FunAudioChatToken2WavConfig, FunAudioChatToken2Wav, exist_ok=True)
