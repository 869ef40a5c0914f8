"""The Space's replies go through the shared reply engine: users who ask together share decoding steps, a stopped
reply frees its row, the function-calling tab's written replies too (tiny checkpoint, CPU)."""

import multiprocessing
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

DEMO = Path(__file__).resolve().parents[1] / "spaces_demo"
sys.path.insert(0, str(DEMO))

from engine import Engine, Settings  # noqa: E402

from tests.serving_utils import QUESTION  # noqa: E402
from transformers_fac.audio_io import load_audio  # noqa: E402
from transformers_fac.conversation import FunAudioChatConversation  # noqa: E402
from transformers_fac.engine import AudioDelta, ReplyDone, TextDelta, merge_deltas  # noqa: E402
from transformers_fac.prompts import S2M_SYSTEM_PROMPT, S2T_SYSTEM_PROMPT  # noqa: E402


@pytest.fixture(scope="module")
def engine():
    engine = Engine.load(Settings(model="tiny", max_new_tokens=12, batch_size=8, concurrency=8))
    yield engine
    engine.close()


def inputs(engine, system: str = S2M_SYSTEM_PROMPT):
    chat = FunAudioChatConversation(system_prompt=system)
    chat.add_user_audio(load_audio(QUESTION))
    return chat.model_inputs(engine.processor)


def test_users_asking_together_share_a_batch(engine):
    replies, barrier = {}, threading.Barrier(8)

    def user(index: int):
        barrier.wait()
        chunks = list(engine.speak(inputs(engine), spoken=True, voice="中文女"))
        replies[index] = (
            "".join(chunk.text for chunk in chunks),
            sum(len(chunk.audio) for chunk in chunks if chunk.audio is not None),
        )

    users = [threading.Thread(target=user, args=(index,)) for index in range(8)]
    for thread in users:
        thread.start()
    for thread in users:
        thread.join(300)
    stats = engine.replies.stats
    assert len(set(replies.values())) == 1 and replies[0][1] > 0  # the same greedy reply for all eight
    # they shared decoding steps: far fewer steps than eight replies one after the other
    assert stats.largest_batch > 1 and stats.batches < 2 * engine.settings.max_new_tokens


def test_a_stopped_reply_frees_its_row_and_tools_are_written(engine):
    stats = engine.replies.stats
    cancelled = stats.cancelled
    stream = engine.speak(inputs(engine), spoken=True, voice="中文男")
    assert next(chunk for chunk in stream if chunk.text)  # the reply has started
    stream.close()  # the stop button / a barge-in
    written = engine.write(inputs(engine, S2T_SYSTEM_PROMPT))
    assert isinstance(written, str) and stats.cancelled == cancelled + 1


def test_a_turn_during_a_long_reply_speaks_before_it_ends():
    """Through the Space's engine: while one user's 60-step spoken reply decodes, another user's turn joins at the
    next step, speaks before that reply ends, and gets the reply it gets alone."""
    long_engine = Engine.load(Settings(model="tiny", max_new_tokens=60, batch_size=4, concurrency=4))
    try:
        question = inputs(long_engine, S2T_SYSTEM_PROMPT)
        alone = "".join(event.text for event in long_engine.speak(question, spoken=True, voice="中文男"))
        first = long_engine.speak(inputs(long_engine), spoken=True, voice="中文女")
        next(event for event in first if event.audio is not None)  # the long reply is speaking
        long_ended = []
        reader = threading.Thread(target=lambda: (list(first), long_ended.append(time.monotonic())))
        reader.start()  # the long reply's page, reading it to its end
        second, text, second_spoke = long_engine.speak(question, spoken=True, voice="中文男"), "", None
        for event in second:
            text += event.text
            if event.audio is not None and second_spoke is None:
                second_spoke = time.monotonic()
        reader.join(300)
    finally:
        long_engine.close()
    assert second_spoke < long_ended[0]  # the second turn spoke before the long reply ended
    assert long_engine.replies.stats.largest_batch == 2  # it joined the long reply's batch
    assert text == alone


