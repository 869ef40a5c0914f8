"""Helpers of the Space tests: `python spaces_demo/app.py` started as the README says, in a process of its own."""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

DEMO = Path(__file__).resolve().parents[1] / "spaces_demo"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def app_process(
    log: Path, *flags: str, env: dict[str, str] | None = None, demo: Path = DEMO
) -> Iterator[tuple[subprocess.Popen, str]]:
    """`python spaces_demo/app.py --model tiny *flags` (the app of the `demo` folder, default this checkout's) on a
    free port of 127.0.0.1 (output to `log`, extra environment `env`); yields the process and its URL once the page
    answers, and stops it with SIGTERM (unless the test already stopped it)."""
    port = free_port()
    environ = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", **(env or {})}
    command = [sys.executable, str(demo / "app.py"), "--model", "tiny", *flags, "--host", "127.0.0.1"]
    with log.open("w") as output:
        process = subprocess.Popen([*command, "--port", str(port)], env=environ, stdout=output, stderr=output)
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + 180
        try:
            while True:
                assert process.poll() is None, f"the app exited:\n{log.read_text()}"
                assert time.monotonic() < deadline, "the app did not start within 180 s"
                try:
                    with urllib.request.urlopen(url, timeout=5) as response:
                        if response.status == 200:
                            break
                except OSError:
                    time.sleep(0.5)
            yield process, url
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
