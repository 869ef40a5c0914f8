"""Speech quality of a set of spoken replies, for before/after comparisons (`finetune/evaluate_model.py`):
ASR-WER / CER of each reply's audio against its own text, DNSMOS, and speaker similarity to a target voice."""

from collections.abc import Mapping, Sequence
from typing import Any

from .audio_metric import audio_batch


def spoken_reply_metrics(
    replies: Sequence[Mapping[str, Any]],
    transcriber: Any = None,
    language: str = "en",
    reference_voice: Any = None,
    frontend: Any = None,
) -> dict[str, Any]:
    """Metrics of the replies that have audio (`{"text", "audio", "sampling_rate"}` each):

    - `dnsmos_ovrl`, `dnsmos_sig`, `dnsmos_bak`, `dnsmos_p808`: mean DNSMOS;
    - with a `transcriber` (`transcription.Transcriber`): `asr_wer` / `asr_cer` (%) of the transcripts against the
      replies' own text, and `transcripts`;
    - with a `reference_voice` (a saved voice, a clip or a vector) and a CAM++ `frontend` (`VoiceFrontend`):
      `speaker_similarity`, the mean cosine of speaker vectors.

    Example:
        >>> spoken_reply_metrics([{"text": "Hi.", "audio": waveform, "sampling_rate": 24000}])  # doctest: +SKIP
        {'spoken_replies': 1, 'dnsmos_ovrl': 2.9, ...}
    """
    from .speech_quality import dnsmos_scores

    spoken = [reply for reply in replies if reply.get("audio") is not None and len(reply["audio"])]
    if not spoken:
        return {"spoken_replies": 0}
    clips = audio_batch([(reply["audio"], reply["sampling_rate"]) for reply in spoken])
    dnsmos = dnsmos_scores(clips)
    results: dict[str, Any] = {"spoken_replies": len(spoken)}
    results.update({f"dnsmos_{key.removesuffix('_mos')}": dnsmos[key] for key in ("ovrl_mos", "sig_mos", "bak_mos")})
    results["dnsmos_p808"] = dnsmos["p808_mos"]
    if transcriber is not None:
        from .transcription import error_rates

        transcripts = transcriber(clips)
        rates = error_rates([reply["text"] for reply in spoken], transcripts, language)
        results.update(asr_wer=100 * rates["wer"], asr_cer=100 * rates["cer"], transcripts=transcripts)
    if reference_voice is not None and frontend is not None:
        from .voice_similarity import speaker_similarities

        similarity = speaker_similarities(clips, reference_voice, frontend=frontend)
        results["speaker_similarity"] = similarity["similarity"]
    return results


__all__ = ["spoken_reply_metrics"]
