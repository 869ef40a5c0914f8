"""A shortened CPU smoke fine-tune (the README command), evaluation with and without speech, the recipes."""

import importlib.util
import math

import numpy as np
import pytest
from conftest import TINY_FAC

from transformers_fac.training import (
    FunAudioChatDataCollator,
    error_rates,
    evaluate_model,
    loss_history,
    report_table,
    speech_text_consistency,
)
from transformers_fac.training.recipe import build_training_arguments, load_recipe


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    assert importlib.util.find_spec("s3tokenizer"), (
        "pip install --no-deps s3tokenizer==0.3.0 (the README test command)"
    )
    from finetune.smoke_test import run_smoke

    return run_smoke(tmp_path_factory.mktemp("smoke"), steps=10, rows=8, new_tokens=4)


def test_smoke_fine_tune_learns_saves_merges(smoke):
    losses = smoke["losses"]
    assert len(losses) == 10 and sum(losses[-3:]) < sum(losses[:3])
    assert smoke["text_logit_diff"] < 1e-5 and smoke["speech_logit_diff"] < 1e-5


def test_qlora_smoke_fine_tune_on_a_4bit_backbone(tmp_path):
    """The CPU smoke fine-tune with an nf4 (bitsandbytes) backbone: the LoRA layers wrap 4-bit linears, the loss goes
    down, and the adapter reloaded on a 4-bit base gives the trained model's logits."""
    from finetune.smoke_test import run_smoke

    result = run_smoke(tmp_path, steps=8, rows=8, new_tokens=4, quantize="nf4")
    losses = result["losses"]
    assert len(losses) == 8 and sum(losses[-3:]) < sum(losses[:3])
    assert result["quantized_layers"] == 14  # the tiny backbone's 2 layers x 7 projections, under LoRA
    assert result["text_logit_diff"] < 1e-5 and result["speech_logit_diff"] < 1e-5
    assert 0 < result["float_base_text_diff"] < 1  # the float32 base differs from its 4-bit copy, a little


def test_trainer_logs_both_losses(smoke):
    trainer = smoke["trainer"]
    text, speech, total = (loss_history(trainer, key) for key in ("text_loss", "speech_loss", "loss"))
    assert len(text) == len(speech) == len(total) == 10
    for (_, t), (_, s), (_, loss) in zip(text, speech, total):
        assert math.isclose(t + s, loss, rel_tol=1e-2)


def test_evaluation_before_after(smoke):
    import peft
    from transformers import AutoModelForMultimodalLM

    collator = FunAudioChatDataCollator(smoke["processor"])
    rows = [smoke["eval_dataset"][0]]
    base = AutoModelForMultimodalLM.from_pretrained(TINY_FAC).eval()
    before = evaluate_model(base, collator, rows, max_new_tokens=3)
    after = evaluate_model(peft.PeftModel.from_pretrained(base, smoke["adapter_dir"]), collator, rows, generate=False)
    assert before["rows"] == after["rows"] == 1 and len(before["samples"]) == 1
    assert after["text_loss"] < before["text_loss"] and 0 <= after["speech_code_accuracy"] <= 1
    assert math.isclose(before["perplexity"], math.exp(before["text_loss"]), rel_tol=1e-3)
    table = report_table({"before": before, "after": after}, ["text_loss", "consistency_wer"])
    assert table.splitlines()[3] == "| consistency_wer | n/a | n/a |"


def test_speech_text_consistency_with_an_asr_function():
    waveforms = [{"raw": np.zeros(160), "sampling_rate": 16000, "heard": "hello world"}] * 2
    result = speech_text_consistency(["Hello, world!", "hello word"], waveforms, lambda audio: audio["heard"])
    assert result["wer"] == 0.25 and result["transcripts"] == ["hello world"] * 2
    assert error_rates(["你好世界"], ["你好世"])["cer"] == 0.25


@pytest.mark.parametrize(
    "name", ["s2s_lora", "s2s_qlora", "s2t_lora", "function_calling_lora", "smoke_tiny", "custom_voice_lora"]
)
def test_recipes_parse(name):
    recipe = load_recipe(f"finetune/recipes/{name}.yaml", ["training.bf16=false", "training.use_cpu=true"])
    assert {"model", "data", "lora", "training"} <= set(recipe)
    arguments = build_training_arguments(recipe)
    assert arguments.remove_unused_columns is False


def test_consistency_on_generated_speech(tiny_e2e_model, tiny_e2e_dir):
    """With a speech decoder the evaluation transcribes the generated audio and scores it against the text."""
    from transformers import AutoProcessor

    from transformers_fac import AUDIO_TEMPLATE, S2M_SYSTEM_PROMPT

    heard = []

    def transcribe(audio):
        heard.append(audio)
        return "a transcript"

    example = {
        "user_audio": "tests/fixtures/audio/question_en.wav",
        "system": S2M_SYSTEM_PROMPT,
        "messages": [{"role": "user", "content": AUDIO_TEMPLATE}, {"role": "assistant", "content": AUDIO_TEMPLATE}],
        "reply": "Hello.",
        "speech_codes": [1, 2, 3, 4, 5],
    }
    collator = FunAudioChatDataCollator(AutoProcessor.from_pretrained(tiny_e2e_dir))
    result = evaluate_model(tiny_e2e_model, collator, [example], transcribe=transcribe, max_new_tokens=4)
    assert len(heard) == 1 and heard[0]["sampling_rate"] == 24000 and heard[0]["raw"].size > 0
    assert result["transcripts"] == ["a transcript"] and {"consistency_wer", "consistency_cer"} <= set(result)
