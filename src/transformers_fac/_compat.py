"""Work-arounds for broken optional dependencies of transformers.

`transformers.audio_utils` (imported by every processor and feature extractor) does `import torchaudio` whenever a
`torchaudio` package is installed. A torchaudio wheel built for another torch (a CUDA build next to a CPU-only torch,
or another torch release) raises `OSError` at import time, which would make even `WhisperFeatureExtractor`
unusable although transformers does not need torchaudio for it. `hide_broken_torchaudio()` detects that case and
makes transformers treat torchaudio as absent.

With torchao installed (the `quantize` extra), every transformers model import loads it, and torchao 0.18 on torch
2.13 logs warnings that say nothing to our users: its CUDA-only kernel libraries fail to load on a CPU-only torch, and
torch deprecates how it registers two enums. `quiet_torchao_import_noise()` drops exactly those records (anything else
torchao or torch logs still shows), so that a command's stderr keeps only what it has to say.
"""

import importlib.util
import logging
import re
import sys

logger = logging.getLogger(__name__)


def hide_broken_torchaudio() -> bool:
    """Mark an installed but unimportable `torchaudio` as absent, so that transformers does not try to import it.

    Returns `True` when torchaudio was found broken and hidden, `False` when it is importable or not installed.
    A working torchaudio is left untouched.

    Example:
        >>> from transformers_fac._compat import hide_broken_torchaudio
        >>> isinstance(hide_broken_torchaudio(), bool)
        True
    """
    if "torchaudio" in sys.modules:
        return sys.modules["torchaudio"] is None
    if importlib.util.find_spec("torchaudio") is None:
        return False
    try:
        import torchaudio  # noqa: F401
    except (ImportError, OSError, RuntimeError) as error:
        for name in [name for name in sys.modules if name == "torchaudio" or name.startswith("torchaudio.")]:
            del sys.modules[name]
        # `None` in sys.modules makes `import torchaudio` raise ImportError and `find_spec` return None.
        sys.modules["torchaudio"] = None
        logger.info("torchaudio is installed but cannot be imported (%s); transformers will not use it.", error)
        return True
    return False


# Records logged while torchao is imported that are not the user's concern (see the module docstring).
_TORCHAO_NOISE = {
    "torchao": re.compile(r"Failed to load .*_C_[A-Za-z0-9_]*\.(abi3|cpython).*\.so"),
    "torch.utils._pytree": re.compile(r"<enum '\w+'> is an Enum subclass and is now natively supported"),
}


class _DropMatching(logging.Filter):
    def __init__(self, pattern: "re.Pattern[str]"):
        super().__init__()
        self.pattern = pattern

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.pattern.search(record.getMessage())


def quiet_torchao_import_noise() -> None:
    """Drops the known-harmless warnings that importing torchao logs on a CPU-only torch (see the module docstring).

    Example:
        >>> from transformers_fac._compat import quiet_torchao_import_noise
        >>> quiet_torchao_import_noise()  # idempotent
    """
    for name, pattern in _TORCHAO_NOISE.items():
        target = logging.getLogger(name)
        if not any(isinstance(f, _DropMatching) for f in target.filters):
            target.addFilter(_DropMatching(pattern))
