import pytest
import torch
from conftest import AUDIO_FILES, TINY_FAC, read_audio
from transformers import AutoProcessor

from transformers_fac import S2M_SYSTEM_PROMPT, FunAudioChatConversation


@pytest.fixture(scope="module")
def processor():
    return AutoProcessor.from_pretrained(TINY_FAC)


def test_first_turn_prompt_is_the_official_s2m_prompt(processor, scenarios):
    chat = FunAudioChatConversation(system_prompt=S2M_SYSTEM_PROMPT)
    chat.add_user_audio(AUDIO_FILES["long"])
    assert chat.prompt(processor) == scenarios["s2m_long"]["prompt_text"]


def test_two_turn_chat_feeds_back_the_reply_text(processor, tiny_model):
    chat = FunAudioChatConversation(system_prompt=S2M_SYSTEM_PROMPT)
    chat.add_user_audio(read_audio("en"))
    inputs = chat.model_inputs(processor)
    sequences, _ = tiny_model.generate(**inputs, generation_mode="audio", do_sample=False, max_new_tokens=5)
    reply = processor.decode(sequences[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    chat.add_assistant_reply(reply)
    chat.add_user_audio(AUDIO_FILES["zh"])
    second = chat.model_inputs(processor)
    prompt = chat.prompt(processor)
    assert prompt.count("<|im_start|>user") == 2 and f"<|im_start|>assistant\n{reply.strip()}<|im_end|>" in prompt
    assert second["speech_ids"].shape[0] == 2 and second["feature_exist_mask"].tolist() == [True, True]
    assert int((second["input_ids"] == 403).sum()) == int(((second["speech_attention_mask"].sum(-1) + 4) // 5).sum())
    out = tiny_model.generate(**second, generation_mode="text", do_sample=False, max_new_tokens=3)
    assert out.shape[1] == second["input_ids"].shape[1] + 3


def test_history_is_capped(processor):
    chat = FunAudioChatConversation(system_prompt="sys", max_turns=2)
    for index in range(4):
        chat.add_user_audio(torch.zeros(1), instruction=f"question {index}")
        if index < 3:
            chat.add_assistant_reply(f"answer {index}")
    messages = chat.messages()
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[1]["content"].endswith("question 2") and messages[2]["content"] == "answer 2"
    assert len(chat.audios()) == 2


def test_misuse_is_reported(processor):
    chat = FunAudioChatConversation(system_prompt="sys")
    with pytest.raises(ValueError, match="no user turn"):
        chat.add_assistant_reply("hello")
    chat.add_user_audio(AUDIO_FILES["en"])
    with pytest.raises(ValueError, match="no assistant reply yet"):
        chat.add_user_audio(AUDIO_FILES["zh"])
    with pytest.raises(ValueError, match="max_turns"):
        FunAudioChatConversation(system_prompt="sys", max_turns=0)
