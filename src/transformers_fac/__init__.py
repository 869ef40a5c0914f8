"""transformers-fac: Fun-Audio-Chat-8B as a first-class Hugging Face transformers model.

`import transformers_fac` registers every class with the transformers Auto classes and the pipeline registry.
"""

from .configuration_fun_audio_chat import FunAudioChatAudioEncoderConfig, FunAudioChatConfig
from .generation_fun_audio_chat import FunAudioChatGenerateOutput, SpeechSamplingConfig, valid_speech_codes
from .modeling_fun_audio_chat import (
    FunAudioChatForConditionalGeneration,
    FunAudioChatOutput,
    FunAudioChatPreTrainedModel,
)
from .registration import register

register()

__version__ = "0.1.0"

__all__ = [
    "FunAudioChatAudioEncoderConfig",
    "FunAudioChatConfig",
    "FunAudioChatForConditionalGeneration",
    "FunAudioChatGenerateOutput",
    "FunAudioChatOutput",
    "FunAudioChatPreTrainedModel",
    "SpeechSamplingConfig",
    "register",
    "valid_speech_codes",
]