def test_the_compiled_engine_serves_the_space(engine, monkeypatch):
    """`FAC_COMPILE=1` (`--compile`): the shared engine decodes fixed slots through the compiled step, compiled at
    start-up, and a turn gets the reply the eager engine gives (dynamo's graph run as traced: inductor would take
    minutes on this CPU)."""
    from transformers import CompileConfig

    import transformers_fac.decoding_step as decoding_step

    monkeypatch.setattr(decoding_step, "default_compile_config", lambda device: CompileConfig(backend="eager"))
    settings = Settings.from_env({"FAC_MODEL": "tiny", "FAC_MAX_NEW_TOKENS": "12", "FAC_COMPILE": "1"})
    assert settings.compile and not Settings.from_env({}).compile
    compiled = Engine.load(settings)
    try:
        assert compiled.replies.compiled and compiled.replies.stats.batches > 0  # warmed up before the first turn
        question = inputs(engine)
        expected = list(engine.speak(question, spoken=True, voice="中文女"))
        got = list(compiled.speak(question, spoken=True, voice="中文女"))
    finally:
        compiled.close()
    assert "".join(event.text for event in got) == "".join(event.text for event in expected)
    audio = [sum(len(event.audio) for event in events if event.audio is not None) for events in (got, expected)]
    assert audio[0] == audio[1] > 0


def test_the_space_engine_with_a_decoder_process(engine):
    """`FAC_DECODER_PROCESS=1` (`--decoder-process`): the shared engine decodes audio after each first chunk in a
    child process; a turn gets the reply the engine without it gives, and closing stops the child."""
    settings = Settings.from_env({"FAC_MODEL": "tiny", "FAC_MAX_NEW_TOKENS": "12", "FAC_DECODER_PROCESS": "1"})
    assert settings.decoder_process and not Settings.from_env({}).decoder_process
    with_process = Engine.load(settings)
    try:
        assert len(multiprocessing.active_children()) == 1
        question = inputs(engine)
        expected = list(engine.speak(question, spoken=True, voice="中文女"))
        got = list(with_process.speak(question, spoken=True, voice="中文女"))
    finally:
        with_process.close()
    assert multiprocessing.active_children() == []
    assert "".join(event.text for event in got) == "".join(event.text for event in expected)
    audio = [np.concatenate([e.audio for e in events if e.audio is not None]) for events in (got, expected)]
    assert audio[0].shape == audio[1].shape and audio[0].size > 0
    np.testing.assert_allclose(audio[0], audio[1], rtol=0, atol=1e-5)


def test_a_reader_behind_the_engine_gets_what_piled_up_as_one_update(engine):
    """A page slower than the engine (its updates take time) receives the text and the audio that piled up meanwhile
    as one text event and one audio event: fewer updates, the same reply."""
    question = inputs(engine)
    quick = list(engine.speak(question, spoken=True, voice="中文女"))
    slow = []
    for event in engine.speak(question, spoken=True, voice="中文女"):
        slow.append(event)
        time.sleep(0.3)  # a page update that takes longer than the engine's steps
    assert len(slow) < len(quick)
    for events in (slow, quick):
        assert all(isinstance(event, TextDelta | AudioDelta) for event in events)
    assert "".join(event.text for event in slow) == "".join(event.text for event in quick)
    audio = [np.concatenate([e.audio for e in events if e.audio is not None]) for events in (slow, quick)]
    assert audio[0].shape == audio[1].shape and np.array_equal(audio[0], audio[1])


def test_merge_deltas_keeps_order_and_the_final_event():
    first, second = np.arange(3, dtype=np.float32), np.arange(3, 5, dtype=np.float32)
    done = ReplyDone("ab", "ab", "stop", 1, 0, 2)
    merged = merge_deltas([TextDelta("a"), AudioDelta(first, 24000), TextDelta("b"), AudioDelta(second, 24000), done])
    assert [type(event) for event in merged] == [TextDelta, AudioDelta, ReplyDone]
    assert merged[0].text == "ab" and merged[1].audio.tolist() == [0, 1, 2, 3, 4] and merged[2] is done
    assert merge_deltas([TextDelta("x")]) == [TextDelta("x")] and merge_deltas([]) == []
