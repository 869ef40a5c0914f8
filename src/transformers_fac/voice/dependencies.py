"""Lazy imports of the `voice` extra (`pip install "transformers-fac[voice]"`), with one clear error when missing."""

import types

from ..optional_imports import import_extra, install_hint

VOICE_EXTRA_HINT = install_hint("voice")
_PACKAGES = {"kaldi_native_fbank": "kaldi-native-fbank", "onnxruntime": "onnxruntime", "onnx": "onnx"}


def import_voice_dependency(module: str) -> types.ModuleType:
    """Import `module` (one of the voice extra's packages) or raise an `ImportError` naming the extra.

    Example:
        >>> import_voice_dependency("onnxruntime").__name__
        'onnxruntime'
    """
    return import_extra(module, "voice", "Custom voices", package=_PACKAGES.get(module))


__all__ = ["VOICE_EXTRA_HINT", "import_voice_dependency"]
