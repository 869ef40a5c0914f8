"""The audio thread's streams decoded in a process of their own ([`DecoderProcess`]).

On a CPU the engine's thread and the audio thread share one interpreter, whose lock lets one thread at a time run
Python; both run many small tensor operations, so each slows the other down (a tiny first chunk: 41 ms alone, 95 ms
beside a thread decoding other streams, 43 ms beside a process doing the same). With its streams in a child process,
the audio thread only hands codes over and gets samples back, and while it waits for them it holds no lock: a new
reply's prefill, steps and first chunk run on the engine's thread at the speed they have alone.

The child is spawned, says it is there, then receives the token2wav model's config, weights and noise and builds its
own copy on them (the decoder's memory twice); a stream moves in pickled without its model (`StreamBatch.attach`
binds it to the child's). Each method is one request and one answer over a pipe; an error in the child comes back as
the caller's exception, and a child that died makes every call raise (also during its start, at once, whether it
could import the program's main module or not: the caller gets the error, nothing is left running).
The owner's `close` stops and joins it (and kills it if it does not stop); the child ignores Ctrl-C (its owner stops
it) and ends with its parent.
"""

import signal
from collections.abc import Hashable
from multiprocessing.connection import wait
from typing import Any

import numpy as np
import torch
import torch.multiprocessing as multiprocessing

_START_TIMEOUT = 300.0  # seconds for the child to import, and again to build its decoder
_STOP_TIMEOUT = 10.0


class DecoderProcessError(RuntimeError):
    """The decoder process failed or is gone."""


def _serve(connection: Any, threads: int) -> None:
    """The child: says it holds its end of the pipe, receives the decoder and rebuilds it, then answers `StreamBatch`
    calls until told to stop or its parent goes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent owns Ctrl-C, and stops this process
    torch.set_num_threads(threads)
    try:
        connection.send(None)
        model_class, config, weights, noise, dit_dtype = connection.recv()
    except (EOFError, OSError):  # the parent is gone
        return
    with torch.device("meta"):  # no random weights to make: the parent's come next
        token2wav = model_class(config)
    token2wav.set_dit_dtype(dit_dtype)
    token2wav.load_state_dict(weights, assign=True)
    token2wav.noise = noise  # its overrides (`set_noise`) included
    streams = token2wav.eval().stream_batch()
    while True:
        try:
            method, args = connection.recv()
        except (EOFError, OSError):  # the parent is gone
            return
        if method is None:
            return
        try:
            answer = (True, getattr(streams, method)(*args))
        except Exception as error:  # noqa: BLE001 - it goes back to the caller
            answer = (False, f"{type(error).__name__}: {error}")
        connection.send(answer)


class DecoderProcess:
    """The `StreamBatch` methods the audio thread uses (`attach`, `push`, `due`, `next_step_codes`, `step`,
    `finish`, `drop`), run by a child process on its own streams.

    Args:
        token2wav: the model's `FunAudioChatToken2Wav` (on the CPU).
        threads: torch threads of the child (None: the calling thread's setting, as a thread would have it).
    """

    def __init__(self, token2wav: Any, threads: int | None = None):
        if token2wav.device.type != "cpu":
            raise ValueError(f"A decoder process decodes on the CPU; the decoder is on {token2wav.device}.")
        # the weights go as a state dict (weight-normed convolutions cannot be pickled as modules)
        dit_dtype = next(token2wav.flow.decoder.estimator.parameters()).dtype
        model = (type(token2wav), token2wav.config, token2wav.state_dict(), token2wav.noise, dit_dtype)
        threads = torch.get_num_threads() if threads is None else threads
        context = multiprocessing.get_context("spawn")
        self._connection, child = context.Pipe()
        # nothing large goes with the start: the process writes its arguments to the child, and blocks for good if
        # the child exits before reading them (it keeps the child's end of that pipe open while it writes)
        self._process = context.Process(target=_serve, args=(child, threads), name="fac-audio-decoder", daemon=True)
        self._process.start()
        child.close()
        try:
            self._wait_for_start()
            self._send(model)
            self._call("due", timeout=_START_TIMEOUT)  # answered once the decoder is built (raises if it died)
        except DecoderProcessError:
            self.close()
            raise

    def _wait_for_start(self) -> None:
        """Waits until the child holds its end of the pipe: a child that exits before (it could not import the
        program's main module) may leave that end open in this process (the spawn context keeps a copy until the child
        takes it), so the child itself is watched, not only the pipe."""
        ready = wait([self._connection, self._process.sentinel], _START_TIMEOUT)
        if not ready:
            raise DecoderProcessError(f"The decoder process did not start in {_START_TIMEOUT:.0f} s.")
        try:
            if self._connection in ready or self._connection.poll(0):
                self._connection.recv()
                return
        except (EOFError, OSError):
            pass
        self._process.join(_STOP_TIMEOUT)
        raise DecoderProcessError(
            f"The decoder process exited during its start (exit code {self._process.exitcode}; its error is printed "
            "above). A spawned process imports the program's main module first: run the program from a file with "
            'an `if __name__ == "__main__":` guard.'
        )

    def _call(self, method: str, *args: Any, timeout: float | None = None) -> Any:
        self._send((method, args))
        return self._answer(timeout)

    def _send(self, message: Any) -> None:
        try:
            self._connection.send(message)
        except OSError as error:
            raise DecoderProcessError(f"The decoder process is gone ({error}).") from None

    def _answer(self, timeout: float | None = None) -> Any:
        if timeout is not None and not self._connection.poll(timeout):
            raise DecoderProcessError(f"The decoder process did not answer in {timeout:.0f} s.")
        try:
            ok, answer = self._connection.recv()
        except (EOFError, OSError) as error:
            raise DecoderProcessError(f"The decoder process is gone ({type(error).__name__}).") from None
        if not ok:
            raise DecoderProcessError(answer)
        return answer

    def attach(self, key: Hashable, stream: Any) -> None:
        self._call("attach", key, stream)

    def push(self, key: Hashable, codes: list[int]) -> int:
        return self._call("push", key, codes)

    def due(self) -> dict[Hashable, Hashable]:
        return self._call("due")

    def next_step_codes(self, key: Hashable) -> int:
        return self._call("next_step_codes", key)

    def step(self, keys: list[Hashable], steps: int | None = None) -> dict[Hashable, np.ndarray]:
        return self._call("step", keys, steps)

    def finish(self, keys: list[Hashable]) -> dict[Hashable, np.ndarray]:
        return self._call("finish", keys)

    def drop(self, key: Hashable) -> None:
        self._call("drop", key)

    def close(self) -> None:
        """Stops the child and joins it (kills it if it does not stop in time)."""
        if self._process.is_alive():
            try:
                self._connection.send((None, ()))
            except OSError:
                pass
            self._process.join(_STOP_TIMEOUT)
            if self._process.is_alive():
                self._process.kill()
                self._process.join()
        self._connection.close()


__all__ = ["DecoderProcess", "DecoderProcessError"]
