"""Static caches and the compiled decoding step (`cache_implementation="static"`) against the eager reference.

Every compiled test here uses the tiny checkpoint at batch 1 (audio) or the golden batches (text), whose caches fall in
one bucket, so that they share a handful of graphs (see `decoding_step.compiled_decode_step`).
"""

import pytest
import torch
from conftest import TINY_FAC, full_scenario_inputs
from test_generation_fun_audio_chat import GENERATION_SCENARIOS, golden_generate
from transformers import (
    AutoModelForMultimodalLM,
    CompileConfig,
    StaticCache,
    StoppingCriteria,
    StoppingCriteriaList,
)
from transformers.generation import LogitsProcessorList, RepetitionPenaltyLogitsProcessor

from transformers_fac import FunAudioChatStreamer, SpeechSamplingConfig
from transformers_fac.decoding_cache import static_cache_length
from transformers_fac.speech_sampling import StaticSpeechSampler
from transformers_fac.training import apply_lora, lora_config

STATIC = {"cache_implementation": "static"}


def tiny(golden=None):
    model = AutoModelForMultimodalLM.from_pretrained(TINY_FAC).eval()
    if golden is not None:  # the s2m_eos scenario's model: its speech EOS embedding makes the head stop
        with torch.no_grad():
            model.audio_tower.embed_tokens.weight[6562] = golden["s2m_eos.in.speech_eos_embedding_row"]
    return model


@pytest.mark.parametrize("name", GENERATION_SCENARIOS)
def test_compiled_step_reproduces_the_reference_token_for_token(golden, scenarios, name):
    model = tiny(golden if name == "s2m_eos" else None)
    output = golden_generate(model, golden, scenarios, name, **STATIC)
    assert isinstance(output.cache, StaticCache)
    assert torch.equal(output.sequences, golden[f"{name}.out.sequences"])
    expected_speech = golden[f"{name}.out.speech_ids"]
    if expected_speech.numel():
        assert torch.equal(output.speech_ids, expected_speech)


def test_static_caches_are_bucketed():
    assert [static_cache_length(n) for n in (1, 100, 128, 129, 700)] == [128, 128, 128, 256, 1024]


def test_lora_and_merged_models_decode_like_eager(golden, scenarios):
    """PEFT LoRA layers (LLM and speech head) are captured whole. The wrapped model compiles with `aot_eager`
    (capture and functionalization without inductor's code generation, which the other tests cover; it would be one
    more graph of tens of seconds on a CPU); the merged model is plain again and reuses the default graph."""
    inputs = full_scenario_inputs(golden, scenarios, "s2m_long")
    settings = dict(generation_mode="audio", do_sample=False, max_new_tokens=12, return_dict_in_generate=True)
    torch.manual_seed(0)
    model = apply_lora(tiny(), lora_config("llm+speech_head", r=4, alpha=8, init_lora_weights=False)).eval()
    eager = model.generate(**inputs, **settings)
    captured = CompileConfig(fullgraph=True, backend="aot_eager", mode=None)
    compiled = model.generate(**inputs, **settings, **STATIC, compile_config=captured)
    assert torch.equal(compiled.sequences, eager.sequences) and torch.equal(compiled.speech_ids, eager.speech_ids)
    merged = model.merge_and_unload()
    compiled = merged.generate(**inputs, **settings, **STATIC)
    assert torch.equal(compiled.sequences, eager.sequences) and torch.equal(compiled.speech_ids, eager.speech_ids)


def test_compiled_speech_sampling(golden, scenarios):
    model = tiny()
    inputs = full_scenario_inputs(golden, scenarios, "s2m_long")
    common = dict(generation_mode="audio", do_sample=False, max_new_tokens=8, repetition_penalty=1.0, **STATIC)
    greedy = model.generate(**inputs, **common)[1]
    sampling = dict(speech_do_sample=True, speech_temperature=1.5)
    draws = []
    for seed, top_k in ((0, 50), (0, 50), (1, 50), (0, 1)):
        torch.manual_seed(seed)
        draws.append(model.generate(**inputs, **common, **sampling, speech_top_k=top_k)[1])
    assert torch.equal(draws[0], draws[1])  # seeded sampling is reproducible
    assert not torch.equal(draws[0], draws[2]) and not torch.equal(draws[0], greedy)
    assert torch.equal(draws[3], greedy)  # top-k 1 leaves the greedy choice only


