"""Optional dependencies of the server, imported only when a server feature is used.

`import transformers_fac` never imports FastAPI, uvicorn or Ray; `require` imports one of them on first use and, when it
is missing, raises one clear error that names the extra to install.
"""

import importlib
from types import ModuleType

EXTRAS = {"fastapi": "serve", "uvicorn": "serve", "ray": "ray", "ray.serve": "ray", "yaml": "serve"}


def require(module: str) -> ModuleType:
    """Imports `module`, or raises an `ImportError` telling which extra of transformers-fac provides it.

    Example:
        >>> require("json").__name__
        'json'
    """
    try:
        return importlib.import_module(module)
    except ImportError as error:
        extra = EXTRAS.get(module, EXTRAS.get(module.split(".")[0], "serve"))
        raise ImportError(
            f"The Fun-Audio-Chat server needs `{module}`, which is not installed: "
            f'pip install "transformers-fac[{extra}]"'
        ) from error


__all__ = ["require"]
