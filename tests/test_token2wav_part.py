"""The token-to-waveform decoder is an explicit part of the model: a frozen submodule that follows `.to()`, is saved
beside (not inside) the LLM checkpoint and reloaded with it, and is loaded once, so that `generate` reads nothing."""

import os
import subprocess
import sys
import textwrap

import torch
from conftest import AUDIO_FILES
from safetensors import safe_open
from transformers import AutoModelForMultimodalLM, AutoProcessor

from transformers_fac import S2M_SYSTEM_PROMPT, FunAudioChatConversation, FunAudioChatToken2Wav

SETTINGS = dict(generation_mode="audio", do_sample=False, max_new_tokens=8, return_dict_in_generate=True)


def question(model_dir):
    chat = FunAudioChatConversation(system_prompt=S2M_SYSTEM_PROMPT)
    chat.add_user_audio(AUDIO_FILES["en"])
    return chat.model_inputs(AutoProcessor.from_pretrained(model_dir))


def test_decoder_is_a_frozen_submodule_outside_the_checkpoint(tiny_e2e_dir, tiny_e2e_model, tmp_path):
    decoder = tiny_e2e_model.token2wav
    assert isinstance(decoder, FunAudioChatToken2Wav) and dict(tiny_e2e_model.named_children())["token2wav"] is decoder
    assert not any(parameter.requires_grad for parameter in decoder.parameters())
    tiny_e2e_model.save_pretrained(tmp_path)
    with (
        safe_open(tmp_path / "model.safetensors", "pt") as saved,
        safe_open(tiny_e2e_dir / "model.safetensors", "pt") as original,
    ):
        assert set(saved.keys()) == set(original.keys()) and not any(k.startswith("token2wav") for k in saved.keys())
    assert {"config.json", "model.safetensors", "spk2info.pt"} <= {
        path.name for path in (tmp_path / "token2wav").iterdir()
    }


def test_saved_and_reloaded_model_speaks_the_same(tiny_e2e_dir, tiny_e2e_model, tmp_path):
    inputs = question(tiny_e2e_dir)
    before = tiny_e2e_model.generate(**inputs, **SETTINGS, voice="中文男")
    tiny_e2e_model.save_pretrained(tmp_path)
    reloaded = AutoModelForMultimodalLM.from_pretrained(tmp_path).eval()
    assert reloaded.token2wav is not None and reloaded.token2wav.voice_names == ["中文女", "中文男"]
    after = reloaded.generate(**inputs, **SETTINGS, voice="中文男")
    assert before.audio[0].numel() == 960 * before.valid_speech_codes()[0].numel() > 0
    assert torch.equal(after.speech_ids, before.speech_ids) and torch.equal(after.audio[0], before.audio[0])


def test_to_carries_the_decoder_along(tiny_e2e_dir):
    model = AutoModelForMultimodalLM.from_pretrained(tiny_e2e_dir).eval()
    codes = torch.randint(
        0, model.config.audio_config.num_speech_codes, (1, 20), generator=torch.Generator().manual_seed(0)
    )
    model.to(torch.bfloat16)
    decoder = model.token2wav
    assert decoder.flow.input_embedding.weight.dtype == torch.bfloat16
    assert decoder.hift.f0_predictor.classifier.weight.dtype == torch.float32  # the f0 path stays float32
    audio = decoder.decode(codes, voice="中文男")
    assert audio.shape == (1, 960 * 20) and audio.float().isfinite().all()
    model.to("meta")  # (the only other device here) every decoder tensor moves too
    assert {parameter.device.type for parameter in decoder.parameters()} == {"meta"}
    assert {buffer.device.type for buffer in decoder.buffers()} == {"meta"}


def test_generate_reads_nothing_from_the_network(tiny_e2e_dir):
    """With `HF_HUB_OFFLINE=1` and every socket refused, a local (cached) model loads, and then generates speech with
    `torch.load`, safetensors and the Hub download disabled: generation loads nothing."""
    script = textwrap.dedent(
        f"""
        import socket
        def refuse(*args, **kwargs):
            raise OSError("network access")
        socket.socket.connect = socket.socket.connect_ex = refuse
        from transformers import AutoModelForMultimodalLM, AutoProcessor
        from transformers_fac import S2M_SYSTEM_PROMPT, FunAudioChatConversation
        model = AutoModelForMultimodalLM.from_pretrained({str(tiny_e2e_dir)!r}).eval()
        chat = FunAudioChatConversation(system_prompt=S2M_SYSTEM_PROMPT)
        chat.add_user_audio({str(AUDIO_FILES["en"])!r})
        inputs = chat.model_inputs(AutoProcessor.from_pretrained({str(tiny_e2e_dir)!r}))
        import huggingface_hub, safetensors.torch, torch
        def loading(*args, **kwargs):
            raise RuntimeError("loading inside generate")
        torch.load = safetensors.torch.load_file = huggingface_hub.hf_hub_download = loading
        out = model.generate(**inputs, **{SETTINGS!r}, voice="中文女")
        print("samples", out.audio[0].numel())
        """
    )
    environment = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=environment, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert int(result.stdout.split("samples")[-1]) > 0
