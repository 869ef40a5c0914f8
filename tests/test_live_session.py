"""The live conversation engine: turn detection, audio windows, Silero VAD, and scripted timelines fed through a
`VoiceSession` on the tiny end-to-end checkpoint faster than real time (the session's clock is the audio fed)."""

import threading

import numpy as np
import pytest
from live_testing import chunks, clip, silence, timeline, two_questions
from transformers import AutoProcessor

from transformers_fac import FunAudioChatConversation
from transformers_fac.live import AudioWindows, TurnDetector, TurnSettings, VoiceActivity, VoiceSession
from transformers_fac.live.vad import WINDOW

SPEECH, QUIET = -20.0, -50.0


def detect(probabilities, levels=None, echo_risk=False, **settings):
    detector = TurnDetector(TurnSettings(**settings))
    levels = levels or [SPEECH] * len(probabilities)
    return [
        (decision, index)
        for index, (p, level) in enumerate(zip(probabilities, levels))
        if (decision := detector.push(p, level, index * WINDOW, echo_risk))
    ], detector


# ------------------------------------------------------------------------------------------------- turn detection
def test_turn_starts_after_min_speech_and_ends_after_the_silence():
    events, detector = detect([0.9] * 2 + [0.1] * 5 + [0.9] * 20 + [0.4] * 3 + [0.9] * 5 + [0.0] * 30)
    # a 64 ms blip is ignored; 200 ms of speech -> started at the run's first window; the 0.4 windows (between the
    # two thresholds) neither end the turn nor count as silence; 0.6 s of silence -> 19 windows after the last speech
    assert events == [("speech_started", 13), ("turn_ended", 53)]
    assert detector.speech_start == 7 * WINDOW and detector.speech_end == 35 * WINDOW


def test_max_turn_length_and_configurable_silence():
    events, _ = detect([0.9] * 100, max_turn_s=1.0)
    assert events == [("speech_started", 6), ("turn_ended", 31)]  # 32 windows = 1.024 s
    events, _ = detect([0.9] * 10 + [0.0] * 60, silence_s=1.5)
    assert events == [("speech_started", 6), ("turn_ended", 56)]


def test_echo_gate_ignores_quiet_or_uncertain_speech_while_a_reply_plays():
    quiet = detect([0.95] * 20, [QUIET] * 20, echo_risk=True)[0]
    uncertain = detect([0.8] * 20, echo_risk=True)[0]
    loud = detect([0.95] * 20, echo_risk=True)[0]
    assert quiet == [] and uncertain == [] and loud == [("speech_started", 6)]
    assert detect([0.95] * 20, [QUIET] * 20)[0] == [("speech_started", 6)]  # echo cancelled: level does not matter


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="silence_s"):
        TurnSettings(silence_s=0)
    with pytest.raises(ValueError, match="speech_threshold"):
        TurnSettings(speech_threshold=1.5)


# ------------------------------------------------------------------------------------------------- audio in, VAD
def test_windows_are_the_same_for_any_chunking_rate_and_format():
    audio = clip("en")[: 16000 * 2]
    reference = np.concatenate(AudioWindows().push(audio, 16000))
    assert len(reference) == 62 * WINDOW and np.array_equal(reference, audio[: len(reference)])
    resampled = []
    for sizes in ([4800], [1777, 333, 9001]):
        windows = AudioWindows()
        resampled.append(np.concatenate([w for c in chunks(audio, 48000, sizes) for w in windows.push(c, 48000)]))
    assert np.array_equal(resampled[0], resampled[1])
    stereo = np.stack([audio, audio], axis=1)
    assert np.array_equal(np.concatenate(AudioWindows().push(stereo, 16000)), reference)


def test_silero_scores_speech_and_silence():
    vad = VoiceActivity()
    speech = [vad(w) for w in AudioWindows().push(clip("en"), 16000)]
    vad.reset()
    quiet = [vad(w) for w in AudioWindows().push(silence(1.0), 16000)]
    assert np.mean(np.array(speech) > 0.5) > 0.6 and max(quiet) < 0.1


def test_missing_silero_names_the_extra(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "silero_vad", None)
    with pytest.raises(ImportError, match=r"transformers-fac\[live\]"):
        VoiceActivity()


# ------------------------------------------------------------------------------------------------- the engine
@pytest.fixture(scope="module")
def processor(tiny_e2e_dir):
    return AutoProcessor.from_pretrained(tiny_e2e_dir)


def run(session: VoiceSession, audio: np.ndarray, rate: int, sizes: list[int]):
    events = []
    for chunk in chunks(audio, rate, sizes):
        events += session.feed(chunk, rate)
    return events + session.finish()


def summary(events):
    """What must not depend on the chunking or the speed of the machine: every event, at its clock time."""
    return [
        (e.type, e.turn, round(e.time, 4), e.text, e.heard_s, None if e.audio is None else e.audio.size)
        for e in events
    ]


