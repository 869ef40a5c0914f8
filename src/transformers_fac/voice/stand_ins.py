"""Small deterministic stand-ins for the two models of voice cloning, for tests and the tiny checkpoint (offline).

- `build_stand_in_campplus(path)`: an ONNX model with CAM++'s signature (`feats` [1, frames, 80] float32 ->
  `embs` [1, 192]): frame-wise projection + ReLU, mean and standard-deviation pooling over frames (like CAM++'s
  statistics pooling), output projection. Weights are seeded random numbers, written with the `onnx` helper API, so
  the same seed gives the same bytes. It runs through the same ONNX Runtime path as the real `campplus.onnx`.
- `build_stand_in_speech_tokenizer(path)`: a small randomly initialised `S3TokenizerV3` (the stand-in the fine-tuning
  tests and the smoke recipe already use) saved with `SpeechCodeTokenizer.save`.

Random weights give speaker vectors that differ between clips and codes that differ between clips, nothing more.

Example:
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> [path.name for path in write_voice_stand_ins(folder)]
    ['campplus.onnx', 'speech_tokenizer_v3.safetensors']
"""

import os
from pathlib import Path

import numpy as np

from ..speech_tokenizer import SpeechCodeTokenizer
from .dependencies import import_voice_dependency
from .frontend import CAMPPLUS_FILE, SPEECH_TOKENIZER_FILES

STAND_IN_TOKENIZER_CONFIG = {"n_audio_state": 64, "n_audio_head": 1, "n_audio_layer": 1}
"""`ModelConfigV3` overrides of the small random speech tokenizer."""


def build_stand_in_campplus(
    path: str | os.PathLike, seed: int = 0, hidden: int = 64, feature_dim: int = 80, embedding_dim: int = 192
) -> Path:
    """Write a CAM++-signature ONNX model (see the module docstring) to `path`."""
    onnx = import_voice_dependency("onnx")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    weights = {
        "w_frame": rng.standard_normal((feature_dim, hidden)) / np.sqrt(feature_dim),
        "b_frame": 0.1 * rng.standard_normal(hidden),
        "w_out": rng.standard_normal((2 * hidden, embedding_dim)) / np.sqrt(2 * hidden),
    }
    initializers = [numpy_helper.from_array(value.astype(np.float32), name) for name, value in weights.items()]
    nodes = [
        helper.make_node("MatMul", ["feats", "w_frame"], ["projected"]),
        helper.make_node("Add", ["projected", "b_frame"], ["biased"]),
        helper.make_node("Relu", ["biased"], ["hidden"]),
        helper.make_node("ReduceMean", ["hidden"], ["mean"], axes=[1], keepdims=0),
        helper.make_node("ReduceMean", ["hidden"], ["mean_keep"], axes=[1], keepdims=1),
        helper.make_node("Sub", ["hidden", "mean_keep"], ["centred"]),
        helper.make_node("Mul", ["centred", "centred"], ["squared"]),
        helper.make_node("ReduceMean", ["squared"], ["variance"], axes=[1], keepdims=0),
        helper.make_node("Sqrt", ["variance"], ["std"]),
        helper.make_node("Concat", ["mean", "std"], ["pooled"], axis=1),
        helper.make_node("MatMul", ["pooled", "w_out"], ["embs"]),
    ]
    graph = helper.make_graph(
        nodes,
        "campplus_stand_in",
        [helper.make_tensor_value_info("feats", TensorProto.FLOAT, [1, "frames", feature_dim])],
        [helper.make_tensor_value_info("embs", TensorProto.FLOAT, [1, embedding_dim])],
        initializer=initializers,
    )
    model = helper.make_model(
        graph, producer_name="transformers_fac.voice.stand_ins", opset_imports=[helper.make_opsetid("", 17)]
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())
    return path


def build_stand_in_speech_tokenizer(path: str | os.PathLike, seed: int = 0) -> Path:
    """Write a small random v3 speech tokenizer (`.safetensors`, see the module docstring) to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    SpeechCodeTokenizer.random(seed=seed, **STAND_IN_TOKENIZER_CONFIG).save(path)
    return path


def write_voice_stand_ins(directory: str | os.PathLike, seed: int = 0) -> list[Path]:
    """Write both stand-ins into `directory` under the names `VoiceFrontend.from_source` looks for."""
    directory = Path(directory)
    return [
        build_stand_in_campplus(directory / CAMPPLUS_FILE, seed=seed),
        build_stand_in_speech_tokenizer(directory / SPEECH_TOKENIZER_FILES[1], seed=seed),
    ]


__all__ = [
    "STAND_IN_TOKENIZER_CONFIG",
    "build_stand_in_campplus",
    "build_stand_in_speech_tokenizer",
    "write_voice_stand_ins",
]
