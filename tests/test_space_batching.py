"""The Space's replies go through the shared reply engine: users who ask together share decoding steps, a stopped
reply frees its row, the function-calling tab's written replies too (tiny checkpoint, CPU)."""

import sys
import threading
from pathlib import Path

import pytest

DEMO = Path(__file__).resolve().parents[1] / "spaces_demo"
sys.path.insert(0, str(DEMO))

from engine import Engine, Settings  # noqa: E402

from tests.serving_utils import QUESTION  # noqa: E402
from transformers_fac.audio_io import load_audio  # noqa: E402
from transformers_fac.conversation import FunAudioChatConversation  # noqa: E402
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
