"""Memory given back when the load ends: a closed tab's states are released at once, large buffers are returned to
the system when freed, and the C heap's free pages go back once no reply is in progress.

Gradio keeps a closed tab's `gr.State` values for an hour (in case it reconnects) before calling their
`delete_callback`; the app's tabs hold conversations (question audio), reply audio and, in hands-free mode, a live
session with its own voice-activity model, so the app closes them itself when the tab goes. And glibc keeps memory
freed by Python, numpy and torch inside its heaps (hundreds of MB after a few concurrent replies on CPU) until
`malloc_trim` returns it; worse, after the first large buffers are freed it raises its mmap threshold (up to 32 MB),
so that later large tensors are carved out of the heaps and fragment them.
"""

import ctypes
import ctypes.util
import functools
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
LARGE_BUFFER = 1 << 20
"""Buffers from this size on get pages of their own, returned when freed (glibc's default starts at 128 KiB and
grows; 128 KiB fixed made CPU replies of the tiny model 25-90 % slower, 1 MiB no slower than the default)."""


class Closeable(Protocol):
    def close(self) -> None: ...


@functools.cache
def _glibc():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") else None


def release_free_memory() -> bool:
    """Returns the free pages of the C heaps to the system (glibc's `malloc_trim(0)`); False where there is no glibc
    (macOS, musl) or nothing could be returned.

    Example:

    ```python
    >>> release_free_memory() in (True, False)
    True
    ```
    """
    libc = _glibc()
    return bool(libc is not None and libc.malloc_trim(0))


def return_large_buffers_on_free(size: int = LARGE_BUFFER) -> bool:
    """Makes glibc give buffers of `size` bytes or more pages of their own, returned to the system when freed, for
    the rest of the process (it also stops glibc's raising of that threshold). Call it at start-up; False where there
    is no glibc.

    Example:

    ```python
    >>> return_large_buffers_on_free() in (True, False)
    True
    ```
    """
    libc = _glibc()
    return bool(libc is not None and libc.mallopt(M_MMAP_THRESHOLD, size))


class TabMemory:
    """The per-tab states of the app by Gradio session (weakly held: anything with `close()`), closed as soon as their
    tab closes, and the replies in progress: when the last one ends (or a tab closes with none running), the free
    memory goes back to the system.

    Example:

    ```python
    >>> tabs = TabMemory()
    >>> tabs.add("session-hash", chat_state)  # in a handler: request.session_hash and the tab's gr.State value
    >>> with tabs.reply():
    ...     ...  # a reply streams
    >>> tabs.close_tab("session-hash")  # demo.unload: the tab has gone
    ```
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._tabs: dict[str, dict[int, weakref.ref]] = {}  # session hash -> id(state) -> state
        self._replies = 0

    def add(self, session_hash: str, state: Closeable) -> None:
        with self._lock:
            self._tabs.setdefault(session_hash, {})[id(state)] = weakref.ref(state)

    def close_tab(self, session_hash: str) -> None:
        """The tab has gone: closes its states (they stay usable should it reconnect) and gives memory back."""
        with self._lock:
            references = self._tabs.pop(session_hash, {}).values()
        for state in [reference() for reference in references]:
            if state is not None:
                state.close()  # empties it: what it held is free before the memory goes back
        self._release_if_idle()

    @property
    def open_tabs(self) -> int:
        with self._lock:
            return len(self._tabs)

    @contextmanager
    def reply(self) -> Iterator[None]:
        """Counts a reply in progress for as long as the block runs."""
        with self._lock:
            self._replies += 1
        try:
            yield
        finally:
            with self._lock:
                self._replies -= 1
            self._release_if_idle()

    def _release_if_idle(self) -> None:
        with self._lock:
            idle = self._replies == 0
        if idle:
            release_free_memory()
