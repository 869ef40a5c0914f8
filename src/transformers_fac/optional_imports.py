"""Optional dependencies (the `live`, `voice`, `serve` and `ray` extras), imported only when a feature needs them.

`import transformers_fac` never imports them; `import_extra` imports one on first use and, when it is missing, raises
one `ImportError` that says what needs it and which extra installs it.
"""

import importlib
import importlib.util
from types import ModuleType

S3TOKENIZER_INSTALL = "pip install --no-deps s3tokenizer==0.3.0"
"""The speech tokenizer's own install step: without its torchaudio requirement (no torchaudio build matches every
torch, and it is never used here); the `voice` and `train` extras install what it does need (einops, onnx)."""


def install_hint(extra: str) -> str:
    """The command that installs an extra of transformers-fac.

    Example:
        >>> install_hint("live")
        'pip install "transformers-fac[live]"'
    """
    return f'pip install "transformers-fac[{extra}]"'


def import_extra(module: str, extra: str, needed_by: str, package: str | None = None) -> ModuleType:
    """Imports `module`, or raises an `ImportError` naming the missing `package` (default: the module) and the extra.

    Example:
        >>> import_extra("json", "serve", "The server").__name__
        'json'
    """
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(
            f"{needed_by} needs `{package or module}`, which is not installed: {install_hint(extra)}"
        ) from error


def _installed(module: str) -> bool:
    """Whether `module` can be imported (found on the path, and not blocked by a `None` in `sys.modules`)."""
    try:
        return importlib.util.find_spec(module) is not None
    except ValueError:  # `sys.modules[module] is None`: importing it raises
        return False


def require_extra(modules: dict[str, str], extra: str, needed_by: str, then: str = "") -> None:
    """Checks, without importing anything, that the `modules` (import name -> package name) are installed; raises one
    `ImportError` naming the missing packages and the commands that install them (`then`: a step after the extra).

    Example:
        >>> require_extra({"json": "json"}, "serve", "The server")  # present: nothing happens
    """
    missing = [package for module, package in modules.items() if not _installed(module)]
    if missing:
        steps = install_hint(extra) + (f", then {then}" if then else "")
        raise ImportError(f"{needed_by} needs {', '.join(missing)}, which is not installed: {steps}")


__all__ = ["S3TOKENIZER_INSTALL", "import_extra", "install_hint", "require_extra"]
