"""Speaker similarity of clips to a target voice: cosine of CAM++ speaker vectors (an `evaluate` module)."""

from transformers_fac.evaluation import audio_metric, voice_similarity


class SpeakerSimilarity(audio_metric.AudioMetric):
    CARD_DESCRIPTION = """
The cosine similarity (in [-1, 1]) between the CAM++ speaker vector of each clip and that of a target voice, as
CosyVoice3 computes speaker vectors (`transformers_fac.voice`). CAM++ comes from a decoder folder or Hub repo
(default: the CosyVoice3 repository).
"""
    CARD_INPUTS = """
Args:
    predictions: a list of clips: waveforms (give `sampling_rate`), file paths or `datasets` audio values.
    reference_voice: the target: a saved voice (folder or .safetensors file), a clip, or a speaker vector.
    frontend_source: the folder or Hub repo holding campplus.onnx (default: FunAudioLLM/Fun-CosyVoice3-0.5B-2512).
    sampling_rate: the rate of bare waveforms (default 16000).
Returns:
    similarity: the mean over the clips that could be embedded; per_clip (None where a clip was too short or silent);
    skipped: how many could not be embedded.
Examples:
    >>> similarity = transformers_fac.evaluation.load_metric("speaker_similarity")
    >>> similarity.compute(predictions=[reply], sampling_rate=24000, reference_voice="voices/me")["similarity"]
"""
    CARD_CITATION = """
@inproceedings{wang2023campplus,
  title={CAM++: A Fast and Efficient Network for Speaker Verification Using Context-Aware Masking},
  author={Wang, Hui and Zheng, Siqi and Chen, Yafeng and Cheng, Luyao and Chen, Qian},
  booktitle={Interspeech},
  year={2023}
}
"""
    CARD_URLS = ("https://arxiv.org/abs/2303.00332",)

    def _compute(self, predictions, reference_voice=None, frontend_source=None):
        if reference_voice is None:
            raise ValueError("speaker_similarity needs `reference_voice=` (a saved voice, a clip or a vector).")
        return voice_similarity.speaker_similarities(predictions, reference_voice, frontend_source=frontend_source)
