"""Speaker similarity of replies to a target voice: the cosine of CAM++ speaker vectors (`transformers_fac.voice`).

CAM++ (`campplus.onnx`) comes from a decoder folder or Hub repo (`VoiceFrontend.from_source`; by default the
CosyVoice3 repository, downloaded once). The tiny checkpoint's `token2wav/` folder holds a stand-in with the same
signature, which is what the offline tests use.
"""

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..audio_io import AudioInputError


def reference_vector(frontend: Any, reference: Any):
    """The target's CAM++ vector: `reference` is a saved voice (folder or file), a `FunAudioChatVoice`, a vector or
    a clip (anything `load_audio` reads)."""
    import torch

    from ..voice import FunAudioChatVoice, is_voice_path

    if is_voice_path(reference):
        reference = FunAudioChatVoice.load(reference)
    if isinstance(reference, FunAudioChatVoice):
        return reference.speaker_embedding
    if isinstance(reference, torch.Tensor):
        return reference
    return frontend.speaker_vector(reference, trim=True)


def speaker_similarities(
    waveforms_16k: Sequence[np.ndarray], reference: Any, frontend_source: Any = None, frontend: Any = None
) -> dict[str, Any]:
    """Cosine similarity (in [-1, 1]) between each clip's CAM++ vector and the reference's: the mean `similarity`,
    `per_clip` (None for clips too short or silent to embed) and `skipped` (their count)."""
    from ..voice import VoiceFrontend, speaker_similarity

    frontend = frontend if frontend is not None else VoiceFrontend.from_source(frontend_source)
    target = reference_vector(frontend, reference)
    per_clip: list[float | None] = []
    for clip in waveforms_16k:
        try:
            vector = frontend.speaker_vector((np.asarray(clip, dtype=np.float32), 16000), trim=True)
        except AudioInputError:
            per_clip.append(None)
            continue
        per_clip.append(speaker_similarity(vector, target))
    scored = [value for value in per_clip if value is not None]
    mean = float(np.mean(scored)) if scored else float("nan")
    return {"similarity": mean, "per_clip": per_clip, "skipped": len(per_clip) - len(scored)}


__all__ = ["reference_vector", "speaker_similarities"]
