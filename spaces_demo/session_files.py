"""The audio files of the chats shown by the demo, bounded: one folder per browser session holding the audio of its
last few turns only, emptied when the conversation is reset and removed when the session ends.

    files = SessionFiles(Path("/tmp/fac-demo/abc"), max_turns=2)
    files.new_turn()                      # -> paths of the turns that fell out of the window (deleted)
    path = files.save(np.zeros(1600, np.float32), 16000)
    files.close()                         # removes the folder
"""

import hashlib
import shutil
import tempfile
import uuid
from collections import deque
from pathlib import Path

import numpy as np
import soundfile as sf

DEFAULT_ROOT = Path(tempfile.gettempdir()) / "fac-demo"


def session_folder(root: str | Path, session_hash: str) -> Path:
    """The folder of a browser session under `root`, named by a hash of Gradio's session id (which the browser
    chooses, so it never becomes part of a path itself)."""
    return Path(root) / hashlib.sha256(session_hash.encode("utf-8")).hexdigest()[:32]


def remove_folder(folder: str | Path) -> None:
    """Deletes a session folder and everything in it (nothing happens if it is gone already)."""
    shutil.rmtree(folder, ignore_errors=True)


class SessionFiles:
    """The WAV files of one chat, grouped by turn; only the last `max_turns` turns keep theirs.

    Args:
        folder: where the files go (created on first use); None: a new temporary folder, made on first use.
        max_turns: how many turns keep their audio files.
    """

    def __init__(self, folder: str | Path | None = None, max_turns: int = 8):
        if max_turns < 1:
            raise ValueError(f"max_turns must be at least 1, got {max_turns}.")
        self.folder = Path(folder) if folder is not None else None
        self.max_turns = max_turns
        self._turns: deque[list[str]] = deque()

    def new_turn(self) -> set[str]:
        """Starts the files of a new turn; deletes those of the turns that no longer fit and returns their paths."""
        dropped = set()
        while len(self._turns) >= self.max_turns:
            for path in self._turns.popleft():
                Path(path).unlink(missing_ok=True)
                dropped.add(path)
        self._turns.append([])
        return dropped

    def save(self, samples: np.ndarray, rate: int) -> str:
        """Writes a 16-bit WAV file for the current turn and returns its path."""
        if self.folder is None:
            self.folder = Path(tempfile.mkdtemp(prefix="fac-demo-"))
        self.folder.mkdir(parents=True, exist_ok=True)
        path = str(self.folder / f"{uuid.uuid4().hex}.wav")
        sf.write(path, samples, rate, subtype="PCM_16")
        if not self._turns:
            self._turns.append([])
        self._turns[-1].append(path)
        return path

    def clear(self) -> None:
        """Deletes every file of this chat (a new conversation); the folder stays in use."""
        for turn in self._turns:
            for path in turn:
                Path(path).unlink(missing_ok=True)
        self._turns.clear()

    def close(self) -> None:
        """Deletes the files and the folder (the session has ended)."""
        self._turns.clear()
        if self.folder is not None:
            remove_folder(self.folder)
