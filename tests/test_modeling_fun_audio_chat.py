import json
import warnings

import pytest
import torch
from conftest import GOLDEN, TINY_FAC, read_audio, scenario_inputs, whisper_features
from safetensors import safe_open
from transformers import AttentionInterface, AutoConfig, AutoModel, AutoModelForMultimodalLM, AutoModelForSeq2SeqLM
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from transformers_fac import FunAudioChatForConditionalGeneration


def checkpoint_keys(path) -> set[str]:
    with safe_open(path, "pt") as handle:
        return set(handle.keys())


@pytest.mark.parametrize("auto_class", [AutoModelForMultimodalLM, AutoModelForSeq2SeqLM, AutoModel])
def test_loads_through_auto_classes_without_key_problems(auto_class):
    model, info = auto_class.from_pretrained(TINY_FAC, output_loading_info=True)
    assert type(model) is FunAudioChatForConditionalGeneration
    assert info["missing_keys"] == set() and info["unexpected_keys"] == set()
    assert info["mismatched_keys"] == set() and not info["error_msgs"]
    assert model.audio_invert_tower.lm_head.weight is model.audio_tower.embed_tokens.weight


def test_save_pretrained_keeps_the_official_key_set(tmp_path, tiny_model):
    tiny_model.save_pretrained(tmp_path)
    assert checkpoint_keys(tmp_path / "model.safetensors") == checkpoint_keys(TINY_FAC / "model.safetensors")
    reloaded = AutoModelForMultimodalLM.from_pretrained(tmp_path)
    original = tiny_model.state_dict()
    for key, value in reloaded.state_dict().items():
        assert torch.equal(value, original[key]), key
    assert reloaded.audio_invert_tower.lm_head.weight is reloaded.audio_tower.embed_tokens.weight


def test_8b_configuration_has_the_official_keys_and_shapes():
    reference = json.loads((GOLDEN / "fac-keys-8b.json").read_text())
    config = AutoConfig.from_pretrained(GOLDEN.parents[2] / "hub_configs" / "Fun-Audio-Chat-8B")
    with torch.device("meta"):
        model = AutoModelForMultimodalLM.from_config(config)
    shapes = {key: list(value.shape) for key, value in model.state_dict().items()}
    assert shapes == reference["state_dict"]
    assert sum(p.numel() for p in model.parameters()) == reference["num_params"]
    assert set(shapes) - set(reference["checkpoint_keys"]) == set(reference["tied"])


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_forward_matches_the_reference(golden, implementation):
    model = AutoModelForMultimodalLM.from_pretrained(TINY_FAC, attn_implementation=implementation).eval()
    inputs = scenario_inputs(golden, "forward")
    with torch.no_grad():
        output = model(**inputs)
        features, lengths = model.continuous_audio_tower(
            inputs["input_features"], inputs["feature_attention_mask"], inputs["speech_ids"].shape[1]
        )
    torch.testing.assert_close(output.text_logits, golden["forward.out.text_logits"], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(output.logits, output.text_logits)
    torch.testing.assert_close(
        output.speech_logits[:, -10:], golden["forward.out.speech_logits_last10"], rtol=1e-4, atol=1e-4
    )
    torch.testing.assert_close(features, golden["forward.out.encoder_features"], rtol=1e-4, atol=1e-4)
    assert lengths.tolist() == golden["forward.out.encoder_lengths"].tolist()


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_training_losses_match_the_reference(golden, scenarios, implementation):
    model = AutoModelForMultimodalLM.from_pretrained(TINY_FAC, attn_implementation=implementation).eval()
    inputs = scenario_inputs(golden, "train")
    labels_before = inputs["labels"].clone()
    with torch.no_grad():
        output = model(**inputs)
    expected = scenarios["train"]
    for name in ("loss", "text_loss", "speech_loss"):
        assert getattr(output, name).item() == pytest.approx(expected[name], rel=1e-5), name
    assert torch.equal(inputs["labels"], labels_before), "forward must not modify the caller's labels"
    assert output.speech_logits.shape == (1, 5 * inputs["input_ids"].shape[1], 6565)


def test_audio_encoder_batch_equals_single(tiny_model):
    both = whisper_features(["en", "long"])
    with torch.no_grad():
        batched, batched_lengths = tiny_model.continuous_audio_tower(
            both["input_features"], both["feature_attention_mask"], 150
        )
        for row, name in enumerate(["en", "long"]):
            single = whisper_features([name])
            alone, length = tiny_model.continuous_audio_tower(
                single["input_features"], single["feature_attention_mask"], 150
            )
            torch.testing.assert_close(batched[row], alone[0], rtol=1e-5, atol=1e-5)
            assert batched_lengths[row] == length[0] == len(read_audio(name)) // 640


def test_encoder_routes_through_the_attention_interface(tiny_model, golden):
    calls = []

    def recording_attention(module, query, key, value, attention_mask, **kwargs):
        calls.append((tuple(query.shape), None if attention_mask is None else tuple(attention_mask.shape)))
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)

    AttentionInterface.register("fac_recording", recording_attention)
    inputs = scenario_inputs(golden, "forward")
    reference, _ = tiny_model.continuous_audio_tower(inputs["input_features"], inputs["feature_attention_mask"], 150)
    tiny_model.config.audio_config._attn_implementation = "fac_recording"
    try:
        with torch.no_grad():
            routed, _ = tiny_model.continuous_audio_tower(
                inputs["input_features"], inputs["feature_attention_mask"], 150
            )
    finally:
        tiny_model.config.audio_config._attn_implementation = None
    # 6 s of audio = 3 windows of 2 s; 2 layers; 4 heads; 100 frames per window after the stride-2 convolution.
    assert calls == [((3, 4, 100, 16), (3, 1, 1, 100))] * 2
    torch.testing.assert_close(routed, reference)


