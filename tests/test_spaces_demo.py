"""The Gradio Space in `spaces_demo/`: turn handling, the app driven through `gradio_client` on the tiny checkpoint
(CPU), the Space files, and the page rendered by headless Chromium from `python spaces_demo/app.py`."""

import contextlib
import copy
import dataclasses
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import soundfile as sf  # noqa: E402
import yaml  # noqa: E402

DEMO = Path(__file__).resolve().parents[1] / "spaces_demo"
sys.path.insert(0, str(DEMO))

import app  # noqa: E402
import chat_logic as logic  # noqa: E402
from engine import Engine, Settings  # noqa: E402
from session_files import session_folder  # noqa: E402
from space_testing import app_process, free_port  # noqa: E402
from your_voice import YourVoices  # noqa: E402

from transformers_fac.engine import AudioDelta, TextDelta  # noqa: E402
from transformers_fac.prompts import S2T_SYSTEM_PROMPT, SPOKEN_S2M_PROMPT  # noqa: E402

QUESTION_EN = DEMO / "examples" / "question_en.wav"
QUESTION_ZH = DEMO / "examples" / "question_zh.wav"
MAX_NEW_TOKENS = 10
pytestmark = pytest.mark.filterwarnings(  # raised inside gradio's queue by pandas 3
    "ignore:.*no_silent_downcasting:DeprecationWarning", "ignore:The copy keyword is deprecated:DeprecationWarning"
)


# ------------------------------------------------------------------------------------------------- turn handling
def test_system_prompt_presets():
    assert logic.system_prompt(logic.SPEECH, logic.XIAOYUN) == SPOKEN_S2M_PROMPT
    assert logic.system_prompt(logic.TEXT_ONLY, logic.PLAIN, "") == S2T_SYSTEM_PROMPT
    custom = logic.system_prompt(logic.TEXT_ONLY, logic.XIAOYUN, "  Answer in Cantonese. ")
    assert custom.startswith(S2T_SYSTEM_PROMPT + " 你的名字是小云") and custom.endswith(
        "会说四川话和粤语。 Answer in Cantonese."
    )
    with pytest.raises(logic.FriendlyError, match="reply mode"):
        logic.system_prompt("Sing", logic.XIAOYUN)


def test_each_tab_gets_a_fresh_session():
    template = logic.DemoSession()
    template.history.append({"role": "user", "content": "x"})
    fresh = copy.deepcopy(template)
    assert fresh is not template and fresh.history == [] and fresh.conversation.turns == []
    first = fresh.begin_turn()
    second = fresh.begin_turn()  # a barge-in stops the reply in progress
    assert first.is_set() and not second.is_set()
    fresh.stop()
    assert second.is_set()


@pytest.fixture(scope="module")
def engine():
    return Engine.load(Settings(model="tiny", max_new_tokens=MAX_NEW_TOKENS))


def fake_speak(pieces):
    def speak(inputs, spoken, voice):
        for piece in pieces:
            if isinstance(piece, Exception):
                raise piece
            yield TextDelta(piece) if isinstance(piece, str) else AudioDelta(piece, 24000)

    return speak


def run_turn(session, speak, processor, audio=QUESTION_EN, mode=logic.SPEECH):
    turn = logic.respond(session, speak, processor, str(audio), mode, "中文女", logic.XIAOYUN, "", 60)
    return list(turn)


def test_turn_records_text_and_audio(engine, tmp_path):
    session = logic.DemoSession(files_dir=tmp_path)
    updates = run_turn(session, fake_speak(["Hel", np.ones(960, np.float32), "lo"]), engine.processor)
    assert [update.audio is not None for update in updates] == [False, False, True, False, False]
    assert updates[-1].notice == "" and session.conversation.turns[-1].reply == "Hello"
    user, text, audio = session.history
    assert user["role"] == "user" and sf.info(user["content"]["path"]).samplerate == 16000
    assert text == {"role": "assistant", "content": "Hello"}
    assert sf.read(audio["content"]["path"])[0].shape == (960,)


def test_model_failure_leaves_a_usable_conversation(engine, tmp_path):
    session = logic.DemoSession(files_dir=tmp_path)
    updates = run_turn(session, fake_speak(["Hi", RuntimeError("CUDA out of memory")]), engine.processor)
    assert updates[-1].notice == "The model failed: CUDA out of memory"
    assert session.history[-1]["content"].startswith("⚠️ Sorry, the reply failed")
    assert session.conversation.turns == []
    run_turn(session, fake_speak(["ok"]), engine.processor)
    assert [turn.reply for turn in session.conversation.turns] == ["ok"]


