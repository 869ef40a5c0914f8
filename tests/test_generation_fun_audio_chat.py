from threading import Thread

import pytest
import torch
from conftest import TINY_FAC, full_scenario_inputs, scenario_inputs
from transformers import AutoConfig, AutoModelForMultimodalLM, AutoTokenizer, TextStreamer

from transformers_fac import FunAudioChatForConditionalGeneration, FunAudioChatGenerateOutput, valid_speech_codes
from transformers_fac.streaming import FunAudioChatIteratorStreamer, FunAudioChatStreamer

GENERATION_SCENARIOS = ["s2t_en", "s2t_batch", "s2m_long", "s2m_zh_plain", "s2m_eos"]


def golden_generate(model, golden, scenarios, name, **extra):
    scenario = scenarios[name]
    mode = "text" if scenario["sp_gen_kwargs"].get("disable_speech") else "audio"
    inputs = full_scenario_inputs(golden, scenarios, name)
    return model.generate(
        **inputs, **scenario["generate_kwargs"], generation_mode=mode, return_dict_in_generate=True, **extra
    )


@pytest.mark.parametrize("name", GENERATION_SCENARIOS)
def test_reproduces_the_reference_token_for_token(golden, scenarios, name):
    model = AutoModelForMultimodalLM.from_pretrained(TINY_FAC).eval()
    if name == "s2m_eos":
        with torch.no_grad():
            model.audio_tower.embed_tokens.weight[6562] = golden["s2m_eos.in.speech_eos_embedding_row"]
    output = golden_generate(model, golden, scenarios, name)
    assert torch.equal(output.sequences, golden[f"{name}.out.sequences"])
    expected_speech = golden[f"{name}.out.speech_ids"]
    if expected_speech.numel():
        assert torch.equal(output.speech_ids, expected_speech)
    else:
        assert not isinstance(output, FunAudioChatGenerateOutput) or output.speech_ids.numel() == 0


def test_speech_end_rewrites_the_text_token(golden, scenarios):
    model = AutoModelForMultimodalLM.from_pretrained(TINY_FAC).eval()
    with torch.no_grad():
        model.audio_tower.embed_tokens.weight[6562] = golden["s2m_eos.in.speech_eos_embedding_row"]
    output = golden_generate(model, golden, scenarios, "s2m_eos")
    speech = output.speech_ids[0]
    assert speech[-5:].tolist() == [6562] * 5 and (speech[:-5] != 6562).all()
    prompt_length = golden["s2m_eos.in.input_ids"].shape[1]
    new_text = output.sequences[0, prompt_length:].tolist()
    # One speech group per step from the one whose input is <|audio_bos|> (text index 0) up to and including the
    # step whose text token became <|audio_eos|>.
    assert new_text[0] == 404 and new_text.index(405) == speech.numel() // 5
    assert valid_speech_codes(output.speech_ids)[0].numel() == int(((speech >= 0) & (speech < 6561)).sum())


def test_tuple_outputs_like_the_official_api(golden, scenarios, tiny_model):
    inputs = full_scenario_inputs(golden, scenarios, "s2m_zh_plain")
    sequences, speech_ids = tiny_model.generate(**inputs, generation_mode="audio", do_sample=False, max_new_tokens=6)
    assert sequences.shape == (1, inputs["input_ids"].shape[1] + 6) and speech_ids.shape == (1, 25)
    text_only = tiny_model.generate(**inputs, generation_mode="text", do_sample=False, max_new_tokens=6)
    assert isinstance(text_only, torch.Tensor) and text_only.shape == sequences.shape


def test_forward_after_generate_is_unchanged(golden, scenarios):
    model = AutoModelForMultimodalLM.from_pretrained(TINY_FAC).eval()
    train = scenario_inputs(golden, "train")
    with torch.no_grad():
        before = model(**train)
    golden_generate(model, golden, scenarios, "s2m_long")
    golden_generate(model, golden, scenarios, "s2t_en")
    model.train()
    after = model(**scenario_inputs(golden, "train"))
    after.loss.backward()  # training right after generating works
    assert after.loss.item() == pytest.approx(before.loss.item(), rel=1e-6)
    torch.testing.assert_close(after.speech_logits, before.speech_logits)
    assert model.audio_invert_tower.pre_matching.weight.grad is not None


