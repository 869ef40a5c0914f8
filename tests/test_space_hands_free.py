"""The Space as users meet it: `python spaces_demo/app.py --model tiny` in a process of its own, its Hands-free tab in
headless Chromium with a fake microphone (a WAV file played in a loop), `gradio_client` for the API, and SIGTERM.

One app serves every test of this file; each visit is a fresh browser (a new profile: a first visit).
"""

import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from live_testing import clip, silence, timeline
from space_testing import DEMO, app_process

QUESTION = DEMO / "examples" / "question_en.wav"
VISITS = 10
SLOW_NETWORK_MS = 300
"""Every other visit loads the page over a slow link: the microphone's recorder then loads after the tab shows."""
STATE_SCRIPT = """
const chat = document.querySelector('#hands_free_chat');
const reply = document.querySelector('#hands_free_reply audio');
const status = document.querySelector('#hands_free_status');
const bots = chat ? Array.from(chat.querySelectorAll('[data-testid="bot"]')).map((e) => e.innerText.trim()) : [];
const users = chat ? chat.querySelectorAll('[data-testid="user"] audio, [data-testid="user"] [data-testid^="waveform"]') : [];
return {status: status ? status.innerText.trim() : '', users: users.length, bots: bots,
        replies: bots.filter((text) => text && text !== '…').length, played: reply ? reply.currentTime : 0,
        audible: reply ? !reply.paused && reply.currentTime > 0 : false,
        errors: document.querySelectorAll('.toast-body.error, [data-testid="status-tracker"] .error').length};
"""


@dataclass
class App:
    process: subprocess.Popen
    url: str
    gradio_dir: Path
    files_dir: Path


def files_under(folder: Path) -> list[Path]:
    return [path for path in folder.rglob("*") if path.is_file()] if folder.exists() else []


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """The app as the README starts it (tiny model), with its own Gradio and session folders."""
    root = tmp_path_factory.mktemp("space")
    gradio_dir, files_dir = root / "gradio", root / "fac-demo"
    env = {"GRADIO_TEMP_DIR": str(gradio_dir), "FAC_FILES_DIR": str(files_dir)}
    with app_process(root / "app.log", env=env) as (
        process,
        url,
    ):  # the Space's own reply length (tiny: 40 steps, 8 s)
        yield App(process, url, gradio_dir, files_dir)


def microphone_file(path: Path, *parts: np.ndarray) -> Path:
    """What Chromium's fake microphone plays (in a loop), as a 48 kHz WAV."""
    from transformers_fac.audio_io import resample

    sf.write(path, resample(timeline(*parts), 16000, 48000), 48000, subtype="PCM_16")
    return path


def browser(profile: Path, microphone: Path | None, latency_ms: int = 0):
    """A fresh headless Chromium (its own profile); `microphone`: the WAV its fake microphone plays (None: none)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    executable = shutil.which("chromium")
    if executable is None:
        pytest.fail("chromium is not installed: `.ci/run` installs it (apt-get install -y chromium).")
    options = Options()
    options.binary_location = executable
    flags = [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--window-size=1280,1600",
        f"--user-data-dir={profile}",
    ]
    flags += ["--autoplay-policy=no-user-gesture-required", "--use-fake-ui-for-media-stream"]  # permission granted
    if microphone is not None:
        flags += ["--use-fake-device-for-media-stream", f"--use-file-for-fake-audio-capture={microphone}"]
    for flag in flags:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))
    if latency_ms:
        driver.execute_cdp_cmd("Network.enable", {})
        conditions = {"offline": False, "latency": latency_ms, "downloadThroughput": -1, "uploadThroughput": -1}
        driver.execute_cdp_cmd("Network.emulateNetworkConditions", conditions)
    return driver


def open_hands_free(driver, url: str) -> None:
    """Opens the page and chooses the Hands-free tab: the only click."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    tab = WebDriverWait(driver, 120).until(
        lambda d: next(
            (t for t in d.find_elements(By.CSS_SELECTOR, "button[role=tab]") if t.text == "Hands-free"), None
        )
    )
    driver.execute_script("arguments[0].click()", tab)