def test_closing_a_turn_midway_keeps_what_was_said(engine, tmp_path):
    session = logic.DemoSession(files_dir=tmp_path)
    turn = logic.respond(
        session,
        fake_speak(["Hi", " there", "!"]),
        engine.processor,
        str(QUESTION_EN),
        *(logic.SPEECH, "中文女", logic.XIAOYUN, "", 60),
    )
    next(turn), next(turn)
    turn.close()  # the page was closed or the event cancelled
    assert session.conversation.turns[-1].reply == "Hi"
    assert session._lock.acquire(blocking=False)


def audio_paths(history: list[dict]) -> list[str]:
    return [message["content"]["path"] for message in history if isinstance(message["content"], dict)]


def test_a_chat_keeps_the_audio_of_its_last_turns_only(engine, tmp_path):
    session = logic.DemoSession(audio_turns=2, files_dir=tmp_path / "session")
    for turn in range(5):
        run_turn(session, fake_speak([f"reply {turn}", np.ones(960, np.float32)]), engine.processor)
        kept = audio_paths(session.history)
        assert len(kept) == 2 * min(turn + 1, 2)  # question + reply audio of the last two turns
        assert sorted(str(path) for path in (tmp_path / "session").iterdir()) == sorted(kept)
    texts = [message["content"] for message in session.history if isinstance(message["content"], str)]
    assert texts == [f"reply {turn}" for turn in range(5)]  # older turns keep their text
    session.reset()
    assert session.history == [] and list((tmp_path / "session").iterdir()) == []
    run_turn(session, fake_speak(["again", np.ones(960, np.float32)]), engine.processor)
    assert len(list((tmp_path / "session").iterdir())) == 2
    session.close()
    assert not (tmp_path / "session").exists()


