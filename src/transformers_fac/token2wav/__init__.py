"""Native CosyVoice3 token-to-waveform decoder (speech codes -> 24 kHz audio) for Fun-Audio-Chat."""

from .configuration_token2wav import FunAudioChatToken2WavConfig
from .cosyvoice_loading import save_cosyvoice_dir
from .modeling_token2wav import FunAudioChatToken2Wav, FunAudioChatToken2WavOutput
from .speakers import load_speaker_file
from .tiny_decoder import build_tiny_cosyvoice_dir
from .voices import DEFAULT_VOICE

__all__ = [
    "DEFAULT_VOICE",
    "FunAudioChatToken2Wav",
    "FunAudioChatToken2WavConfig",
    "FunAudioChatToken2WavOutput",
    "build_tiny_cosyvoice_dir",
    "load_speaker_file",
    "save_cosyvoice_dir",
]
