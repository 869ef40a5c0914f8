"""Work-arounds for broken optional dependencies of transformers.

`transformers.audio_utils` (imported by every processor and feature extractor) does `import torchaudio` whenever a
`torchaudio` package is installed. A torchaudio wheel built for another torch (a CUDA build next to a CPU-only torch,
or another torch release) raises `OSError` at import time, which would make even `WhisperFeatureExtractor`
unusable although transformers does not need torchaudio for it. `hide_broken_torchaudio()` detects that case and
makes transformers treat torchaudio as absent.
"""

import importlib.util
import logging
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