def test_stream_reply_text_mode_streams_words_only(engine):
    from transformers_fac import stream_reply

    chat = logic.FunAudioChatConversation(system_prompt=S2T_SYSTEM_PROMPT)
    chat.add_user_audio(str(QUESTION_EN))
    inputs = chat.model_inputs(engine.processor)
    chunks = list(stream_reply(engine.model, engine.processor, inputs, generation_mode="text", max_new_tokens=6))
    expected = engine.model.generate(**inputs, generation_mode="text", max_new_tokens=6)
    text = engine.processor.decode(expected[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert chunks and all(chunk.audio is None for chunk in chunks) and "".join(c.text for c in chunks) == text


def test_function_calls_are_parsed(engine):
    reply = '<tool_call>\n{"name": "get_weather", "arguments": {"location": "杭州"}}\n</tool_call>'
    result = logic.call_tools(
        lambda inputs: reply, engine.processor, str(QUESTION_EN), app.json.dumps(logic.EXAMPLE_TOOLS), 60
    )
    assert result.calls == [{"name": "get_weather", "arguments": {"location": "杭州"}}] and result.notice == ""
    assert "not valid JSON" in logic.call_tools(None, engine.processor, str(QUESTION_EN), "[{", 60).notice
    assert "list of objects" in logic.call_tools(None, engine.processor, str(QUESTION_EN), "[1]", 60).notice


# ------------------------------------------------------------------------------------------------- the app, via gradio_client
@contextlib.contextmanager
def running(engine):
    """The app of `engine`, served on a free port of 127.0.0.1; yields its URL."""
    demo = app.build_demo(engine)
    demo.queue()
    port = free_port()
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True, **app.LAUNCH_OPTIONS)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()


@pytest.fixture(scope="module")
def server(engine, tmp_path_factory):
    engine.settings.files_dir = str(tmp_path_factory.mktemp("fac-demo"))
    with running(engine) as url:
        yield url


@pytest.fixture
def client(server, tmp_path):
    from gradio_client import Client

    client = Client(server, verbose=False, analytics_enabled=False, download_files=str(tmp_path))  # a new tab
    yield client
    client.close()


def ask(client, audio=QUESTION_EN, mode=logic.SPEECH, voice="中文女", persona=logic.XIAOYUN, free_prompt=""):
    """Runs one /respond turn; returns every streamed output (chat, audio, notice)."""
    from gradio_client import handle_file

    job = client.submit(handle_file(str(audio)), mode, voice, persona, free_prompt, api_name="/respond")
    outputs = list(job)
    assert outputs[-1] == job.result()
    return outputs


def message_text(message) -> str:
    return "".join(item.get("text", "") for item in message["content"])


def message_file(message) -> str | None:
    return next((item["file"] for item in message["content"] if item.get("type") == "file"), None)


def test_spoken_reply_streams_and_second_turn_uses_history(client, engine, monkeypatch):
    prompts = []
    speak = engine.speak

    def recording_speak(inputs, spoken, voice):
        prompts.append(engine.processor.decode(inputs["input_ids"][0]))
        yield from speak(inputs, spoken, voice)

    monkeypatch.setattr(engine, "speak", recording_speak)
    outputs = ask(client)
    chat, _, notice = outputs[-1]
    assert notice == ""
    user, answer, spoken = chat
    assert user["role"] == "user" and message_file(user).endswith(".wav")
    transcript = message_text(answer)
    assert transcript and "(stopped)" not in transcript
    live = [message_text(out[0][1]) for out in outputs if len(out[0]) >= 2]
    assert len({text for text in live if text != "…"}) >= 3 and transcript.startswith(live[-2].rstrip("…"))
    streamed = [out[1] for out in outputs if isinstance(out[1], str)]
    assert len(streamed) >= 2 and all(path.endswith(".m3u8") for path in streamed)  # audio chunks as they came
    waveform, rate = sf.read(message_file(spoken), dtype="float32")  # the whole reply, playable
    assert rate == 24000 and waveform.size > 0 and waveform.size % 960 == 0 and np.abs(waveform).max() > 0

    second = ask(client, QUESTION_ZH, voice="中文男")[-1][0]
    assert [message["role"] for message in second] == ["user", "assistant", "assistant"] * 2
    assert second[:3] == chat
    assert prompts[1].count("<|im_start|>user") == 2 and prompts[1].count("<|AUDIO|>") > prompts[0].count("<|AUDIO|>")
    assert SPOKEN_S2M_PROMPT in prompts[1]


def test_text_only_mode_returns_no_audio(client):
    outputs = ask(client, mode=logic.TEXT_ONLY, persona=logic.PLAIN)
    chat, audio, notice = outputs[-1]
    assert notice == "" and [message["role"] for message in chat] == ["user", "assistant"]
    assert message_text(chat[1]) and message_file(chat[1]) is None  # no spoken reply in the chat
    assert all(isinstance(out[1], str) and out[1].endswith(".m3u8") for out in outputs)  # an empty reply stream


def test_api_is_tidy(client):
    """Named outputs, optional inputs marked optional, and no update dicts in what /respond and /add_voice return."""
    api = client.view_api(print_info=False, return_format="dict")
    assert not api["unnamed_endpoints"]
    for name, endpoint in api["named_endpoints"].items():
        assert all(not r["label"].startswith("value_") for r in endpoint["returns"]), (name, endpoint["returns"])
    optional = {
        p["parameter_name"]: p["parameter_has_default"] for p in api["named_endpoints"]["/respond"]["parameters"]
    }
    assert optional == {"audio": False, "mode": True, "voice": True, "persona": True, "free_prompt": True}
    assert "/voice_control" not in api["named_endpoints"]  # a page-only event
    for mode in logic.MODES:
        for chat, audio, notice in ask(client, mode=mode, persona=logic.PLAIN):
            assert isinstance(chat, list) and isinstance(notice, str) and not isinstance(audio, dict)


def test_bad_input_gets_a_friendly_message(client, tmp_path):
    not_audio = tmp_path / "notes.txt"
    not_audio.write_text("this is not audio")
    silence = tmp_path / "silence.wav"
    sf.write(silence, np.zeros(16000, np.float32), 16000)
    too_short = tmp_path / "short.wav"
    sf.write(too_short, 0.1 * np.random.default_rng(0).standard_normal(1600).astype(np.float32), 16000)
    too_long = tmp_path / "long.wav"
    sf.write(too_long, 0.1 * np.random.default_rng(0).standard_normal(61 * 16000).astype(np.float32), 16000)
    expected = {
        not_audio: "That file is not audio I can read",
        silence: "The recording is silent",
        too_short: "The recording lasts 0.1 s: too short to hold a question",
        too_long: "The recording is 61.0 s long; this demo takes questions of up to 60 s",
    }
    for audio, message in expected.items():
        chat, _, notice = ask(client, audio)[-1]
        assert message in notice and chat == []
    from gradio_client import handle_file

    tools = app.json.dumps(logic.EXAMPLE_TOOLS)
    reply, calls, notice = client.predict(handle_file(str(not_audio)), tools, api_name="/call_tools")
    assert reply == "" and calls == [] and "That file is not audio I can read" in notice


def test_model_error_is_shown_and_the_app_stays_up(client, engine, monkeypatch):
    monkeypatch.setattr(engine.settings, "max_new_tokens", 0)  # an impossible setting: generate refuses it
    chat, _, notice = ask(client)[-1]
    assert "The model failed: max_new_tokens must be at least 1" in notice
    assert message_text(chat[-1]).startswith("⚠️ Sorry, the reply failed")
    monkeypatch.undo()
    chat, _, notice = ask(client)[-1]
    assert notice == "" and len(chat) == 5  # the failed turn stays visible; the new one is answered


def test_stop_button_interrupts_and_new_conversation_forgets(client, engine, monkeypatch):
    monkeypatch.setattr(engine.settings, "max_new_tokens", 400)  # minutes on CPU unless stopped
    from gradio_client import handle_file

    start = time.monotonic()
    job = client.submit(handle_file(str(QUESTION_EN)), logic.SPEECH, "中文女", logic.PLAIN, "", api_name="/respond")
    while not any(out[0] and message_text(out[0][-1]) not in ("", "…") for out in job.outputs()):
        assert not job.done() and time.monotonic() - start < 60
        time.sleep(0.05)
    client.predict(api_name="/stop")
    chat, _, notice = job.result(timeout=60)
    answer = next(message for message in reversed(chat) if message_text(message))  # the audio may follow it
    assert notice == "⏹️ Stopped." and message_text(answer).endswith(logic.STOPPED)
    assert time.monotonic() - start < 60
    chat, audio, notice = client.predict(api_name="/new_conversation")
    assert chat == [] and audio is None and notice == ""


def test_function_calling_tab(client):
    from gradio_client import handle_file

    reply, calls, notice = client.predict(handle_file(str(QUESTION_EN)), "{not json", api_name="/call_tools")
    assert reply == "" and calls == [] and "not valid JSON (line 1, column 2" in notice
    tools = app.json.dumps(logic.EXAMPLE_TOOLS)
    reply, calls, notice = client.predict(handle_file(str(QUESTION_EN)), tools, api_name="/call_tools")
    assert isinstance(reply, str) and reply and calls == [] and notice == "ℹ️ The reply calls no tool."


def test_disk_settings_come_from_the_environment():
    settings = Settings.from_env({"FAC_FILES_DIR": "/srv/chats", "FAC_AUDIO_TURNS": "3", "FAC_CACHE_TTL": "600"})
    assert (settings.files_dir, settings.audio_turns, settings.delete_cache) == ("/srv/chats", 3, (300, 600))
    assert Settings.from_env({}).delete_cache == (300, 3600) and Settings(cache_ttl=60).delete_cache == (60, 60)
    with pytest.raises(ValueError, match="cache_ttl must be at least 1, got 0"):
        Settings.from_env({"FAC_CACHE_TTL": "0"})
    with pytest.raises(ValueError, match="audio_turns must be at least 1"):
        Settings(audio_turns=0)


def files_under(folder: Path) -> list[Path]:
    return [path for path in folder.rglob("*") if path.is_file()]


def wait_for(condition, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.1)


def test_files_on_disk_stay_bounded_over_many_turns_and_sessions(engine, tmp_path, monkeypatch):
    """15 spoken turns over four sessions (tabs), one reset and two closed midway: the demo's own folder never holds
    more than `audio_turns` turns of audio per open session, a reset or closed session's files go at once, Gradio's
    temporary folder stays small, and once the tabs are gone both are back to what the page itself needs."""
    from gradio_client import Client, handle_file

    gradio_dir, files_dir = tmp_path / "gradio", tmp_path / "fac-demo"
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(gradio_dir))  # this app's Gradio files, and only them
    monkeypatch.setenv("GRADIO_HEARTBEAT_INTERVAL", "0.5")  # a closed tab is noticed within a second
    settings = dataclasses.replace(
        engine.settings, max_new_tokens=4, files_dir=str(files_dir), audio_turns=2, cache_ttl=2
    )
    gradio_peak = 0
    with running(dataclasses.replace(engine, settings=settings)) as url:
        page_files = len(files_under(gradio_dir))  # the example questions, kept for the page
        tabs = [Client(url, verbose=False, analytics_enabled=False, download_files=False) for _ in range(4)]
        folders = [session_folder(files_dir, tab.session_hash) for tab in tabs]
        open_tabs = [0, 1, 2, 3]

        def ask(index: int) -> None:
            nonlocal gradio_peak
            chat, _, notice = tabs[index].predict(
                handle_file(str(QUESTION_EN)), logic.SPEECH, "中文女", logic.PLAIN, "", api_name="/respond"
            )
            assert notice == "" and len([message for message in chat if message_file(message)]) <= 2 * 2
            for tab in open_tabs:  # at most question + reply audio of the last 2 turns per open tab
                assert len(files_under(folders[tab])) <= 2 * 2
            assert len(files_under(files_dir)) <= 2 * 2 * len(open_tabs)
            gradio_peak = max(gradio_peak, len(files_under(gradio_dir)))

        for _ in range(3):
            for index in range(4):
                ask(index)
        assert all(len(files_under(folder)) == 4 for folder in folders)
        tabs[1].predict(api_name="/new_conversation")
        assert files_under(folders[1]) == []
        tabs[2].close()
        open_tabs.remove(2)
        wait_for(lambda: not folders[2].exists(), "the closed tab's folder is deleted")
        for index in open_tabs:
            ask(index)
        assert [len(files_under(folders[index])) for index in open_tabs] == [4, 2, 4]
        for index in list(open_tabs):
            tabs[index].close()
            open_tabs.remove(index)
        wait_for(lambda: files_under(files_dir) == [], "every tab's files are deleted")
        wait_for(lambda: len(files_under(gradio_dir)) <= page_files, "Gradio's unused temporary files are deleted")
    print(f"Gradio's temporary files: {page_files} for the page, at most {gradio_peak} during the 15 turns")
    assert gradio_peak <= page_files + 60


