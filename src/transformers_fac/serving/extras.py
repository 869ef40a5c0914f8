"""Optional dependencies of the server (FastAPI, uvicorn, Ray), imported only when a server feature is used."""

from types import ModuleType

from ..optional_imports import import_extra

EXTRAS = {"fastapi": "serve", "uvicorn": "serve", "ray": "ray", "yaml": "serve"}


def require(module: str) -> ModuleType:
    """Imports `module`, or raises an `ImportError` telling which extra of transformers-fac provides it.

    Example:
        >>> require("json").__name__
        'json'
    """
    extra = EXTRAS.get(module.split(".")[0], "serve")
    return import_extra(module, extra, "The Fun-Audio-Chat server")


__all__ = ["require"]
