"""The quantization switch everywhere, on the tiny checkpoint with torchao int8 (CPU): `fac-chat --quantize`, the
server's batching engine, the Space's setting, save/reload, and the compiled decoding step."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import AUDIO_FILES
from test_quantization import backbone_linears, quantized_linears
from transformers import AutoModelForMultimodalLM, AutoProcessor

from tests.serving_utils import QUESTION
from transformers_fac import S2M_SYSTEM_PROMPT, FunAudioChatConversation
from transformers_fac.audio_io import load_audio
from transformers_fac.engine import AudioDelta, ReplyDone, ReplyEngine, ReplyRequest, TextDelta
from transformers_fac.prompts import AUDIO_TEMPLATE
from transformers_fac.quantization import quantization_config
from transformers_fac.serving import ServerSettings
from transformers_fac.serving.loading import load

DEMO = Path(__file__).resolve().parents[1] / "spaces_demo"
GREEDY = {"do_sample": False, "speech_do_sample": False}


def run_cli(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "transformers_fac.cli", *map(str, args)], capture_output=True, text=True, cwd=cwd
    )


def test_fac_chat_quantize_int8_answers_a_question(tmp_path):
    question = Path(__file__).resolve().parents[1] / "examples" / "question_en.wav"
    result = run_cli(question, "--model", "tiny", "--quantize", "int8", "--max-new-tokens", 8, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "(float32, int8 backbone)" in result.stderr and result.stdout.strip()
    waveform, rate = sf.read(tmp_path / "reply.wav", dtype="float32")
    assert rate == 24000 and len(waveform) > 0 and len(waveform) % 960 == 0 and np.abs(waveform).max() > 0


def test_fac_chat_says_why_int4_cannot_run_on_a_cpu(tmp_path):
    result = run_cli(QUESTION, "--model", "tiny", "--quantize", "int4", "--device", "cpu", cwd=tmp_path)
    assert result.returncode == 2 and "CUDA" in result.stderr and "Loading" not in result.stderr
    assert not (tmp_path / "reply.wav").exists()


def test_the_engine_serves_a_quantized_model_like_its_generate():
    """`fac-serve --quantize int8`: the reply engine's greedy spoken replies (two in one batch) have the words
    and the number of speech codes of the quantized model's own `generate`."""
    with pytest.raises(ValueError, match="quantize must be one of"):
        ServerSettings(quantize="int3")
    loaded = load(ServerSettings(model="tiny", quantize="int8", max_new_tokens=12))
    assert quantized_linears(loaded.model) == backbone_linears(loaded.model)
    processor, model = loaded.processor, loaded.model
    messages = [{"role": "system", "content": S2M_SYSTEM_PROMPT}, {"role": "user", "content": AUDIO_TEMPLATE}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    audios = [load_audio(QUESTION), load_audio(AUDIO_FILES["zh"])]
    engine = ReplyEngine(model, processor, max_batch_size=2).start()
    try:
        replies = [engine.submit(ReplyRequest(text, [audio], max_new_tokens=12, temperature=0)) for audio in audios]
        events = [list(reply) for reply in replies]
    finally:
        assert engine.close(timeout=120)
    assert engine.stats.largest_batch == 2
    for audio, reply in zip(audios, events):
        done = reply[-1]
        assert isinstance(done, ReplyDone) and done.speech_codes > 0
        assert done.text == "".join(event.text for event in reply if isinstance(event, TextDelta))
        samples = sum(len(event.audio) for event in reply if isinstance(event, AudioDelta))
        assert samples == done.audio_samples == 960 * done.speech_codes
        inputs = processor(text=text, audio=[audio], return_tensors="pt")
        out = model.generate(
            **inputs, generation_mode="audio", max_new_tokens=12, return_dict_in_generate=True, **GREEDY
        )
        expected = processor.decode(out.sequences[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        assert done.text == expected.strip() and done.speech_codes == out.valid_speech_codes()[0].numel()


def test_space_setting_loads_a_quantized_model(monkeypatch):
    monkeypatch.syspath_prepend(str(DEMO))
    from engine import Engine, Settings

    settings = Settings.from_env({"FAC_MODEL": "tiny", "FAC_QUANTIZE": "int8", "FAC_BATCH_SIZE": "1"})
    assert settings.quantize == "int8" and Settings.from_env({}).quantize is None
    engine = Engine.load(settings)
    try:
        assert quantized_linears(engine.model) == backbone_linears(engine.model)
    finally:
        engine.close()


def test_int8_saves_and_reloads_quantized(tmp_path, tiny_e2e_dir):
    model = AutoModelForMultimodalLM.from_pretrained(tiny_e2e_dir, quantization_config=quantization_config("int8"))
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForMultimodalLM.from_pretrained(tmp_path).eval()
    assert quantized_linears(reloaded) == backbone_linears(reloaded) and reloaded.token2wav is not None
    from safetensors import safe_open

    with safe_open(tmp_path / "model.safetensors", "pt") as saved:
        assert not [key for key in saved.keys() if key.startswith("token2wav.")]  # the decoder has its own folder
    inputs = {"input_ids": torch.tensor([[1, 2, 3, 4, 5]])}
    with torch.no_grad():
        assert torch.equal(model.eval()(**inputs).text_logits, reloaded(**inputs).text_logits)


def test_compiled_step_decodes_an_int8_model_like_eager(tiny_e2e_dir):
    """torchao's int8 weights inside the compiled step (static caches): the same text and speech ids as eager."""
    model = AutoModelForMultimodalLM.from_pretrained(
        tiny_e2e_dir, quantization_config=quantization_config("int8"), token2wav=None
    ).eval()
    chat = FunAudioChatConversation(system_prompt=S2M_SYSTEM_PROMPT)
    chat.add_user_audio(AUDIO_FILES["long"])
    inputs = chat.model_inputs(AutoProcessor.from_pretrained(tiny_e2e_dir))
    kwargs = dict(generation_mode="audio", max_new_tokens=6, return_dict_in_generate=True, return_audio=False)
    eager = model.generate(**inputs, **kwargs, **GREEDY)
    compiled = model.generate(**inputs, **kwargs, **GREEDY, cache_implementation="static")
    assert torch.equal(compiled.sequences, eager.sequences) and torch.equal(compiled.speech_ids, eager.speech_ids)