def test_voices_are_ids_of_the_list_never_paths(engine, tmp_path, monkeypatch):
    """`engine_voice`: no voice is the default, stock voices by name, a cloned voice by its id in its own tab only;
    anything else (a path, another tab's voice, a typo) is refused with a message for the user."""
    from your_voice import engine_voice, voice_path

    monkeypatch.setattr(engine.settings, "files_dir", str(tmp_path))
    assert engine_voice(None, engine, "tab") is None and engine_voice("", engine, "tab") is None
    assert engine_voice("中文男", engine, "tab") == "中文男"
    voice_id = "cloned-" + "ab" * 16
    path = voice_path(engine, "tab", voice_id)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"saved voice")
    assert engine_voice(voice_id, engine, "tab") == str(path)
    for voice, session in [(voice_id, "other tab"), (str(path), "tab"), ("../" + voice_id, "tab"), ("中文女x", "tab")]:
        with pytest.raises(logic.FriendlyError, match=r"^Unknown voice '.*': choose one of the list"):
            engine_voice(voice, engine, session)
    with pytest.raises(logic.FriendlyError, match=r"'x{57}\.\.\.'"):  # a long name is cut
        engine_voice("x" * 500, engine, "tab")


STOCK_CHOICES = [("中文女 (female)", "中文女"), ("中文男 (male)", "中文男")]