def test_float16_layer_stays_finite():
    from transformers_fac.modeling_audio_encoders import FunAudioChatEncoderLayer

    config = AutoConfig.from_pretrained(TINY_FAC).audio_config
    config._attn_implementation = "eager"
    layer = FunAudioChatEncoderLayer(config).half()
    with torch.no_grad():
        layer.fc2.weight.fill_(100.0)
        output = layer(torch.full((1, 4, config.d_model), 50.0, dtype=torch.float16), None)
    assert output.dtype == torch.float16 and torch.isfinite(output).all()


def test_gradient_checkpointing_gives_the_same_gradients(golden):
    inputs = scenario_inputs(golden, "train")
    grads = []
    for checkpointing in (False, True):
        model = AutoModelForMultimodalLM.from_pretrained(TINY_FAC)
        model.train()
        if checkpointing:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                model.activation_checkpointing_enable()  # transformers 5's name (gradient_* are deprecated)
                assert model.is_activation_checkpointing
            assert not [w for w in caught if issubclass(w.category, FutureWarning)]
            assert model.language_model.model.gradient_checkpointing
            assert model.continuous_audio_tower.layers[0].gradient_checkpointing
            assert model.audio_invert_tower.crq_transformer.layers[0].gradient_checkpointing
        loss = model(**{k: v.clone() for k, v in inputs.items()}).loss
        loss.backward()
        grads.append(
            (
                loss.item(),
                model.continuous_audio_tower.layers[0].fc1.weight.grad.clone(),
                model.audio_invert_tower.pre_matching.weight.grad.clone(),
            )
        )
    assert grads[0][0] == pytest.approx(grads[1][0], rel=1e-6)
    torch.testing.assert_close(grads[0][1], grads[1][1])
    torch.testing.assert_close(grads[0][2], grads[1][2])


def test_bfloat16_and_device_map_auto_load(golden):
    model = AutoModelForMultimodalLM.from_pretrained(TINY_FAC, dtype=torch.bfloat16, device_map="auto")
    assert model.dtype == torch.bfloat16 and model.device.type == "cpu"
    inputs = scenario_inputs(golden, "forward")
    with torch.no_grad():
        output = model(**inputs)
    assert torch.isfinite(output.text_logits.float()).all()
    agreement = (output.text_logits.float().argmax(-1) == golden["forward.out.text_logits"].argmax(-1)).float().mean()
    assert agreement > 0.9


def test_placeholder_count_must_match_the_audio(tiny_model, golden):
    inputs = scenario_inputs(golden, "forward")
    inputs["input_ids"][0, 40] = 198  # one <|AUDIO|> fewer than the audio needs
    with pytest.raises(ValueError, match="<|AUDIO|>"):
        tiny_model(**inputs)


def test_text_only_checkpoint_has_no_speech_head(tmp_path):
    config = AutoConfig.from_pretrained(TINY_FAC)
    config.audio_config.enable_audio_invert_tower = False
    model = FunAudioChatForConditionalGeneration(config)
    assert model.audio_invert_tower is None
    assert not any(key.startswith("audio_invert_tower") for key in model.state_dict())
    with pytest.raises(ValueError, match="no speech head"):
        model(input_ids=torch.tensor([[1, 2]]), output_speech_logits=True)