class StopRowAfter(StoppingCriteria):
    """Ends row `row` once it has `steps` new tokens (what a cancelled reply stream does)."""

    def __init__(self, prompt_length: int, row: int, steps: int):
        self.prompt_length, self.row, self.steps, self.calls = prompt_length, row, steps, 0

    def __call__(self, input_ids, scores=None, **kwargs):
        self.calls += 1
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        done[self.row] = input_ids.shape[1] - self.prompt_length >= self.steps
        return done


class Recorder(FunAudioChatStreamer):
    def __init__(self):
        super().__init__()
        self.text, self.speech = [], []

    def on_text(self, text_ids):
        self.text.append(text_ids)

    def on_speech(self, codes, speaking):
        self.speech.append(codes)


def test_compiled_step_checks_stopping_criteria_and_streams_every_step(golden, scenarios):
    model = tiny()
    inputs = full_scenario_inputs(golden, scenarios, "s2m_zh_plain")
    prompt = inputs["input_ids"].shape[1]
    criterion, streamer = StopRowAfter(prompt, row=0, steps=7), Recorder()
    output = model.generate(
        **inputs,
        generation_mode="audio",
        do_sample=False,
        max_new_tokens=30,
        stopping_criteria=StoppingCriteriaList([criterion]),
        streamer=streamer,
        return_dict_in_generate=True,
        **STATIC,
    )
    assert output.sequences.shape[1] == prompt + 7 and criterion.calls == 7
    assert [ids.item() for ids in streamer.text] == output.sequences[0, prompt:].tolist()
    assert torch.equal(torch.cat(streamer.speech, dim=1), output.speech_ids) and output.speech_ids.shape[1] == 30


def test_static_loop_reads_the_device_once_per_step(golden, scenarios, monkeypatch):
    """Flags stay on the device: one host read per step (counted on the same step run uncompiled)."""
    model = tiny()
    inputs = full_scenario_inputs(golden, scenarios, "s2m_zh_plain")
    reads = {"count": 0}
    for name in ("__bool__", "item", "tolist", "cpu", "numpy", "__int__", "__float__"):
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, **kwargs):
            reads["count"] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)

    def host_reads(steps: int) -> int:
        reads["count"] = 0
        model.generate(
            **inputs, generation_mode="audio", do_sample=False, max_new_tokens=steps, disable_compile=True, **STATIC
        )
        return reads["count"]

    assert host_reads(12) - host_reads(6) == 6


def test_warm_up_compiles_ahead_of_requests(golden, scenarios):
    model = tiny()
    model.warm_up(batch_size=1, max_length=128, do_sample=False)
    inputs = full_scenario_inputs(golden, scenarios, "s2m_zh_plain")
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    model.generate(**inputs, generation_mode="audio", do_sample=False, max_new_tokens=20, **STATIC)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == graphs


def test_static_sampler_equals_transformers_processors():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 300, generator=generator) * 4
    history = torch.randint(0, 300, (3, 40), generator=generator)
    group = [torch.randint(0, 300, (3,), generator=generator) for _ in range(2)]
    for settings in (
        dict(repetition_penalty=1.3),
        dict(do_sample=True, repetition_penalty=1.2, temperature=0.7, top_k=20, top_p=0.8, min_p=0.05),
        dict(do_sample=True, top_p=0.5),
    ):
        config = SpeechSamplingConfig(**settings)
        sampler = StaticSpeechSampler(config, 3, 300, torch.device("cpu"))
        sampler.commit(history, torch.ones(3, dtype=torch.bool))
        seen = torch.cat([history, *[code[:, None] for code in group]], dim=1)
        expected = config.processors()(seen, logits.clone())
        penalized = LogitsProcessorList([RepetitionPenaltyLogitsProcessor(config.repetition_penalty or 1.0)])
        if config.do_sample:
            scores = sampler.warp(penalized(seen, logits.clone()))
            assert torch.equal(torch.isinf(scores), torch.isinf(expected))
            torch.testing.assert_close(scores[~torch.isinf(scores)], expected[~torch.isinf(expected)])
        else:
            assert torch.equal(sampler(logits, group), expected.argmax(-1))