def test_your_voice_clones_a_clip_for_the_tab(client, server, engine, tmp_path):
    """The "Your voice" control: a recorded or uploaded clip becomes a voice of this tab's list, downloadable, and the
    replies use it."""
    from gradio_client import Client, handle_file

    from transformers_fac import FunAudioChatVoice

    result = client.predict(handle_file(str(QUESTION_ZH)), " me ", api_name="/add_voice")
    assert not any(isinstance(value, dict) for value in result)  # plain values, no update dicts
    selected, voice_file, notice = result
    assert notice.startswith("✅ Replies now speak as **me**") and re.fullmatch("cloned-[0-9a-f]{32}", selected)
    assert Path(voice_file).name == f"{selected}.safetensors"  # the id is no server path; the file is a download
    page_list = YourVoices(engine, STOCK_CHOICES).list_update(selected, [("me (your voice)", selected)])
    assert page_list.choices == [*STOCK_CHOICES, ("me (your voice)", selected)] and page_list.value == selected
    voice, expected = FunAudioChatVoice.load(voice_file), engine.model.token2wav.clone_voice(str(QUESTION_ZH))
    assert voice.name == "me" and torch_equal(voice.prompt_codes, expected.prompt_codes)
    assert torch_equal(voice.speaker_embedding, expected.speaker_embedding)
    chat, _, notice = ask(client, voice=selected)[-1]
    waveform, rate = sf.read(message_file(chat[-1]), dtype="float32")
    assert notice == "" and rate == 24000 and waveform.size > 0
    silence = tmp_path / "silence.wav"
    sf.write(silence, np.zeros(32000, np.float32), 16000)
    short = tmp_path / "short.wav"
    sf.write(short, sf.read(QUESTION_ZH, dtype="float32")[0][:8000], 16000)
    not_audio = tmp_path / "voice.txt"
    not_audio.write_text("not audio")
    expected = {
        silence: "Could not use this clip: it is silent.",
        short: "Could not use this clip: it lasts 0.5 s, too short to clone a voice.",
        not_audio: logic.NOT_AUDIO,
    }
    for clip, message in expected.items():
        no_voice, no_file, notice = client.predict(handle_file(str(clip)), "", api_name="/add_voice")
        assert (no_voice, no_file) == ("", None) and notice.startswith(f"⚠️ {message}"), notice
        assert str(tmp_path) not in notice and "/tmp" not in notice and "trim" not in notice
    _, _, notice = client.predict(None, "", api_name="/add_voice")
    assert "Record or upload a clip" in notice
    # another tab does not see this tab's voice: a notice, and its conversation stays as it is
    other = Client(server, verbose=False, analytics_enabled=False)
    chat, _, notice = other.predict(
        handle_file(str(QUESTION_EN)), logic.SPEECH, selected, logic.PLAIN, "", api_name="/respond"
    )
    assert chat == [] and notice.startswith("⚠️ Unknown voice 'cloned-")
    other.close()


