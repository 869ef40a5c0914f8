"""UTMOS22 (strong) naturalness MOS of speech clips (an `evaluate` module)."""

from transformers_fac.evaluation import audio_metric, speech_quality


class UTMOS(audio_metric.AudioMetric):
    CARD_DESCRIPTION = """
UTMOS22 "strong" (Saeki et al., the UTokyo-SaruLab system of the VoiceMOS Challenge 2022) predicts the naturalness
MOS (1-5) of a clip without a reference. The weights are loaded with torch.hub from `tarepan/SpeechMOS` (v1.2.0) on
first use; offline without a cached copy, `compute` raises one clear error. Clips are resampled to 16 kHz.
"""
    CARD_INPUTS = """
Args:
    predictions: a list of clips: waveforms (give `sampling_rate`), file paths or `datasets` audio values.
    sampling_rate: the rate of bare waveforms (default 16000).
    device: where the predictor runs (default "cpu").
Returns:
    utmos: the mean over the clips; per_clip: each clip's score; clips: how many were scored.
Examples:
    >>> utmos = transformers_fac.evaluation.load_metric("utmos")
    >>> utmos.compute(predictions=["reply.wav"])["utmos"]
"""
    CARD_CITATION = """
@inproceedings{saeki2022utmos,
  title={UTMOS: UTokyo-SaruLab System for VoiceMOS Challenge 2022},
  author={Saeki, Takaaki and Xin, Detai and Nakata, Wataru and Koriyama, Tomoki and Takamichi, Shinnosuke and
          Saruwatari, Hiroshi},
  booktitle={Interspeech},
  year={2022}
}
"""
    CARD_URLS = ("https://github.com/tarepan/SpeechMOS", "https://arxiv.org/abs/2204.02152")

    def _compute(self, predictions, device: str = "cpu"):
        return speech_quality.utmos_scores(predictions, device=device)
