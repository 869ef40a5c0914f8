"""transformers-fac: Fun-Audio-Chat-8B as a first-class Hugging Face transformers model.

`import transformers_fac` registers every class with the transformers Auto classes and the pipeline registry.
"""

from ._compat import hide_broken_torchaudio

hide_broken_torchaudio()  # must run before anything imports transformers.audio_utils

from .configuration_fun_audio_chat import FunAudioChatAudioEncoderConfig, FunAudioChatConfig  # noqa: E402
from .processing_fun_audio_chat import FunAudioChatProcessor  # noqa: E402
from .registration import register  # noqa: E402

register()

__version__ = "0.1.0"

__all__ = [
    "FunAudioChatAudioEncoderConfig",
    "FunAudioChatConfig",
    "FunAudioChatProcessor",
    "register",
]