def torch_equal(first, second) -> bool:
    import torch

    return bool(torch.equal(first, second))


# ------------------------------------------------------------------------------------------------- Space files
def test_space_files():
    front = yaml.safe_load(re.match(r"---\n(.*?)\n---\n", (DEMO / "README.md").read_text(), re.DOTALL).group(1))
    import gradio

    assert front["sdk"] == "gradio" and front["sdk_version"] == gradio.__version__
    assert tuple(map(int, front["python_version"].split("."))) >= (3, 11)
    assert (DEMO / front["app_file"]).is_file() and front["suggested_hardware"]
    assert "FunAudioLLM/Fun-Audio-Chat-8B" in front["models"] and len(front["short_description"]) <= 60
    assert "transformers-fac[demo,voice]" in (DEMO / "requirements.txt").read_text()
    assert (DEMO / "packages.txt").read_text().split() == ["ffmpeg"]
    assert all((DEMO / "examples" / path.name).is_file() for path, _ in app.EXAMPLES)


# ------------------------------------------------------------------------------------------------- the page in Chromium
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,1600",
    "--virtual-time-budget=15000",
]


@pytest.fixture(scope="module")
def started_app(tmp_path_factory):
    """`python spaces_demo/app.py --model tiny` as the README says, on a free port."""
    with app_process(tmp_path_factory.mktemp("app") / "app.log") as (_, url):
        yield url


def chromium(tmp_path, *args) -> subprocess.CompletedProcess:
    executable = shutil.which("chromium")
    if executable is None:
        pytest.fail("chromium is not installed: `.ci/run` installs it (apt-get install -y chromium).")
    profile = tmp_path / f"profile-{len(list(tmp_path.iterdir()))}"
    command = [executable, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=180)


def test_page_renders_in_headless_chromium(started_app, tmp_path):
    dom = chromium(tmp_path, "--dump-dom", started_app).stdout
    texts = ("Fun-Audio-Chat", "Voice chat", "Function calling", "Send", "Stop", "New conversation", "Persona")
    for text in (*texts, "Your voice"):
        assert text in dom, f"{text!r} is not on the page"
    assert "Your question (max 60 s)" in dom and "Spoken reply (live)" in dom
    assert "hear <strong>a tiny random test model (it speaks gibberish)</strong> answer" in dom  # the model running

    screenshot = tmp_path / "fac-demo.png"
    chromium(tmp_path, f"--screenshot={screenshot}", started_app)
    from PIL import Image

    with Image.open(screenshot) as image:
        assert image.size == (1280, 1600)
        pixels = np.asarray(image.convert("RGB"))
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 100  # text, buttons, colours: not a blank page
    print(f"screenshot: {screenshot}")


