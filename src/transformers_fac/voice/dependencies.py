"""Lazy imports of the `voice` extra (`pip install "transformers-fac[voice]"`), with one clear error when missing."""

import types

from ..optional_imports import S3TOKENIZER_INSTALL, import_extra, install_hint, require_extra

VOICE_EXTRA_HINT = install_hint("voice")
_PACKAGES = {"kaldi_native_fbank": "kaldi-native-fbank", "onnxruntime": "onnxruntime", "onnx": "onnx"}
CLONING_MODULES = {**_PACKAGES, "einops": "einops", "s3tokenizer": "s3tokenizer"}
"""Everything cloning a voice from a clip imports (the speech tokenizer computes the prompt's codes)."""


def import_voice_dependency(module: str) -> types.ModuleType:
    """Import `module` (one of the voice extra's packages) or raise an `ImportError` naming the extra.

    Example:
        >>> import_voice_dependency("onnxruntime").__name__
        'onnxruntime'
    """
    return import_extra(module, "voice", "Custom voices", package=_PACKAGES.get(module))


def require_cloning(needed_by: str = "Cloning a voice") -> None:
    """Fails at once (before any model loads) when a package that cloning needs is missing, naming the commands that
    install them."""
    require_extra(CLONING_MODULES, "voice", needed_by, then=S3TOKENIZER_INSTALL)


__all__ = ["VOICE_EXTRA_HINT", "import_voice_dependency", "require_cloning"]
