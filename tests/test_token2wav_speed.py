"""Decoder speed options: the compiled DiT step of streaming, and a half-precision DiT (quality against float32)."""

import torch

from tests.token2wav_testing import TINY_COSYVOICE, random_codes, single_thread, snr_db, stream_chunks  # noqa: F401
from transformers_fac.token2wav import FunAudioChatToken2Wav


def test_compiled_dit_step_streams_the_same_audio():
    """`compile_flow` captures the DiT step whole (`fullgraph`) for every window of a bounded stream: the growing
    first windows and the fixed-shape ones after (150 frames here). Compiled with `aot_eager` (capture without
    inductor's code generation, which `benchmarks/bench_token2wav.py` times), the audio is bitwise the eager one."""
    model = FunAudioChatToken2Wav.from_cosyvoice(TINY_COSYVOICE)
    codes, voice = random_codes(120), torch.randn(192, generator=torch.Generator().manual_seed(2))
    eager, decoder = stream_chunks(model, codes, voice, [40, 80])
    assert [step["flow_frames"] for step in decoder.steps][-3:] == [150, 150, 150]
    model.compile_flow(backend="aot_eager")
    calls = []
    compiled = model.flow.decoder.compiled_estimator
    model.flow.decoder.compiled_estimator = lambda *args, **kwargs: calls.append(1) or compiled(*args, **kwargs)
    again, _ = stream_chunks(model, codes, voice, [40, 80])
    assert len(calls) == model.config.n_timesteps * len(decoder.steps)
    assert torch.equal(torch.cat(again, dim=1), torch.cat(eager, dim=1))


def test_half_precision_dit_keeps_the_mel_close():
    model = FunAudioChatToken2Wav.from_cosyvoice(TINY_COSYVOICE)
    codes, voice = random_codes(50), torch.randn(192, generator=torch.Generator().manual_seed(3))
    reference = model.token2mel(codes, voice)
    model.set_dit_dtype(torch.bfloat16)
    assert model.flow.decoder.estimator.proj_out.weight.dtype == torch.bfloat16
    assert model.flow.input_embedding.weight.dtype == torch.float32
    half = model.token2mel(codes, voice)
    assert half.dtype == torch.float32 and snr_db(reference, half) > 25
