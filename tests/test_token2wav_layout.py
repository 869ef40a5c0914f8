"""Checkpoint layout: full-size keys, the CosyVoice3 yaml, other-size directories, transformers save/load, conversion."""

import json

import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoModelForAudioTokenization

import transformers_fac  # noqa: F401  (registers the Auto classes)
from tests.token2wav_testing import GOLDEN, TINY_COSYVOICE, golden, single_thread  # noqa: F401
from transformers_fac.token2wav import (
    FunAudioChatToken2Wav,
    FunAudioChatToken2WavConfig,
    build_tiny_cosyvoice_dir,
)
from transformers_fac.token2wav.convert import main as convert_main
from transformers_fac.token2wav.cosyvoice_yaml import (
    config_from_cosyvoice_yaml,
    config_from_cosyvoice_yaml_text,
    cosyvoice_yaml_from_config,
    load_hyperpyyaml_subset,
)

# a held-out CosyVoice3-layout directory: other sizes everywhere the yaml allows, another seed, old weight-norm names
OTHER_SIZES = {
    "pre_lookahead_channels": 48,
    "dit_dim": 96,
    "dit_depth": 3,
    "dit_heads": 3,
    "dit_head_dim": 32,
    "dit_ff_mult": 3,
    "dit_conv_pos_groups": 16,
    "hift_base_channels": 48,
    "f0_cond_channels": 24,
    "nb_harmonics": 6,
    "upsample_rates": [4, 5, 3],
    "upsample_kernel_sizes": [8, 11, 7],
    "istft_n_fft": 8,
    "istft_hop_length": 2,
    "resblock_kernel_sizes": [3, 5],
    "resblock_dilation_sizes": [[1, 2], [1, 3]],
    "source_resblock_kernel_sizes": [5, 5, 7],
    "source_resblock_dilation_sizes": [[1, 2], [1, 2], [1, 3]],
    "conv_pre_look_right": 3,
    "static_chunk_size": 40,
}


@pytest.fixture(scope="module")
def held_out(tmp_path_factory):
    path = tmp_path_factory.mktemp("held-out")
    return build_tiny_cosyvoice_dir(path, seed=7, weight_norm_style="weight_g", generator_prefix=True, **OTHER_SIZES)


def test_default_config_matches_full_size_checkpoint_layout():
    reference = json.loads((GOLDEN / "t2w-keys-full.json").read_text())
    with torch.device("meta"):
        model = FunAudioChatToken2Wav(FunAudioChatToken2WavConfig())
    for part in ("flow", "hift"):
        ours = {k: list(v.shape) for k, v in getattr(model, part).state_dict().items()}
        assert ours == reference[part], part
    assert (len(reference["flow"]), len(reference["hift"])) == (330, 328)
    assert sum(p.numel() for p in model.flow.parameters()) == reference["flow_params"]
    assert sum(p.numel() for p in model.hift.parameters()) == reference["hift_params"]


def test_yaml_tags_and_references():
    text = """
base: 4
name: tiny
pair: [1, 2]
sizes:
    inner: 3
__seed: !apply:torch.manual_seed [1986]
flow: !new:pkg.Thing
    size: !ref <base> * 2 + 1
    copied: !ref <pair>
    path: !ref models/<name>/flow.pt
    eps: 1e-06
    fn: !name:pkg.function
        k: !ref <base>
hift: !new:pkg.Other
    nested:
        a: !ref <sizes[inner]>
        b: !ref <sizes.inner> // 2
"""
    sections = load_hyperpyyaml_subset(text)
    flow = sections["flow"]
    assert (flow.kind, flow.target) == ("new", "pkg.Thing")
    assert flow.args["size"] == 9 and flow.args["copied"] == [1, 2] and flow.args["eps"] == 1e-6
    assert flow.args["path"] == "models/tiny/flow.pt"
    assert flow.args["fn"].kind == "name" and flow.args["fn"].args == {"k": 4}
    assert sections["hift"].args["nested"] == {"a": 3, "b": 1}


def test_yaml_of_the_tiny_release_and_round_trip():
    config = config_from_cosyvoice_yaml(TINY_COSYVOICE / "cosyvoice3.yaml")
    tiny = json.loads((GOLDEN / "t2w-golden.json").read_text())
    fixed = tiny["fixed"]
    assert config.dit_dim == tiny["tiny_config"]["flow"]["dim"]
    assert config.hift_base_channels == tiny["tiny_config"]["hift"]["base_channels"]
    assert config.upsample_rates == fixed["upsample_rates"] and config.sampling_rate == fixed["sampling_rate"]
    assert (config.inference_cfg_rate, config.t_scheduler, config.nb_harmonics) == (0.7, "cosine", 8)
    again = config_from_cosyvoice_yaml_text(cosyvoice_yaml_from_config(config))
    assert again.to_diff_dict() == config.to_diff_dict()


def test_yaml_errors_are_clear():
    text = (TINY_COSYVOICE / "cosyvoice3.yaml").read_text()
    with pytest.raises(ValueError, match="CausalMaskedDiffWithDiT"):
        config_from_cosyvoice_yaml_text(
            text.replace("flow.flow.CausalMaskedDiffWithDiT", "flow.flow.MaskedDiffWithXvec")
        )
    with pytest.raises(ValueError, match="no 'hift' section"):
        config_from_cosyvoice_yaml_text(text.split("\nhift:")[0])


