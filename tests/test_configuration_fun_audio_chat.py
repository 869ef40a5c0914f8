import json

import pytest
from conftest import GOLDEN, TINY_FAC
from transformers import AutoConfig, Qwen3Config

from transformers_fac import FunAudioChatAudioEncoderConfig, FunAudioChatConfig

HUB_CONFIG = GOLDEN.parents[2] / "hub_configs" / "Fun-Audio-Chat-8B"


def test_real_config_loads_with_checkpoint_values():
    config = AutoConfig.from_pretrained(HUB_CONFIG)
    assert isinstance(config, FunAudioChatConfig)
    assert isinstance(config.audio_config, FunAudioChatAudioEncoderConfig)
    assert isinstance(config.text_config, Qwen3Config)
    assert config.audio_token_index == config.audio_token_id == 151669
    assert config.text_config.hidden_size == config.audio_config.output_dim == 4096
    assert config.text_config.rope_parameters["rope_theta"] == 5_000_000
    assert (config.text_config.audio_bos_index, config.text_config.audio_eos_index) == (151670, 151671)
    assert config.text_config.sil_index == 151673
    head = config.audio_config.speech_head_config()
    assert (head.hidden_size, head.num_hidden_layers, head.head_dim) == (1024, 28, 128)
    assert config.get_text_config() is config.text_config


def test_defaults_are_the_8b_checkpoint():
    default = FunAudioChatConfig().to_dict()
    real = AutoConfig.from_pretrained(HUB_CONFIG).to_dict()
    for key in ("audio_token_index", "hidden_size"):
        assert default[key] == real[key]
    for key in ("d_model", "encoder_layers", "output_dim", "codebook_size", "pad_token_id", "n_window"):
        assert default["audio_config"][key] == real["audio_config"][key]
    for key in ("hidden_size", "num_hidden_layers", "intermediate_size", "vocab_size", "sil_index"):
        assert default["text_config"][key] == real["text_config"][key]


@pytest.mark.parametrize("source", [TINY_FAC, HUB_CONFIG])
def test_save_pretrained_round_trip(tmp_path, source):
    config = AutoConfig.from_pretrained(source)
    config.save_pretrained(tmp_path)
    reloaded = AutoConfig.from_pretrained(tmp_path)
    first, second = config.to_dict(), reloaded.to_dict()
    first.pop("_name_or_path"), second.pop("_name_or_path")
    assert first == second
    saved = json.loads((tmp_path / "config.json").read_text())
    # Readers on transformers 4.x (the official code) still find the legacy rope key and the speech-head dict.
    assert saved["text_config"]["rope_theta"] == config.text_config.rope_parameters["rope_theta"]
    assert saved["audio_config"]["crq_transformer_config"] == config.audio_config.crq_transformer_config


def test_tiny_config_unchanged_values():
    raw = json.loads((TINY_FAC / "config.json").read_text())
    config = AutoConfig.from_pretrained(TINY_FAC)
    for key, value in raw["audio_config"].items():
        assert getattr(config.audio_config, key) == value, key
    assert config.audio_token_index == raw["audio_token_index"]
    assert config.text_config.vocab_size == raw["text_config"]["vocab_size"]


def test_official_constructor_arguments():
    raw = json.loads((TINY_FAC / "config.json").read_text())
    from_dicts = FunAudioChatConfig(
        audio_config=raw["audio_config"], text_config=raw["text_config"], audio_token_index=403
    )
    from_objects = FunAudioChatConfig(
        audio_config=FunAudioChatAudioEncoderConfig(**raw["audio_config"]),
        text_config=Qwen3Config(**raw["text_config"]),
        audio_token_index=403,
    )
    assert from_dicts.audio_config.crq_transformer_config["hidden_size"] == 32
    assert from_dicts.to_dict()["audio_config"] == from_objects.to_dict()["audio_config"]
    assert from_dicts.hidden_size == from_objects.hidden_size == 64
    assert from_dicts.audio_token_id == 403


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"audio_config": {"output_dim": 3584}}, "must equal the LLM hidden size"),
        ({"audio_config": {"codebook_size": 6562}}, "codebook_size"),
        ({"audio_config": {"continuous_features_mode": "concat"}}, "continuous_features_mode"),
        ({"audio_config": {"d_model": 1000, "encoder_attention_heads": 16}}, "divisible"),
        ({"audio_token_index": 10**7}, "outside the text vocabulary"),
        ({"text_config": {"sil_index": None}}, "sil_index"),
    ],
)
def test_inconsistent_values_are_rejected(changes, message):
    kwargs = {}
    for key, value in changes.items():
        if key == "text_config":
            from transformers_fac.configuration_fun_audio_chat import DEFAULT_TEXT_CONFIG

            kwargs[key] = {**DEFAULT_TEXT_CONFIG, **value}
        else:
            kwargs[key] = value
    with pytest.raises(ValueError, match=message):
        FunAudioChatConfig(**kwargs)


def test_number_of_real_speech_codes_comes_from_the_special_ids():
    from transformers_fac import FunAudioChatAudioEncoderConfig

    assert FunAudioChatAudioEncoderConfig().num_speech_codes == 6561  # the first special id (speech BOS)
    shifted = FunAudioChatAudioEncoderConfig(bos_token_id=101, eos_token_id=100, pad_token_id=102, codebook_size=103)
    assert shifted.num_speech_codes == 100
