"""The metric modules of `transformers_fac.evaluation` as `evaluate` modules, offline: DNSMOS against speechmos
itself, ASR-WER through a tiny random Whisper and Whisper's normalisers, speaker similarity through the tiny
checkpoint's CAM++ stand-in, and UTMOS's one-line error without its weights."""

import evaluate
import numpy as np
import pytest
import soundfile as sf
from speechmos import dnsmos as speechmos_dnsmos

from tests.evaluation_data import AUDIO, build_tiny_whisper, noisy
from transformers_fac.evaluation import load_metric, metric_path
from transformers_fac.evaluation.transcription import error_rates

CLEAN = AUDIO / "question_en.wav"


@pytest.fixture(scope="module")
def clean_16k() -> np.ndarray:
    waveform, rate = sf.read(CLEAN, dtype="float32")
    assert rate == 16000
    return waveform


def test_dnsmos_equals_speechmos_and_ranks_noise_lower(clean_16k, tmp_path):
    dnsmos = load_metric("dnsmos")
    dirty = noisy(clean_16k, level=0.05)
    noisy_path = tmp_path / "noisy.wav"
    sf.write(noisy_path, dirty, 16000)

    ours = dnsmos.compute(predictions=[clean_16k, str(noisy_path)], sampling_rate=16000)

    for clip, scores in zip((clean_16k, str(noisy_path)), ours["per_clip"]):  # an array and a file, as speechmos takes
        reference = speechmos_dnsmos.run(clip, 16000)
        for key in ("ovrl_mos", "sig_mos", "bak_mos", "p808_mos"):
            assert scores[key] == pytest.approx(float(reference[key]), abs=1e-4)
    assert ours["clips"] == 2
    assert ours["ovrl_mos"] == pytest.approx(np.mean([clip["ovrl_mos"] for clip in ours["per_clip"]]))
    clean_scores, noisy_scores = ours["per_clip"]
    assert clean_scores["ovrl_mos"] > noisy_scores["ovrl_mos"] + 0.3
    assert clean_scores["bak_mos"] > noisy_scores["bak_mos"]


def test_dnsmos_resamples_and_batches_through_evaluate(clean_16k):
    """A 24 kHz clip and a datasets audio value give the 16 kHz clip's scores (resampled inside); add_batch works
    and `evaluate.load` of the module's folder loads the same module."""
    import datasets
    import soxr

    module = evaluate.load(str(metric_path("dnsmos")))
    at_24k = soxr.resample(clean_16k, 16000, 24000)
    audio_value = datasets.Dataset.from_dict({"audio": [str(CLEAN)]}).cast_column("audio", datasets.Audio())[0][
        "audio"
    ]
    module.add_batch(predictions=[at_24k], sampling_rate=24000)
    module.add_batch(predictions=[audio_value])
    scores = module.compute()
    direct = speechmos_dnsmos.run(clean_16k, 16000)["ovrl_mos"]
    assert scores["per_clip"][1]["ovrl_mos"] == pytest.approx(direct, abs=1e-4)
    assert scores["per_clip"][0]["ovrl_mos"] == pytest.approx(direct, abs=0.05)  # resampled twice: close, not equal
    with pytest.raises(TypeError, match="one clip"):
        module.compute(predictions=clean_16k)


def test_asr_wer_through_a_transformers_pipeline(tmp_path, clean_16k):
    whisper = build_tiny_whisper(tmp_path / "tiny-whisper")
    asr_wer = load_metric("asr_wer")
    scores = asr_wer.compute(
        predictions=[clean_16k, clean_16k[:8000]], references=["Hello there.", "Good morning."], model=str(whisper)
    )
    assert len(scores["transcripts"]) == 2
    expected = error_rates(["Hello there.", "Good morning."], scores["transcripts"])
    assert scores["wer"] == pytest.approx(expected["wer"])
    assert 0.0 <= scores["cer"] and scores["items"] == 2


def test_error_rates_of_known_strings():
    """Whisper's English normaliser makes spelling, numbers and punctuation not count; Chinese is judged by CER."""
    assert error_rates(["Hello world.", "the cat sat"], ["hello word", "the cat sat"])["wer"] == pytest.approx(0.2)
    assert error_rates(["Mr. Smith has 2 dogs."], ["mister smith has two dogs"])["wer"] == 0.0
    chinese = error_rates(["今天天气很好。"], ["今天天气不好"], language="zh")
    assert chinese["error_rate"] == chinese["cer"] == pytest.approx(1 / 6)
    skipping = error_rates(["", "yes"], ["anything", "no"])
    assert skipping["skipped"] == 1 and skipping["per_item"] == [None, 1.0] and skipping["wer"] == 1.0


def test_speaker_similarity_with_the_cam_plus_plus_stand_in(clean_16k):
    from transformers_fac.tiny import tiny_checkpoint

    source = tiny_checkpoint() / "token2wav"
    similarity = load_metric("speaker_similarity")
    other, _ = sf.read(AUDIO / "question_zh.wav", dtype="float32")
    scores = similarity.compute(
        predictions=[clean_16k, other, clean_16k[:800]], reference_voice=str(CLEAN), frontend_source=str(source)
    )
    same, different, too_short = scores["per_clip"]
    assert same == pytest.approx(1.0, abs=1e-4)
    assert different < same - 1e-3
    assert too_short is None and scores["skipped"] == 1
    assert scores["similarity"] == pytest.approx((same + different) / 2)
    with pytest.raises(ValueError, match="reference_voice"):
        similarity.compute(predictions=[clean_16k], frontend_source=str(source))


def test_utmos_without_its_weights_is_one_clear_error(clean_16k, monkeypatch, tmp_path):
    import torch

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "empty-hub-cache"))
    utmos = load_metric("utmos")
    with pytest.raises(RuntimeError, match=r"UTMOS needs the utmos22_strong weights from torch\.hub") as error:
        utmos.compute(predictions=[clean_16k])
    assert "\n" not in str(error.value)


def test_spoken_reply_metrics_for_before_after_reports(tmp_path, clean_16k):
    """What `finetune/evaluate_model.py` reports per model: DNSMOS, ASR-WER against each reply's own text, and the
    speaker similarity to the target voice (here the reply's own speaker: 1.0); text-only replies are left out."""
    from transformers_fac.evaluation.reply_metrics import spoken_reply_metrics
    from transformers_fac.evaluation.speech_quality import dnsmos_scores
    from transformers_fac.evaluation.transcription import Transcriber
    from transformers_fac.tiny import tiny_checkpoint
    from transformers_fac.voice import VoiceFrontend

    replies = [{"text": "What is the weather like?", "audio": clean_16k, "sampling_rate": 16000}, {"text": "Hi."}]
    transcriber = Transcriber(str(build_tiny_whisper(tmp_path / "asr")), language="en")
    frontend = VoiceFrontend.from_source(tiny_checkpoint() / "token2wav")

    metrics = spoken_reply_metrics(replies, transcriber, "en", reference_voice=str(CLEAN), frontend=frontend)

    assert metrics["spoken_replies"] == 1
    assert metrics["dnsmos_ovrl"] == pytest.approx(dnsmos_scores([clean_16k])["ovrl_mos"])
    expected = error_rates(["What is the weather like?"], metrics["transcripts"])
    assert metrics["asr_wer"] == pytest.approx(100 * expected["wer"])
    assert metrics["speaker_similarity"] == pytest.approx(1.0, abs=1e-4)
    assert spoken_reply_metrics([{"text": "Hi."}]) == {"spoken_replies": 0}
