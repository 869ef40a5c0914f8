"""transformers-fac: Fun-Audio-Chat-8B as a first-class Hugging Face transformers model.

`import transformers_fac` registers every class with the transformers Auto classes and the pipeline registry.
"""

from ._compat import hide_broken_torchaudio, quiet_torchao_import_noise

hide_broken_torchaudio()  # must run before anything imports transformers.audio_utils
quiet_torchao_import_noise()  # before transformers imports torchao (when installed)

from .configuration_fun_audio_chat import FunAudioChatAudioEncoderConfig, FunAudioChatConfig  # noqa: E402
from .conversation import FunAudioChatConversation  # noqa: E402
from .engine import AudioDelta, ReplyDone, ReplyEngine, ReplyRequest, TextDelta  # noqa: E402
from .engine.reply_stream import ReplyStream, stream_reply  # noqa: E402
from .generation_fun_audio_chat import (  # noqa: E402
    FunAudioChatGenerateOutput,
    SpeechReply,
    SpeechSamplingConfig,
    valid_speech_codes,
)
from .modeling_fun_audio_chat import (  # noqa: E402
    FunAudioChatForConditionalGeneration,
    FunAudioChatOutput,
    FunAudioChatPreTrainedModel,
)
from .processing_fun_audio_chat import FunAudioChatProcessor  # noqa: E402
from .prompts import (  # noqa: E402
    AUDIO_TEMPLATE,
    S2M_SYSTEM_PROMPT,
    S2S_SYSTEM_PROMPT,
    S2T_SYSTEM_PROMPT,
    SPOKEN_S2M_PROMPT,
)
from .registration import register  # noqa: E402
from .streaming import FunAudioChatIteratorStreamer, FunAudioChatStreamer, StreamChunk  # noqa: E402
from .tiny import tiny_checkpoint  # noqa: E402
from .token2wav import FunAudioChatToken2Wav, FunAudioChatToken2WavConfig  # noqa: E402
from .voice import FunAudioChatVoice  # noqa: E402

register()

__version__ = "0.1.0"

__all__ = [
    "AUDIO_TEMPLATE",
    "AudioDelta",
    "FunAudioChatAudioEncoderConfig",
    "FunAudioChatConfig",
    "FunAudioChatConversation",
    "FunAudioChatForConditionalGeneration",
    "FunAudioChatGenerateOutput",
    "FunAudioChatIteratorStreamer",
    "FunAudioChatOutput",
    "FunAudioChatPreTrainedModel",
    "FunAudioChatProcessor",
    "FunAudioChatStreamer",
    "FunAudioChatToken2Wav",
    "FunAudioChatToken2WavConfig",
    "FunAudioChatVoice",
    "S2M_SYSTEM_PROMPT",
    "S2S_SYSTEM_PROMPT",
    "S2T_SYSTEM_PROMPT",
    "SPOKEN_S2M_PROMPT",
    "ReplyDone",
    "ReplyEngine",
    "ReplyRequest",
    "ReplyStream",
    "SpeechReply",
    "SpeechSamplingConfig",
    "StreamChunk",
    "TextDelta",
    "register",
    "stream_reply",
    "tiny_checkpoint",
    "valid_speech_codes",
]