def greedy_text(model, processor, conversation) -> str:
    inputs = conversation.model_inputs(processor)
    out = model.generate(**inputs, generation_mode="audio", max_new_tokens=12, return_audio=False)
    return processor.decode(out[0][0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()


def test_scripted_barge_in_timeline(tiny_e2e_model, processor):
    """Question, pause (the reply starts), a second question interrupts it, pause, the second reply; twice, with
    different chunkings: the same turns, the same history."""
    runs = []
    for sizes in ([4800], [1777, 333, 9001]):  # 100 ms chunks; irregular chunks
        session = VoiceSession(tiny_e2e_model, processor, realtime=False, max_new_tokens=12)
        with session:
            events = run(session, two_questions(), 48000, sizes)
            history = [(len(turn.audio), turn.reply) for turn in session.conversation.turns]
        runs.append((events, history, session))
    (events, history, session), (other_events, other_history, _) = runs
    assert summary(events) == summary(other_events) and history == other_history

    order = [(e.type, e.turn) for e in events if e.type not in ("text", "audio")]
    assert order == [
        ("speech_started", 1),
        ("speech_stopped", 1),
        ("reply_started", 1),
        ("interrupted", 1),
        ("speech_started", 2),
        ("speech_stopped", 2),
        ("reply_started", 2),
        ("reply_done", 2),
    ]
    by_type = {}
    for event in events:
        by_type.setdefault((event.type, event.turn), []).append(event)
    # the user's turns are the two questions (plus the pre-roll and tail), cut where the pauses are
    for turn, name, start in ((1, "en", 0.5), (2, "zh", 0.5 + len(clip("en")) / 16000 + 1.5)):
        started, stopped = by_type[("speech_started", turn)][0], by_type[("speech_stopped", turn)][0]
        assert abs(started.time - start) < 0.3
        assert abs(len(stopped.audio) - len(clip(name))) < 0.6 * 16000
        assert by_type[("reply_started", turn)][0].time == pytest.approx(stopped.time + 0.6, abs=0.1)
    # the first reply played from its first audio until the barge-in; the text heard is what history keeps
    first_audio = by_type[("audio", 1)][0]
    interrupted = by_type[("interrupted", 1)][0]
    assert interrupted.heard_s == pytest.approx(interrupted.time - first_audio.time, abs=1e-6)
    assert 1.0 < interrupted.heard_s < 2.5 and first_audio.latency > 0
    written = "".join(e.text for e in by_type[("text", 1)]).strip()
    assert interrupted.text and written.startswith(interrupted.text)
    # the history: question 1 with the part of reply 1 that was heard, then question 2 with reply 2
    assert [reply for _, reply in history] == [interrupted.text, by_type[("reply_done", 2)][0].text]
    assert history[1][0] == len(by_type[("speech_stopped", 2)][0].audio)
    # the second reply answers the second question, in the context of the first exchange
    chat = FunAudioChatConversation(system_prompt=session.conversation.system_prompt)
    chat.add_user_audio(by_type[("speech_stopped", 1)][0].audio)
    chat.add_assistant_reply(interrupted.text)
    chat.add_user_audio(by_type[("speech_stopped", 2)][0].audio)
    assert history[1][1] == greedy_text(tiny_e2e_model, processor, chat)
    assert "".join(e.text for e in by_type[("text", 2)]).strip() == history[1][1]
    assert not [t.name for t in threading.enumerate() if t.name in ("fac-generate", "fac-live-reply")]


def test_playback_delay_shifts_what_was_heard(tiny_e2e_model, processor):
    """A client that plays reply audio `playback_delay_s` after receiving it: the same barge-in finds the reply heard
    that much less (it was still playing later), and the session refuses a negative delay."""
    heard = {}
    for delay in (0.0, 0.5):
        with VoiceSession(
            tiny_e2e_model, processor, realtime=False, playback_delay_s=delay, max_new_tokens=12
        ) as session:
            events = run(session, two_questions(), 16000, [1600])
        heard[delay] = next(e for e in events if e.type == "interrupted").heard_s
    assert heard[0.0] > 1.0 and heard[0.0] - heard[0.5] == pytest.approx(0.5, abs=1e-6), heard
    with pytest.raises(ValueError, match="playback_delay_s"):
        VoiceSession(tiny_e2e_model, processor, playback_delay_s=-1.0)


def test_without_echo_cancellation_a_quiet_voice_does_not_interrupt(tiny_e2e_model, processor):
    """The reply is playing through speakers; the microphone hears it back quietly (-25 dB): no barge-in. The same
    audio with echo cancellation on is the user talking: it interrupts."""
    audio = timeline(silence(0.3), clip("en"), silence(1.2), clip("zh", gain_db=-25)[: 16000 * 2], silence(0.5))
    results = {}
    for echo_cancelled in (False, True):
        with VoiceSession(
            tiny_e2e_model, processor, realtime=False, echo_cancelled=echo_cancelled, max_new_tokens=30
        ) as session:
            events = run(session, audio, 16000, [320])
        results[echo_cancelled] = [e.type for e in events if e.type in ("speech_started", "interrupted")]
    assert results[False] == ["speech_started"]
    assert results[True] == ["speech_started", "interrupted", "speech_started"]


def test_text_replies_stop_button_and_close(tiny_e2e_model, processor):
    with VoiceSession(tiny_e2e_model, processor, reply_mode="text", realtime=False, max_new_tokens=6) as session:
        events = run(session, timeline(silence(0.3), clip("en")), 16000, [512])  # finish() ends the turn
        assert [e.type for e in events if e.type != "text"] == [
            "speech_started",
            "speech_stopped",
            "reply_started",
            "reply_done",
        ]
        done = events[-1]
        assert done.latency > 0 and done.text == "".join(e.text for e in events if e.type == "text").strip()
        assert session.state == "listening" and session.conversation.turns[-1].reply == done.text
    with pytest.raises(ValueError, match="`voice` chooses the voice of spoken replies"):
        VoiceSession(tiny_e2e_model, processor, reply_mode="text", voice="中文女")

    session = VoiceSession(tiny_e2e_model, processor, max_new_tokens=400)  # real time: feed never waits
    session.feed(timeline(silence(0.3), clip("en"), silence(0.8)), 16000)
    assert session.state in ("thinking", "speaking")
    stopped = session.interrupt()
    assert [e.type for e in stopped] == ["interrupted"] and session.state == "listening"
    session.close()
    assert not [t.name for t in threading.enumerate() if t.name in ("fac-generate", "fac-live-reply")]
    assert len(session.stop_latencies) == 1
