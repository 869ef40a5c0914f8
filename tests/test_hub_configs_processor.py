"""The processor files shipped for the real checkpoint (`hub_configs/Fun-Audio-Chat-8B/`) load with our and the
transformers classes and build a processor that reproduces the official inputs."""

import inspect
import json
from pathlib import Path

from transformers import AutoTokenizer, WhisperFeatureExtractor

from tests.processing_test_utils import AUDIO_FILES, TINY_FAC, assert_matches_golden, golden_inputs, prompt
from transformers_fac import FunAudioChatProcessor
from transformers_fac.processing_fun_audio_chat import default_chat_template

HUB = Path(__file__).resolve().parents[1] / "hub_configs" / "Fun-Audio-Chat-8B"


def test_preprocessor_config_is_the_whisper_large_v3_front_end():
    extractor = WhisperFeatureExtractor.from_pretrained(HUB)
    assert (extractor.feature_size, extractor.hop_length, extractor.n_fft) == (128, 160, 400)
    assert (extractor.sampling_rate, extractor.chunk_length, extractor.n_samples) == (16000, 30, 480000)


def test_speech_tokenizer_maps_codes_to_their_ids():
    speech = AutoTokenizer.from_pretrained(HUB, subfolder="speech_tokenizer")
    assert speech.convert_tokens_to_ids(["[AU0000]", "[AU1234]", "[AU6560]"]) == [0, 1234, 6560]
    specials = ["<|audio_bos|>", "<|audio_eos|>", "<|audio_pad|>", "<|endoftext|>"]
    assert speech.convert_tokens_to_ids(specials) == [6561, 6562, 6563, 6564]
    assert (speech.bos_token, speech.eos_token, speech.pad_token) == tuple(specials[:3])
    assert speech("<|audio_bos|>[AU0007][AU6560]")["input_ids"] == [6561, 7, 6560]
    assert json.loads((HUB / "speech_tokenizer" / "tokenizer_config.json").read_text())["audio_group_size"] == 5


def test_processor_config_and_chat_template():
    config = json.loads((HUB / "processor_config.json").read_text())
    assert config.pop("processor_class") == "FunAudioChatProcessor"
    assert set(config) <= set(inspect.signature(FunAudioChatProcessor.__init__).parameters)
    assert (HUB / "chat_template.jinja").read_text(encoding="utf-8") == default_chat_template()


def test_hub_files_build_a_processor_that_matches_the_reference():
    config = json.loads((HUB / "processor_config.json").read_text())
    config.pop("processor_class")
    processor = FunAudioChatProcessor(
        WhisperFeatureExtractor.from_pretrained(HUB),
        AutoTokenizer.from_pretrained(TINY_FAC),  # the text tokenizer is the checkpoint's own (Qwen3 + specials)
        AutoTokenizer.from_pretrained(HUB, subfolder="speech_tokenizer"),
        chat_template=(HUB / "chat_template.jinja").read_text(encoding="utf-8"),
        **config,
    )
    outputs = processor(text=prompt(), audio=[str(AUDIO_FILES["en"])], return_tensors="pt")
    assert_matches_golden(outputs, golden_inputs("s2t_en"))
