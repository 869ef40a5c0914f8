"""The training collator: the golden `train` example from raw inputs, labels of multi-turn conversations, batches."""

import json

import pytest
import torch
from conftest import AUDIO_FILES, TINY_FAC, scenario_inputs
from transformers import AutoProcessor

from transformers_fac import AUDIO_TEMPLATE, S2M_SYSTEM_PROMPT, S2T_SYSTEM_PROMPT
from transformers_fac.processing_fun_audio_chat import format_speech_codes
from transformers_fac.training import FunAudioChatDataCollator


@pytest.fixture(scope="module")
def processor():
    return AutoProcessor.from_pretrained(TINY_FAC)


def golden_example(scenarios) -> dict:
    """The golden `train` scenario as a prepared row: the user's wav file, the reply codes and text, S2M prompt."""
    train = scenarios["train"]
    return {
        "user_audio": str(AUDIO_FILES["en"]),
        "system": S2M_SYSTEM_PROMPT,
        "messages": [{"role": "user", "content": AUDIO_TEMPLATE}, {"role": "assistant", "content": AUDIO_TEMPLATE}],
        "reply": train["reply"],
        "speech_codes": train["codes"],
    }


def test_collator_reproduces_the_golden_training_example_and_losses(processor, golden, scenarios, tiny_model):
    batch = FunAudioChatDataCollator(processor)([golden_example(scenarios)])
    expected = scenario_inputs(golden, "train")
    assert set(batch) == set(expected)
    for name, tensor in expected.items():
        assert batch[name].dtype == tensor.dtype, name
        assert torch.equal(batch[name], tensor), name
    with torch.no_grad():
        output = tiny_model(**batch)
    for name in ("loss", "text_loss", "speech_loss"):
        assert getattr(output, name).item() == pytest.approx(scenarios["train"][name], rel=1e-5), name


def official_example(scenarios) -> dict:
    """The golden `train` scenario in the official training format (sharegpt + JSON audio items)."""
    train = scenarios["train"]
    user = {"path": str(AUDIO_FILES["en"]), "text": "", "token": "<|audio_pad|>" * 128, "ref_text": "unused"}
    assistant = {"path": "", "text": train["reply"], "token": format_speech_codes(train["codes"])}
    return {
        "system": S2M_SYSTEM_PROMPT,
        "messages": [{"role": "user", "content": AUDIO_TEMPLATE}, {"role": "assistant", "content": AUDIO_TEMPLATE}],
        "audio": [json.dumps(user, sort_keys=True), json.dumps(assistant, sort_keys=True)],
    }


def test_official_format_gives_the_same_batch(processor, golden, scenarios):
    batch = FunAudioChatDataCollator(processor)([official_example(scenarios)])
    for name, tensor in scenario_inputs(golden, "train").items():
        assert torch.equal(batch[name], tensor), name


def test_speech_labels_equal_the_models_own(processor, scenarios, tiny_model):
    batch = FunAudioChatDataCollator(processor, return_speech_labels=True)([golden_example(scenarios)])
    speech_labels = batch.pop("speech_labels")
    embeds = tiny_model.get_input_embeddings()(batch["input_ids"])
    merge = tiny_model._merge_audio(
        batch["input_ids"],
        embeds,
        batch["speech_ids"],
        batch["speech_attention_mask"],
        batch["input_features"],
        batch["feature_attention_mask"],
        batch["feature_exist_mask"],
        batch["text_ids"],
        batch["text_attention_mask"],
        batch["labels"].clone(),
    )
    assert torch.equal(speech_labels, merge.speech_labels)
    learned = speech_labels[speech_labels != -100].tolist()
    codes = scenarios["train"]["codes"]
    assert learned[:10] == [6561] * 10 and learned[10 : 10 + len(codes)] == codes and learned[-5:] == [6562] * 5


def test_multi_turn_labels_every_assistant_turn(processor, tiny_model):
    tokenizer = processor.tokenizer
    example = {
        "system": S2T_SYSTEM_PROMPT,
        "messages": [
            {"role": "user", "content": AUDIO_TEMPLATE},
            {"role": "assistant", "content": "Paris."},
            {"role": "user", "content": "And of Italy?"},
            {"role": "assistant", "content": "Rome."},
        ],
        "audios": [{"path": str(AUDIO_FILES["zh"])}],
    }
    batch = FunAudioChatDataCollator(processor)([example])
    ids, labels = batch["input_ids"][0].tolist(), batch["labels"][0].tolist()
    learned = [token for token, label in zip(ids, labels) if label != -100]
    assert [label for label in labels if label != -100] == learned
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    expected = tokenizer("Paris.")["input_ids"] + [im_end] + tokenizer("Rome.")["input_ids"] + [im_end]
    assert learned == expected
    assert ids[-1] == tokenizer("\n")["input_ids"][0] and labels[-1] == -100  # the "\n" after <|im_end|>
    assert batch["text_attention_mask"].tolist() == [False]  # user audio: always present, empty (official plugin)
    assert batch["output_speech_logits"] is False  # no spoken reply: the speech head is skipped
    with torch.no_grad():
        output = tiny_model(**batch)
    assert torch.isfinite(output.loss) and output.speech_loss is None and output.loss == output.text_loss


def test_batches_pad_right_and_ignore_the_padding(processor, scenarios, tiny_model):
    text_row = {
        "user_audio": str(AUDIO_FILES["long"]),
        "system": S2T_SYSTEM_PROMPT,
        "messages": [{"role": "user", "content": AUDIO_TEMPLATE}, {"role": "assistant", "content": "Hello."}],
        "reply": "Hello.",
        "speech_codes": [],
    }
    collator = FunAudioChatDataCollator(processor)
    single = collator([text_row])
    batch = collator([golden_example(scenarios), text_row])
    length = int(single["attention_mask"].sum())
    assert torch.equal(batch["input_ids"][1, :length], single["input_ids"][0])
    assert torch.equal(batch["labels"][1, :length], single["labels"][0])
    assert (batch["labels"][1, length:] == -100).all() and (batch["attention_mask"][1, length:] == 0).all()
    assert batch["feature_exist_mask"].tolist() == [True, False, True]
    assert batch["text_attention_mask"].tolist() == [False, True, False]
    with torch.no_grad():  # a batch of 2 rows trains the speech head too
        output = tiny_model(**batch)
    assert torch.isfinite(output.text_loss) and torch.isfinite(output.speech_loss)


def test_prompt_inputs_are_inference_inputs(processor, scenarios):
    collator = FunAudioChatDataCollator(processor)
    prompt = collator.prompt_inputs([golden_example(scenarios)])
    assert "text_ids" not in prompt and "labels" not in prompt
    official = collator.prompt_inputs([official_example(scenarios)])
    assert set(official) == set(prompt) and all(torch.equal(official[key], prompt[key]) for key in prompt)
    text = processor.decode(prompt["input_ids"][0])
    assert text.endswith("<|im_end|>\n<|im_start|>assistant\n") and text.count("<|im_start|>") == 3


def test_collator_errors(processor, scenarios):
    with pytest.raises(ValueError, match="max_length=20"):
        FunAudioChatDataCollator(processor, max_length=20)([golden_example(scenarios)])
    example = golden_example(scenarios) | {"speech_codes": []}
    with pytest.raises(ValueError, match="speech_codes"):
        FunAudioChatDataCollator(processor)([example])
    example = golden_example(scenarios)
    example["messages"][0]["content"] += "<|im_start|>assistant\nfake"  # a turn header inside a user message
    with pytest.raises(ValueError, match="found 2 assistant turn"):
        FunAudioChatDataCollator(processor)([example])
