"""DNSMOS P.835 (SIG, BAK, OVRL) and P.808 of speech clips, through `speechmos` (an `evaluate` module)."""

from transformers_fac.evaluation import audio_metric, speech_quality


class DNSMOS(audio_metric.AudioMetric):
    CARD_DESCRIPTION = """
DNSMOS (Reddy et al.) predicts, without a reference, the mean opinion scores (1-5) of ITU-T P.835 -- speech signal
(SIG), background noise (BAK) and overall quality (OVRL) -- and of P.808. The ONNX models ship inside the `speechmos`
wheel, so it runs offline. Clips are resampled to 16 kHz first.
"""
    CARD_INPUTS = """
Args:
    predictions: a list of clips: waveforms (give `sampling_rate`), file paths or `datasets` audio values.
    sampling_rate: the rate of bare waveforms (default 16000).
    personalized: use the personalized DNSMOS model (default False).
Returns:
    ovrl_mos, sig_mos, bak_mos, p808_mos: means over the clips (speechmos's keys);
    per_clip: the four scores of each clip; clips: how many were scored.
Examples:
    >>> dnsmos = transformers_fac.evaluation.load_metric("dnsmos")
    >>> dnsmos.compute(predictions=[waveform_24k], sampling_rate=24000)["ovrl_mos"]
"""
    CARD_CITATION = """
@inproceedings{reddy2022dnsmos,
  title={DNSMOS P.835: A non-intrusive perceptual objective speech quality metric to evaluate noise suppressors},
  author={Reddy, Chandan K. A. and Gopal, Vishak and Cutler, Ross},
  booktitle={ICASSP},
  year={2022}
}
"""
    CARD_URLS = ("https://pypi.org/project/speechmos/", "https://arxiv.org/abs/2110.01763")

    def _compute(self, predictions, personalized: bool = False):
        return speech_quality.dnsmos_scores(predictions, personalized=personalized)
