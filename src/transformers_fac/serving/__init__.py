"""An OpenAI-compatible Fun-Audio-Chat server with request batching, and its Ray Serve deployment.

`fac-serve` (see `cli.py`) runs the FastAPI app of `app.py` under uvicorn, or on Ray Serve with `--ray`
(`ray_serve.py`). The batching engine (`batching.py`) is usable on its own, e.g. by the Gradio Space. FastAPI,
uvicorn and Ray are imported only when a server starts (`pip install "transformers-fac[serve]"` / `[ray]`).
"""

from .batching import BatchingEngine, EngineClosed, QueueFull, RequestError
from .replies import AudioDelta, Reply, ReplyDone, ReplyFailed, ReplyRequest, TextDelta
from .settings import ServerSettings

__all__ = [
    "AudioDelta",
    "BatchingEngine",
    "EngineClosed",
    "QueueFull",
    "Reply",
    "ReplyDone",
    "ReplyFailed",
    "ReplyRequest",
    "RequestError",
    "ServerSettings",
    "TextDelta",
]