def watch(driver, done, timeout: float = 90.0, samples: list | None = None) -> tuple[dict, list[str]]:
    """Samples the tab every 0.2 s until `done(page)`; returns the last sample and the statuses seen, in order
    (`samples`, if given, gets every sample)."""
    page, states = {}, []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        page = driver.execute_script(STATE_SCRIPT)
        if samples is not None:
            samples.append(page)
        word = page["status"].split(" ")[1] if " " in page["status"] else page["status"]
        if not states or states[-1] != word:
            states.append(word)
        if done(page):
            break
        time.sleep(0.2)
    return page, states


def answered(page: dict) -> bool:
    return page["users"] >= 1 and page["replies"] >= 1 and page["played"] > 0.3


def recorder_failures(driver) -> int:
    return sum(
        "is not a constructor" in entry["message"] or "MediaRecorder" in entry["message"]
        for entry in driver.get_log("browser")
    )


def test_hands_free_starts_on_every_first_visit_and_on_reopen(app, tmp_path):
    """10 first visits in a row (a fresh browser each, every other one over a slow link), then a reopen of the page
    in the same browser: each time the question spoken into the fake microphone is answered, with no click but the
    tab's. The status never flips back from Speaking to Thinking within a reply."""
    microphone = microphone_file(tmp_path / "question.wav", silence(1.0), clip("en"), silence(12.0))
    recovered = 0

    def visit(driver, what: str) -> None:
        nonlocal recovered
        open_hands_free(driver, app.url)
        page, states = watch(driver, answered)
        recovered += recorder_failures(driver) > 0
        assert answered(page), (what, page, states)
        assert {"Hearing", "Speaking"} <= set(states), (what, states)
        assert page["errors"] == 0, (what, page)
        flaps = [i for i in range(1, len(states)) if (states[i - 1], states[i]) == ("Speaking", "Thinking…")]
        assert not flaps, (what, states)

    driver = None
    try:
        for number in range(1, VISITS + 1):
            if driver is not None:
                driver.quit()
            driver = browser(tmp_path / f"profile-{number}", microphone, SLOW_NETWORK_MS if number % 2 else 0)
            visit(driver, f"first visit {number}")
        visit(driver, "the reopen")  # the same browser opens the page again
    finally:
        if driver is not None:
            driver.quit()
    print(f"{VISITS} first visits and a reopen answered; the recorder failed first and recovered in {recovered}")


def test_a_second_question_during_a_reply_interrupts_it(app, tmp_path):
    """The user talks over the reply while it is audibly playing (the Space's own reply length: the tiny model's 8 s;
    the second question starts 3.5 s after the first ends, in the reply's first audible seconds): the reply stops (the chat marks it interrupted, the player
    pauses) and the new question is answered; nothing is lost.

    Before the page opened the microphone without the browser's echo cancellation, the echo canceller muted the user
    while the reply played: the second question was heard late (its first seconds lost) or only once the reply had
    ended (no barge-in)."""
    microphone = microphone_file(
        tmp_path / "two.wav", silence(1.0), clip("en"), silence(3.5), clip("zh"), silence(15.0)
    )
    driver = browser(tmp_path / "profile", microphone)
    samples, started = [], time.time()
    try:
        open_hands_free(driver, app.url)
        page, states = watch(
            driver,
            lambda page: page["users"] >= 2 and len([t for t in page["bots"] if t and t != "…"]) >= 3,
            samples=samples,
        )
        files = sorted((path.stat().st_mtime, path) for path in files_under(app.files_dir))
        infos = [sf.info(path) for mtime, path in files if mtime >= started]
        questions = [info.duration for info in infos if info.samplerate == 16000]  # the replies are 24 kHz
    finally:
        driver.quit()
    assert page["users"] == 2, (page, states)  # both questions, as two turns: none lost
    last = page["bots"][-1]
    assert last and last != "…" and not last.endswith("(interrupted)"), (page, states)  # the second answered
    flaps = [i for i in range(1, len(states)) if (states[i - 1], states[i]) == ("Speaking", "Thinking…")]
    assert not flaps, states
    heard_again = next(i for i, sample in enumerate(samples) if sample["users"] >= 1 and "Hearing" in sample["status"])
    before = samples[heard_again - 1]  # the tab just before the second question was heard
    assert before["audible"] and "Speaking" in before["status"], (before, states)  # the reply was playing
    interrupted = [text for text in page["bots"] if text.endswith("(interrupted)")]
    assert len(interrupted) == 1 and page["bots"][0] == interrupted[0], (page, states)  # the first reply, cut
    # each question heard whole: the second one from its start, although the reply was playing when it began (with
    # the browser's echo cancellation it was heard as 1.1-3.4 s of its 5.8 s; without, 4.9-5.6 s)
    expected = [len(clip("en")) / 16000, len(clip("zh")) / 16000]
    assert len(questions) == 2 and all(abs(got - want) < 1.5 for got, want in zip(questions, expected)), questions
    print(f"barge-in while the reply played; questions heard {questions} s (spoken {expected} s)")


