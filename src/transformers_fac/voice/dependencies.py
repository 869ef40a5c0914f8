"""Lazy imports of the `voice` extra (`pip install "transformers-fac[voice]"`), with one clear error when missing."""

import importlib
import types

VOICE_EXTRA_HINT = 'pip install "transformers-fac[voice]"'
_PACKAGES = {"kaldi_native_fbank": "kaldi-native-fbank", "onnxruntime": "onnxruntime", "onnx": "onnx"}


def import_voice_dependency(module: str) -> types.ModuleType:
    """Import `module` (one of the voice extra's packages) or raise an `ImportError` naming the extra.

    Example:
        >>> import_voice_dependency("onnxruntime").__name__
        'onnxruntime'
    """
    try:
        return importlib.import_module(module)
    except ImportError as error:
        package = _PACKAGES.get(module, module)
        raise ImportError(
            f"Custom voices need the optional package `{package}`, which is not installed: {VOICE_EXTRA_HINT}."
        ) from error


__all__ = ["VOICE_EXTRA_HINT", "import_voice_dependency"]
