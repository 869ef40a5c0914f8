"""Custom voices: the voice object and its file, cloning from a reference clip, a voice from a dataset, similarity.

- `FunAudioChatVoice`: speaker vector + optional prompt (codes and mel); `save` / `load` (safetensors + JSON).
- `VoiceFrontend`: CAM++ speaker vectors and cloning (what `FunAudioChatToken2Wav.clone_voice` uses).
- `prompt_mel`, `speaker_features`: the reference frontend's features; `load_clip`: the clip rules.
- `voice_from_dataset`: one voice from many clips of one speaker; `speaker_similarity`: cosine of speaker vectors.

Wherever a `voice` is accepted (the decoder, `generate`, the pipeline, `stream_reply`), a voice, a voice directory
or file, a stock name or a [192] tensor can be given. Cloning needs the `voice` extra
(`pip install "transformers-fac[voice]"`: kaldi-native-fbank, onnxruntime) and `s3tokenizer` for the prompt codes.
"""

from .dataset import voice_from_dataset
from .dependencies import VOICE_EXTRA_HINT, import_voice_dependency, require_cloning
from .features import MAX_CLIP_SECONDS, MIN_CLIP_SECONDS, load_clip, prompt_mel, speaker_features, speech_ratio
from .frontend import VoiceFrontend, resolve_frontend_files, speaker_similarity
from .voice_file import FunAudioChatVoice, is_voice_path

__all__ = [
    "MAX_CLIP_SECONDS",
    "MIN_CLIP_SECONDS",
    "VOICE_EXTRA_HINT",
    "FunAudioChatVoice",
    "VoiceFrontend",
    "import_voice_dependency",
    "is_voice_path",
    "load_clip",
    "prompt_mel",
    "require_cloning",
    "resolve_frontend_files",
    "speaker_features",
    "speaker_similarity",
    "speech_ratio",
    "voice_from_dataset",
]