def test_no_microphone_gets_a_clear_message(app, tmp_path):
    """Without any microphone the tab says so, with no error badge and no request to press a missing button."""
    driver = browser(tmp_path / "profile", None)
    try:
        open_hands_free(driver, app.url)
        page, states = watch(driver, lambda page: "No microphone" in page["status"], timeout=30)
    finally:
        driver.quit()
    assert page["status"].startswith("🎤 No microphone found"), (page, states)
    assert "Record" not in page["status"] and page["errors"] == 0, page


def test_unknown_voice_never_hides_the_conversation(app, tmp_path):
    """A voice that is not in the list is refused with a notice (API) or a warning (page); the conversation so far
    stays as it is."""
    from gradio_client import Client, handle_file

    client = Client(app.url, verbose=False, analytics_enabled=False, download_files=str(tmp_path))
    try:
        chat, _, notice = client.predict(handle_file(str(QUESTION)), "Speech + text", "", api_name="/respond")
        assert notice == "" and len(chat) == 3  # no voice: the default one
        for voice in ("中文女x", "/etc/passwd", "cloned-" + "0" * 32, "x" * 500):
            after, audio, notice = client.predict(
                handle_file(str(QUESTION)), "Speech + text", voice, api_name="/respond"
            )
            assert after == chat and "Unknown voice" in notice and "choose one of the list" in notice, (voice, notice)
            assert len(notice) < 200
    finally:
        client.close()
    # on the page: a name typed into the voice list is refused with a warning, and the list goes back to a voice
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    driver = browser(tmp_path / "profile", None)
    try:
        driver.get(app.url)
        box = WebDriverWait(driver, 120).until(lambda d: d.find_element(By.CSS_SELECTOR, "input[aria-label=Voice]"))
        box.click()
        box.send_keys(Keys.CONTROL, "a")
        box.send_keys("中文女x", Keys.ENTER, Keys.TAB)
        toasts = WebDriverWait(driver, 60).until(
            lambda d: [e.text for e in d.find_elements(By.CSS_SELECTOR, ".toast-body") if "Unknown voice" in e.text]
        )
        value, page = box.get_attribute("value"), driver.execute_script(STATE_SCRIPT)
    finally:
        driver.quit()
    assert toasts[0].startswith("Warning") and "'中文女x'" in toasts[0], toasts
    assert value == "中文女 (female)" and page["errors"] == 0, (value, page)


def test_sigterm_leaves_no_temp_files(app, tmp_path):
    """SIGTERM (as containers and Spaces stop an app) with a hands-free tab open: the app stops and deletes every
    file of Gradio's and of its sessions. Runs last: it stops the app of this file."""
    from gradio_client import Client, handle_file

    client = Client(app.url, verbose=False, analytics_enabled=False, download_files=str(tmp_path))
    chat, _, notice = client.predict(handle_file(str(QUESTION)), "Speech + text", "中文男", api_name="/respond")
    assert notice == "" and len(chat) == 3
    microphone = microphone_file(tmp_path / "question.wav", silence(1.0), clip("en"), silence(12.0))
    driver = browser(tmp_path / "profile", microphone)
    try:
        open_hands_free(driver, app.url)
        page, states = watch(driver, answered)
        assert answered(page), (page, states)
        before = len(files_under(app.gradio_dir)), len(files_under(app.files_dir))
        assert before[0] > 10 and before[1] >= 3, before  # uploads, streamed replies; the two tabs' questions
        app.process.send_signal(signal.SIGTERM)
        code = app.process.wait(timeout=60)
    finally:
        driver.quit()
        client.close()
    assert code == 0
    assert files_under(app.gradio_dir) == [] and files_under(app.files_dir) == [], before
