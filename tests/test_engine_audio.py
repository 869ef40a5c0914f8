"""The engine's audio on the tiny decoder: a new reply's first chunk is decoded on the engine's thread at the step
that completes it, without waiting for the audio thread; later chunks with audio in hand wait for a starting reply;
every reply's events keep the order of the engine's steps (a step's text, then the audio its codes completed) and its
audio is what its stream decoder gives alone."""

import threading

import pytest
import torch

from transformers_fac.engine.audio import AudioWorker
from transformers_fac.engine.replies import AudioDelta, Reply, ReplyDone, ReplyRequest, TextDelta
from transformers_fac.serving import ServerSettings
from transformers_fac.serving.loading import load


@pytest.fixture(scope="module")
def token2wav():
    return load(ServerSettings(model="tiny")).model.token2wav


class LoggedReply(Reply):
    """Logs every event, and for each audio chunk the thread that emitted it (name, torch threads); `hold`: its
    second audio chunk keeps the thread emitting it (the audio thread) waiting until the event is set."""

    def __init__(self, log: list, hold: threading.Event | None = None):
        super().__init__(ReplyRequest())
        self.log, self.hold, self.held = log, hold, threading.Event()
        self.chunk_threads: list[tuple[str, int]] = []

    def emit(self, event) -> None:
        self.log.append((self.id, event))
        super().emit(event)
        if isinstance(event, AudioDelta):
            self.chunk_threads.append((threading.current_thread().name, torch.get_num_threads()))
            if self.hold is not None and len(self.chunk_threads) == 2:
                self.held.set()
                self.hold.wait(120)


def feed(worker: AudioWorker, reply: Reply, codes: list[int], steps: range) -> None:
    """The engine's commands for these steps of a spoken reply: its text, its 5 codes, the step marker."""
    for step in steps:
        worker.text(reply, f"<{step}>")
        worker.push(reply, codes[5 * step : 5 * step + 5])
        worker.step()


def expected_order(codes: int) -> list[str]:
    """A reply's events in the engine's step order: text of step s, then the chunk its codes completed (the first
    after 18 codes, then every 15), the last audio and done."""
    order, needed = [], 18
    for step in range(codes // 5):
        order.append(f"<{step}>")
        while 5 * (step + 1) >= needed:
            order.append("audio")
            needed += 15
    return [*order, "audio", "done"]


def test_a_new_reply_first_chunk_does_not_wait_for_the_audio_thread(token2wav):
    """The audio thread is held inside a playing reply's second chunk while more of its chunks pile up; a new reply's
    first chunk is decoded meanwhile, at the step that completes it, on the engine's thread (here the test's)."""
    generator = torch.Generator().manual_seed(0)
    codes = {name: torch.randint(0, 6561, (90,), generator=generator).tolist() for name in ("playing", "new")}
    log, release, failures = [], threading.Event(), []
    playing, new = LoggedReply(log, hold=release), LoggedReply(log)
    worker = AudioWorker(token2wav, failures.append, threads=1)
    try:
        worker.open(playing, "中文女", exact=False)
        feed(worker, playing, codes["playing"], range(7))  # 35 codes: its first chunk (here), its second (held)
        assert playing.held.wait(120)
        feed(worker, playing, codes["playing"], range(7, 18))  # four more chunks due meanwhile
        worker.open(new, "中文男", exact=False)
        feed(worker, new, codes["new"], range(18))
        spoke_while_held = any(key == new.id and isinstance(event, AudioDelta) for key, event in log)
        done = lambda samples: ReplyDone("", "", "stop", 0, 0, 0, audio_samples=samples)  # noqa: E731
        worker.finish([(playing, done), (new, done)])
        release.set()
        events = {reply.id: list(reply) for reply in (playing, new)}
    finally:
        release.set()
        worker.close()
    assert failures == [] and spoke_while_held
    audio_log = [(key, event) for key, event in log if isinstance(event, AudioDelta)]
    first_new = next(index for index, (key, _) in enumerate(audio_log) if key == new.id)
    assert [key for key, _ in audio_log[:first_new]] == [playing.id, playing.id]  # its first chunk, the held one
    here = threading.current_thread().name
    for name, reply, voice in (("playing", playing, "中文女"), ("new", new, "中文男")):
        names = [
            event.text if isinstance(event, TextDelta) else "audio" if isinstance(event, AudioDelta) else "done"
            for event in events[reply.id]
        ]
        assert names == expected_order(90)
        audio = torch.cat(
            [torch.from_numpy(event.audio) for event in events[reply.id] if isinstance(event, AudioDelta)]
        )
        stream = token2wav.stream_decoder(voice)
        pieces = [stream.push(codes[name][i : i + 5]) for i in range(0, 90, 5)]
        alone = torch.cat([*pieces, stream.finish()], dim=1)[0]
        assert audio.shape == alone.shape and events[reply.id][-1].audio_samples == audio.numel() == 90 * 960
        error = (audio - alone).pow(2).mean()
        assert error == 0 or 10 * torch.log10(alone.pow(2).mean() / error) > 40
        # the first chunk on the engine's thread, the rest on the audio thread with its own torch setting
        assert reply.chunk_threads[0][0] == here and set(reply.chunk_threads[1:]) == {("fac-audio", 1)}


def test_later_chunks_with_audio_in_hand_wait_for_a_starting_reply(token2wav):
    """While a reply starts (opened, its first chunk not complete yet), a playing reply's due chunk waits as long as its
    listener keeps more than `HOLD_MARGIN` of audio in hand, so that the new reply's first steps run without the
    decoder competing; once the new reply's first chunk is due it is decoded at once (on the engine's thread, here the
    test's), then the held one."""
    generator = torch.Generator().manual_seed(1)
    codes = {name: torch.randint(0, 6561, (400,), generator=generator).tolist() for name in ("playing", "new")}
    log, failures = [], []
    playing, new = LoggedReply(log), LoggedReply(log)
    worker = AudioWorker(token2wav, failures.append, threads=1)
    try:
        worker.open(playing, "中文女", exact=False)
        feed(worker, playing, codes["playing"], range(60))  # 300 codes: 12 s of audio, decoded well ahead of playback

        def decoded() -> int:
            return sum(1 for key, event in log if key == playing.id and isinstance(event, AudioDelta))

        for _ in range(1200):
            if decoded() == 19:  # every complete chunk of 300 codes ((300 - 18) // 15 + 1)
                break
            threading.Event().wait(0.1)
        assert decoded() == 19
        worker.open(new, "中文男", exact=False)
        feed(worker, new, codes["new"], range(3))  # 15 codes: its first chunk needs 18
        feed(worker, playing, codes["playing"], range(60, 63))  # the playing reply's next chunk is due
        threading.Event().wait(0.5)  # time enough to decode it, were it not held
        held = decoded() == 19
        feed(worker, new, codes["new"], range(3, 4))  # the new reply's first chunk is due: it goes first
        done = lambda samples: ReplyDone("", "", "stop", 0, 0, 0, audio_samples=samples)  # noqa: E731
        worker.finish([(playing, done), (new, done)])
        list(playing), list(new)
    finally:
        worker.close()
    assert failures == [] and held
    later = [key for key, event in log if isinstance(event, AudioDelta)][19:]
    assert later[0] == new.id and playing.id in later  # the new reply's first chunk before the held one
