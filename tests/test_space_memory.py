"""The Space gives its memory back when the load ends: `python spaces_demo/app.py --model tiny` in a process of its
own, several `gradio_client` users asking at the same time, then its resident memory (psutil) compared with its idle
memory after start."""

import sys
import threading
import time
import weakref

import psutil
from space_testing import DEMO, app_process

sys.path.insert(0, str(DEMO))

from memory import TabMemory, release_free_memory  # noqa: E402

QUESTION = DEMO / "examples" / "question_en.wav"
USERS, TURNS = 6, 2
BOUND_MB = 200
"""RSS after the load may exceed the idle RSS after start by this much. Measured here (tiny model, CPU, idle 573 MB):
the first reply's one-time allocations keep about 65 MB; 8 users x 2 turns left 1089 MB 30 s after the load before
the fix (+516 MB; 4 users x 3 turns: +248 MB), and 701 MB with it (+128 MB; peak 1207 MB before, 833 MB after)."""


def rss_mb(process: psutil.Process) -> float:
    return process.memory_info().rss / 2**20


def test_memory_comes_back_after_the_load(tmp_path):
    from gradio_client import Client, handle_file

    env = {"GRADIO_TEMP_DIR": str(tmp_path / "gradio"), "FAC_FILES_DIR": str(tmp_path / "fac-demo")}
    with app_process(tmp_path / "app.log", env=env) as (process, url):
        app = psutil.Process(process.pid)
        time.sleep(3)  # settled after start
        idle = rss_mb(app)
        peak, failures = [idle], []

        def user(index: int) -> None:
            client = Client(url, verbose=False, analytics_enabled=False, download_files=str(tmp_path / f"u{index}"))
            try:
                for _ in range(TURNS):
                    chat, _, notice = client.predict(
                        handle_file(str(QUESTION)), "Speech + text", "", api_name="/respond"
                    )
                    peak.append(rss_mb(app))
                    if notice or not chat[-1]["content"]:
                        failures.append((index, notice, chat[-1]))
            finally:
                client.close()  # the tab closes

        users = [threading.Thread(target=user, args=(index,)) for index in range(USERS)]
        for thread in users:
            thread.start()
        for thread in users:
            thread.join(600)
        assert not failures and not any(thread.is_alive() for thread in users), failures
        deadline, after = time.monotonic() + 30, rss_mb(app)
        while after - idle > BOUND_MB and time.monotonic() < deadline:  # the closed tabs' unload runs meanwhile
            time.sleep(1)
            after = rss_mb(app)
    print(f"RSS: idle {idle:.0f} MB, peak {max(peak):.0f} MB, after the load {after:.0f} MB")
    assert max(peak) - idle > 50, (idle, max(peak))  # the load did use memory
    assert after - idle <= BOUND_MB, (idle, max(peak), after)


class State:
    closed = 0

    def close(self) -> None:
        State.closed += 1


def test_a_closed_tab_releases_its_states_and_memory_goes_back():
    tabs, first, second, other = TabMemory(), State(), State(), State()
    for session_hash, state in (("a", first), ("a", second), ("a", first), ("b", other)):
        tabs.add(session_hash, state)
    gone = weakref.ref(first)
    with tabs.reply():
        tabs.close_tab("a")
    assert State.closed == 2 and tabs.open_tabs == 1  # both states of tab "a", once each; tab "b" stays
    del first
    assert gone() is None  # the registry does not keep a state alive
    tabs.close_tab("a")  # closing again does nothing
    assert State.closed == 2
    blocks = [bytearray(4000) for _ in range(20000)]  # 80 MB in the C heap; every tenth block stays: holes
    kept = blocks[::10]
    del blocks
    assert release_free_memory() is True and len(kept) == 2000  # glibc (this machine): the holes' pages go back
