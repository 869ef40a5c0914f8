"""An OpenAI-compatible Fun-Audio-Chat server, and its Ray Serve deployment: the HTTP / WebSocket protocol over the
reply engine (`transformers_fac.engine`).

`fac-serve` (see `cli.py`) runs the FastAPI app of `app.py` under uvicorn, or on Ray Serve with `--ray`
(`ray_serve.py`). FastAPI, uvicorn and Ray are imported only when a server starts (`pip install
"transformers-fac[serve]"` / `[ray]`).
"""

from .settings import ServerSettings

__all__ = ["ServerSettings"]