def test_held_out_directory_loads_strictly_and_follows_length_laws(held_out):
    hift_keys = torch.load(held_out / "hift.pt", weights_only=True).keys()
    assert all(k.startswith("generator.") for k in hift_keys) and any(k.endswith("weight_v") for k in hift_keys)
    model = FunAudioChatToken2Wav.from_cosyvoice(held_out)
    for name, value in OTHER_SIZES.items():
        assert getattr(model.config, name) == value, name
    assert model.config.samples_per_frame == 4 * 5 * 3 * 2
    generator = torch.Generator().manual_seed(3)
    codes = torch.randint(0, 6561, (1, 23), generator=generator)
    voice = torch.randn(192, generator=generator)
    step, per_code = model.config.samples_per_frame, model.config.samples_per_code
    assert model.decode(codes, voice=voice).shape == (1, 23 * per_code)
    mel = model.token2mel(codes, voice[None], finalize=False)
    assert mel.shape == (1, 80, 2 * 20)
    holdback = 3 + 3 + 1  # f0 look-ahead + conv_pre look-ahead (3 in this yaml) + one iSTFT frame
    assert model.mel2wav(mel, finalize=False).shape == (1, step * (40 - holdback))
    for exact in (True, False):
        stream = model.stream_decoder(voice, exact=exact)
        wav = torch.cat([stream.push(codes[:, :20]), stream.push(codes[:, 20:]), stream.finish()], dim=1)
        assert wav.shape == (1, 23 * per_code)


def test_save_pretrained_round_trip_and_auto_classes(tmp_path):
    model = FunAudioChatToken2Wav.from_cosyvoice(TINY_COSYVOICE)
    model.save_pretrained(tmp_path / "hf")
    config = AutoConfig.from_pretrained(tmp_path / "hf")
    assert config.model_type == "funaudiochat_token2wav"
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["dit_dim"] == 64
    assert (tmp_path / "hf" / "model.safetensors").is_file()
    for auto in (AutoModel, AutoModelForAudioTokenization):
        loaded = auto.from_pretrained(tmp_path / "hf")
        assert isinstance(loaded, FunAudioChatToken2Wav)
    data = golden()
    codes, voice = data["in.tokens"], data["in.speaker_embedding"]
    torch.testing.assert_close(loaded.decode(codes, voice=voice), model.decode(codes, voice=voice), atol=1e-5, rtol=0)


def test_bfloat16_keeps_f0_predictor_in_float32(tmp_path):
    model = FunAudioChatToken2Wav.from_cosyvoice(TINY_COSYVOICE, dtype=torch.bfloat16)
    assert model.flow.decoder.estimator.proj_out.weight.dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in model.hift.f0_predictor.parameters())
    assert all(p.dtype == torch.float32 for p in model.hift.m_source.parameters())
    model.save_pretrained(tmp_path / "bf16")
    loaded = FunAudioChatToken2Wav.from_pretrained(tmp_path / "bf16", dtype=torch.bfloat16)
    assert all(p.dtype == torch.float32 for p in loaded.hift.f0_predictor.parameters())
    data = golden()
    wav = loaded.decode(data["in.tokens"], voice=data["in.speaker_embedding"])
    assert wav.dtype == torch.float32 and wav.shape == (1, 37 * 960) and torch.isfinite(wav).all()


def test_conversion_command_both_ways(tmp_path, capsys):
    assert convert_main([str(TINY_COSYVOICE), str(tmp_path / "hf")]) == 0
    assert "parameters" in capsys.readouterr().out
    assert convert_main([str(tmp_path / "hf"), str(tmp_path / "cv"), "--to-cosyvoice"]) == 0
    back = FunAudioChatToken2Wav.from_cosyvoice(tmp_path / "cv")
    original = FunAudioChatToken2Wav.from_cosyvoice(TINY_COSYVOICE)
    for key, value in original.state_dict().items():
        assert torch.equal(back.state_dict()[key], value), key


def test_hub_id_downloads_only_the_three_files(monkeypatch):
    import huggingface_hub

    requested = []

    def fake_download(repo_id, filename, **kwargs):
        requested.append((repo_id, filename, kwargs.get("revision")))
        return str(TINY_COSYVOICE / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    model = FunAudioChatToken2Wav.from_cosyvoice("FunAudioLLM/Fun-CosyVoice3-0.5B-2512", revision="main")
    assert sorted(requested) == [
        ("FunAudioLLM/Fun-CosyVoice3-0.5B-2512", name, "main") for name in ("cosyvoice3.yaml", "flow.pt", "hift.pt")
    ]
    assert model.config.dit_dim == 64
    with pytest.raises(FileNotFoundError, match="neither a CosyVoice3 directory nor a hub repo id"):
        FunAudioChatToken2Wav.from_cosyvoice("/no/such/dir/anywhere")
    with pytest.raises(FileNotFoundError, match="missing cosyvoice3.yaml, flow.pt, hift.pt"):
        FunAudioChatToken2Wav.from_cosyvoice(GOLDEN)
