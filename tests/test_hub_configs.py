"""Every model-side file in hub_configs/ loads with our classes (the processor files: test_hub_configs_processor)."""

import json
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModel, GenerationConfig

from transformers_fac import FunAudioChatConfig, FunAudioChatToken2WavConfig, SpeechSamplingConfig
from transformers_fac.token2wav_loading import DEFAULT_TOKEN2WAV, default_token2wav_source

HUB = Path(__file__).resolve().parents[1] / "hub_configs"
GOLDEN = Path(__file__).parent / "fixtures" / "golden"


def test_model_config_names_the_decoder():
    config = AutoConfig.from_pretrained(HUB / "Fun-Audio-Chat-8B")
    assert isinstance(config, FunAudioChatConfig)
    assert default_token2wav_source(config, HUB / "Fun-Audio-Chat-8B") == DEFAULT_TOKEN2WAV
    # The official repo's own config.json has no such key: its id is known.
    config.token2wav_source = None
    assert default_token2wav_source(config, "FunAudioLLM/Fun-Audio-Chat-8B") == DEFAULT_TOKEN2WAV


def test_generation_config_is_the_official_s2m_default():
    generation = GenerationConfig.from_pretrained(HUB / "Fun-Audio-Chat-8B")
    assert (generation.do_sample, generation.temperature, generation.top_p) == (True, 0.8, 0.9)
    assert (generation.repetition_penalty, generation.eos_token_id, generation.pad_token_id) == (1.2, 151645, 151643)
    speech = SpeechSamplingConfig.resolve(generation, {})
    assert (speech.do_sample, speech.temperature, speech.top_p, speech.repetition_penalty) == (True, 0.8, 0.9, 1.2)


def test_model_card_front_matter():
    card = (HUB / "Fun-Audio-Chat-8B" / "README.md").read_text(encoding="utf-8")
    front = card.split("---")[1]
    assert "pipeline_tag: any-to-any" in front and "library_name: transformers" in front
    assert 'pipeline("speech-to-speech"' in card and "import transformers_fac" in card


def test_token2wav_config_is_the_real_decoder():
    config = AutoConfig.from_pretrained(HUB / "Fun-CosyVoice3-0.5B-2512")
    assert isinstance(config, FunAudioChatToken2WavConfig) and config.sampling_rate == 24000
    with torch.device("meta"):
        model = AutoModel.from_config(config)
    reference = json.loads((GOLDEN / "t2w-keys-full.json").read_text())
    expected = {f"{part}.{key}": shape for part in ("flow", "hift") for key, shape in reference[part].items()}
    shapes = {key: list(value.shape) for key, value in model.state_dict().items()}
    assert shapes == expected
