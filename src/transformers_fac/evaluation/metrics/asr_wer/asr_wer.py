"""ASR-WER / CER of spoken replies against a text (their own text or a reference), through a transformers ASR
pipeline (an `evaluate` module)."""

import datasets

from transformers_fac.evaluation import audio_metric, transcription


class ASRWER(audio_metric.AudioMetric):
    CARD_DESCRIPTION = """
Transcribes each clip with a transformers automatic-speech-recognition pipeline (default openai/whisper-large-v3, as
the Fun-Audio-Chat report) and computes the word error rate (and character error rate) of the transcripts against
the references after Whisper's text normalisers (`whisper_normalizer`), with `jiwer`. With the reply's own text as
the reference this measures speech/text alignment ("ASR-WER" in the report); with a gold answer, intelligibility.
Chinese and other languages without spaces are judged by CER.
"""
    CARD_INPUTS = """
Args:
    predictions: a list of clips: waveforms (give `sampling_rate`), file paths or `datasets` audio values.
    references: one text per clip.
    sampling_rate: the rate of bare waveforms (default 16000).
    model: the ASR model (Hub id or local folder; default openai/whisper-large-v3).
    language: "en" (default), "zh", ...: Whisper's forced language and the normaliser.
    batch_size: clips per ASR forward pass (default 8). device: where the ASR model runs.
Returns:
    wer, cer, error_rate (CER for zh/ja/ko/yue/th, else WER), transcripts, per_item (WER of each), items, skipped.
Examples:
    >>> asr_wer = transformers_fac.evaluation.load_metric("asr_wer")
    >>> asr_wer.compute(predictions=[reply_audio], references=[reply_text], sampling_rate=24000)["wer"]
"""
    CARD_CITATION = """
@inproceedings{radford2023whisper,
  title={Robust Speech Recognition via Large-Scale Weak Supervision},
  author={Radford, Alec and Kim, Jong Wook and Xu, Tao and Brockman, Greg and McLeavey, Christine and Sutskever, Ilya},
  booktitle={ICML},
  year={2023}
}
"""
    CARD_URLS = ("https://github.com/jitsi/jiwer", "https://pypi.org/project/whisper-normalizer/")
    REFERENCE = datasets.Value("string")

    def _compute(
        self,
        predictions,
        references,
        model: str = transcription.DEFAULT_ASR_MODEL,
        language: str = "en",
        batch_size: int = 8,
        device: str | None = None,
    ):
        transcribe = transcription.Transcriber(model, language=language, device=device, batch_size=batch_size)
        transcripts = transcribe(predictions)
        return {**transcription.error_rates(references, transcripts, language), "transcripts": transcripts}