# ------------------------------------------------------------------------------------------------- hands-free
def test_hands_free_transcript_follows_the_session_events():
    """What the hands-free tab shows for a reply that is heard in part, and for one that is not heard at all."""
    import hands_free

    from transformers_fac.live import LiveEvent

    tab = hands_free.HandsFree()
    question = np.full(8000, 0.1, np.float32)
    reply_audio = np.full(24000, 0.1, np.float32)
    tab._route(
        [
            LiveEvent("speech_stopped", 1.0, 1, audio=question, sampling_rate=16000),
            LiveEvent("reply_started", 1.6, 1),
            LiveEvent("text", 1.6, 1, text="Hello"),
            LiveEvent("audio", 1.6, 1, audio=reply_audio, sampling_rate=24000),
            LiveEvent("interrupted", 2.1, 1, text="Hello", heard_s=0.5),
        ]
    )
    user, answer, spoken = tab.history
    assert user["role"] == "user" and answer["content"] == "Hello" + hands_free.INTERRUPTED
    assert sf.read(spoken["content"]["path"])[0].shape == (12000,)  # as far as it was heard
    assert list(tab.play(1)) == [logic.wav_bytes(reply_audio, 24000)] and tab.interruptions == 1
    # a reply interrupted before anything was heard is dropped; the question goes on in the same turn
    tab._route(
        [
            LiveEvent("speech_stopped", 5.0, 2, audio=question, sampling_rate=16000),
            LiveEvent("reply_started", 5.6, 2),
            LiveEvent("interrupted", 5.7, 2, text="", heard_s=0.0),
            LiveEvent("speech_stopped", 7.0, 2, audio=np.concatenate([question, question]), sampling_rate=16000),
            LiveEvent("reply_started", 7.6, 2),
            LiveEvent("text", 7.6, 2, text="Sure"),
            LiveEvent("reply_done", 8.0, 2, text="Sure"),
        ]
    )
    assert [m["role"] for m in tab.history] == ["user", "assistant", "assistant", "user", "assistant"]
    assert sf.info(tab.history[3]["content"]["path"]).frames == 16000 and tab.history[4]["content"] == "Sure"
    assert list(tab.play(3)) == [] and tab.reply_id == 3


def test_hands_free_status_stays_speaking_while_a_slow_reply_pauses():
    """A reply generated slower than real time runs out of audio between chunks: the session is "thinking" again,
    but the tab keeps showing "Speaking" until the reply ends or is interrupted (no Speaking/Thinking flapping)."""
    import types

    import hands_free

    from transformers_fac.live import LiveEvent

    tab = hands_free.HandsFree()
    tab.session = types.SimpleNamespace(state="thinking", user_speaking=False)
    question, audio = np.full(8000, 0.1, np.float32), np.full(2400, 0.1, np.float32)
    tab._route([LiveEvent("speech_stopped", 1.0, 1, audio=question, sampling_rate=16000)])
    tab._route([LiveEvent("reply_started", 1.6, 1)])
    assert tab.state() == hands_free.STATES["thinking"]  # nothing said yet
    tab._route([LiveEvent("audio", 1.7, 1, audio=audio, sampling_rate=24000)])
    tab.session.state = "speaking"
    assert tab.state() == hands_free.STATES["speaking"]
    tab.session.state = "thinking"  # its audio has played, the next chunk is not there yet
    assert tab.state() == hands_free.STATES["speaking"]
    tab._route([LiveEvent("interrupted", 2.0, 1, text="", heard_s=0.1)])
    tab._route([LiveEvent("speech_stopped", 3.0, 2, audio=question, sampling_rate=16000)])
    tab._route([LiveEvent("reply_started", 3.6, 2)])
    assert tab.state() == hands_free.STATES["thinking"]  # the next reply thinks before it speaks
    tab.session.user_speaking = True
    assert tab.state() == hands_free.STATES["hearing"]
    tab.files.close()