def _left_pad(rows: list[dict], pad_id: int) -> dict:
    """Builds a left-padded batch from single-prompt processor outputs (audio tensors are per audio, stacked)."""
    width = max(row["input_ids"].shape[1] for row in rows)
    ids, mask = [], []
    for row in rows:
        missing = width - row["input_ids"].shape[1]
        ids.append(torch.nn.functional.pad(row["input_ids"], (missing, 0), value=pad_id))
        mask.append(torch.nn.functional.pad(row["attention_mask"], (missing, 0), value=0))
    speech = max(row["speech_ids"].shape[1] for row in rows)
    batch = {"input_ids": torch.cat(ids), "attention_mask": torch.cat(mask)}
    batch["speech_ids"] = torch.cat(
        [torch.nn.functional.pad(r["speech_ids"], (0, speech - r["speech_ids"].shape[1]), value=6563) for r in rows]
    )
    batch["speech_attention_mask"] = torch.cat(
        [torch.nn.functional.pad(r["speech_attention_mask"], (0, speech - r["speech_ids"].shape[1])) for r in rows]
    )
    for key in ("input_features", "feature_attention_mask", "feature_exist_mask"):
        batch[key] = torch.cat([r[key] for r in rows])
    return batch


def test_batched_audio_generation_equals_one_by_one(golden, scenarios, tiny_model):
    names = ["s2m_long", "s2m_zh_plain", "s2m_eos"]
    rows = [full_scenario_inputs(golden, scenarios, name) for name in names]
    settings = dict(generation_mode="audio", do_sample=False, max_new_tokens=12, repetition_penalty=1.2)
    singles = [tiny_model.generate(**row, **settings, return_dict_in_generate=True) for row in rows]
    batch = _left_pad(rows, pad_id=401)
    batched = tiny_model.generate(**batch, **settings, return_dict_in_generate=True)
    width = batch["input_ids"].shape[1]
    for index, (row, single) in enumerate(zip(rows, singles)):
        prompt = row["input_ids"].shape[1]
        assert batched.sequences[index, width:].tolist() == single.sequences[0, prompt:].tolist()
        assert batched.valid_speech_codes()[index].tolist() == single.valid_speech_codes()[0].tolist()


def test_batched_rows_end_speech_independently(golden, scenarios):
    model = AutoModelForMultimodalLM.from_pretrained(TINY_FAC).eval()
    with torch.no_grad():
        model.audio_tower.embed_tokens.weight[6562] = golden["s2m_eos.in.speech_eos_embedding_row"]
    rows = [full_scenario_inputs(golden, scenarios, name) for name in ("s2m_eos", "s2m_long")]
    settings = dict(
        generation_mode="audio",
        do_sample=False,
        repetition_penalty=1.0,
        max_new_tokens=40,
        return_dict_in_generate=True,
    )
    singles = [model.generate(**row, **settings) for row in rows]
    batched = model.generate(**_left_pad(rows, pad_id=401), **settings)
    for index, single in enumerate(singles):
        assert batched.valid_speech_codes()[index].tolist() == single.valid_speech_codes()[0].tolist()
    # The static caches mask the padded rows alike (the step run uncompiled: no new graph for this batch size).
    static = model.generate(
        **_left_pad(rows, pad_id=401), **settings, cache_implementation="static", disable_compile=True
    )
    assert torch.equal(static.sequences, batched.sequences) and torch.equal(static.speech_ids, batched.speech_ids)
    # Row 0 ended with an EOS group, then only padding groups; row 1 kept speaking.
    ended = batched.speech_ids[0]
    eos_at = (ended == 6562).nonzero()[0].item()
    assert (ended[eos_at : eos_at + 5] == 6562).all() and (ended[eos_at + 5 :] == 6563).all()
    assert (batched.speech_ids[1] < 6561).sum() > (ended < 6561).sum()


class RecordingStreamer(FunAudioChatStreamer):
    def __init__(self):
        super().__init__()
        self.prompt, self.text, self.speech, self.ended = None, [], [], False

    def on_prompt(self, prompt_ids):
        self.prompt = prompt_ids

    def on_text(self, text_ids):
        self.text.append(text_ids.tolist())

    def on_speech(self, codes, speaking):
        self.speech.append(codes)

    def end(self):
        self.ended = True


def test_streamer_receives_exactly_the_output(golden, scenarios):
    model = AutoModelForMultimodalLM.from_pretrained(TINY_FAC).eval()
    with torch.no_grad():
        model.audio_tower.embed_tokens.weight[6562] = golden["s2m_eos.in.speech_eos_embedding_row"]
    streamer = RecordingStreamer()
    output = golden_generate(model, golden, scenarios, "s2m_eos", streamer=streamer)
    prompt = golden["s2m_eos.in.input_ids"]
    assert torch.equal(streamer.prompt, prompt) and streamer.ended
    assert [ids[0] for ids in streamer.text] == output.sequences[0, prompt.shape[1] :].tolist()
    assert 405 in [ids[0] for ids in streamer.text]
    assert torch.equal(torch.cat(streamer.speech, dim=1), output.speech_ids)


