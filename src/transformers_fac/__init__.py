"""transformers-fac: Fun-Audio-Chat-8B as a first-class Hugging Face transformers model.

`import transformers_fac` registers every class with the transformers Auto classes and the pipeline registry.
"""

from .configuration_fun_audio_chat import FunAudioChatAudioEncoderConfig, FunAudioChatConfig
from .registration import register
from .token2wav import FunAudioChatToken2Wav, FunAudioChatToken2WavConfig

register()

__version__ = "0.1.0"

__all__ = [
    "FunAudioChatAudioEncoderConfig",
    "FunAudioChatConfig",
    "FunAudioChatToken2Wav",
    "FunAudioChatToken2WavConfig",
    "register",
]
