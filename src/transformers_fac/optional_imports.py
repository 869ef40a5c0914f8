"""Optional dependencies (the `live`, `voice`, `serve` and `ray` extras), imported only when a feature needs them.

`import transformers_fac` never imports them; `import_extra` imports one on first use and, when it is missing, raises
one `ImportError` that says what needs it and which extra installs it.
"""

import importlib
from types import ModuleType


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


__all__ = ["import_extra", "install_hint"]