def test_iterator_streamer_yields_text_and_codes_while_generating(golden, scenarios, tiny_model):
    tokenizer = AutoTokenizer.from_pretrained(TINY_FAC)
    inputs = full_scenario_inputs(golden, scenarios, "s2m_long")
    streamer = FunAudioChatIteratorStreamer(tokenizer, timeout=60)
    result = {}
    settings = dict(generation_mode="audio", do_sample=False, max_new_tokens=10, return_dict_in_generate=True)
    thread = Thread(target=lambda: result.update(out=tiny_model.generate(**inputs, **settings, streamer=streamer)))
    thread.start()
    chunks = list(streamer)
    thread.join()
    output = result["out"]
    new_ids = output.sequences[0, inputs["input_ids"].shape[1] :].tolist()
    assert [c.text_ids[0] for c in chunks if c.text_ids] == new_ids
    assert "".join(c.text[0] for c in chunks if c.text) == tokenizer.decode(new_ids, skip_special_tokens=True)
    codes = [code for c in chunks if c.speech_codes for code in c.speech_codes[0]]
    assert codes == output.speech_ids[0].tolist()
    # The prefill step only yields <|audio_bos|>; afterwards each step's text comes right before its speech group.
    kinds = ["text" if c.text_ids else "speech" for c in chunks if c.text_ids or c.speech_codes]
    assert kinds == ["text"] + ["text", "speech"] * (len(new_ids) - 1)


def test_plain_transformers_streamer_works_in_audio_mode(golden, scenarios, tiny_model, capsys):
    tokenizer = AutoTokenizer.from_pretrained(TINY_FAC)
    inputs = full_scenario_inputs(golden, scenarios, "s2m_long")
    sequences, _ = tiny_model.generate(
        **inputs,
        generation_mode="audio",
        do_sample=False,
        max_new_tokens=8,
        streamer=TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True),
    )
    printed = capsys.readouterr().out
    assert (
        printed.strip()
        == tokenizer.decode(sequences[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()
    )


def test_speech_sampling_settings(golden, scenarios, tiny_model):
    inputs = full_scenario_inputs(golden, scenarios, "s2m_long")
    common = dict(generation_mode="audio", do_sample=False, max_new_tokens=8, repetition_penalty=1.0)
    greedy = tiny_model.generate(**inputs, **common)[1]
    draws = []
    for seed in (0, 0, 1):
        torch.manual_seed(seed)
        draws.append(
            tiny_model.generate(**inputs, **common, speech_do_sample=True, speech_temperature=1.5, speech_top_k=50)
        )
    assert torch.equal(draws[0][1], draws[1][1])  # seeded sampling is reproducible
    assert not torch.equal(draws[0][1], draws[2][1]) and not torch.equal(draws[0][1], greedy)


def test_speech_defaults_come_from_the_generation_config():
    from transformers import GenerationConfig

    from transformers_fac import SpeechSamplingConfig

    config = GenerationConfig.from_pretrained(TINY_FAC)
    resolved = SpeechSamplingConfig.resolve(config, {})
    assert (resolved.do_sample, resolved.temperature, resolved.top_p, resolved.repetition_penalty) == (
        True,
        0.8,
        0.9,
        1.2,
    )
    names = [type(p).__name__ for p in resolved.processors()]
    assert names == ["RepetitionPenaltyLogitsProcessor", "TemperatureLogitsWarper", "TopPLogitsWarper"]
    config.speech_temperature = 0.5
    assert SpeechSamplingConfig.resolve(config, {"top_p": 0.7}).temperature == 0.5
    assert SpeechSamplingConfig.resolve(config, {"top_p": 0.7}).top_p == 0.7


def test_bad_generation_arguments(golden, scenarios, tiny_model):
    inputs = full_scenario_inputs(golden, scenarios, "s2t_en")
    with pytest.raises(ValueError, match="generation_mode must be one of"):
        tiny_model.generate(**inputs, generation_mode="speech")
    with pytest.raises(ValueError, match="max_new_tokens must be at least 1"):
        tiny_model.generate(**inputs, max_new_tokens=0)
    config = AutoConfig.from_pretrained(TINY_FAC)
    config.audio_config.enable_audio_invert_tower = False
    text_only = FunAudioChatForConditionalGeneration(config).eval()
    with pytest.raises(ValueError, match="needs a speech head"):
        text_only.generate(**inputs, generation_mode="audio", max_new_tokens=2)
    assert text_only.generate(**inputs, generation_mode="text", max_new_tokens=2, do_sample=False).shape[1] == 55
