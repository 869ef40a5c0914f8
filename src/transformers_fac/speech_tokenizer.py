"""CosyVoice3 speech tokenizer v3 (25 Hz, 6561 codes): assistant audio → the speech codes Fun-Audio-Chat learns to say.

The codes come from `s3tokenizer`'s `S3TokenizerV3` (a PyTorch port of CosyVoice3's `speech_tokenizer_v3.onnx`).
Audio is cut the way Fun-Audio-Chat's official data preparation cuts it: consecutive **non-overlapping 30 s
windows**, a last window shorter than 1 s merged with the one before and the pair split into two halves; each
window gets its own log-mel spectrogram (128 bins) and the codes of the windows are concatenated.

`s3tokenizer` imports `torchaudio` at module level but uses it only in its own `load_audio`, which we never call
(audio is read with `transformers_fac.audio_io`). `import_s3tokenizer()` therefore imports it with a temporary
stand-in for `torchaudio` when the real one is missing or cannot be loaded (a torchaudio built for another torch),
and restores `sys.modules` afterwards.

Besides the downloaded model and a local `speech_tokenizer_v3.onnx`, a tokenizer can be saved to and loaded from a
`.safetensors` file (its weights plus its `ModelConfigV3` in the metadata, no pickle): `SpeechCodeTokenizer.save`.
The tiny checkpoint ships a small random one this way (the stand-in used for voice cloning without a download).

Example (random weights, no download; real use: `SpeechCodeTokenizer()` downloads `speech_tokenizer_v3_25hz`):
    >>> import numpy as np
    >>> from transformers_fac.training import SpeechCodeTokenizer
    >>> tokenizer = SpeechCodeTokenizer.random(seed=0, n_audio_state=64, n_audio_head=1, n_audio_layer=1)
    >>> codes = tokenizer(np.zeros(16000, dtype=np.float32) + 0.01)
    >>> len(codes), all(0 <= code < 6561 for code in codes)
    (25, True)
"""

import contextlib
import importlib
import json
import logging
import os
import sys
import types
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import numpy as np
import torch

from .audio_io import SAMPLING_RATE, load_audio
from .optional_imports import S3TOKENIZER_INSTALL, install_hint

logger = logging.getLogger(__name__)

DEFAULT_SPEECH_TOKENIZER = "speech_tokenizer_v3_25hz"
"""`s3tokenizer` name of CosyVoice3's tokenizer (downloaded from ModelScope into `~/.cache/s3tokenizer`)."""

WINDOW_SECONDS = 30
"""Audio is tokenized in non-overlapping windows of this length (the official data preparation's rule)."""

MIN_LAST_WINDOW_SECONDS = 1
"""A last window shorter than this is merged with the previous one and the pair is split in two halves."""

CODEBOOK_SIZE = 6561
"""Speech codes are 0 … 6560 (3^8 FSQ levels)."""

_INSTALL_HINT = (
    "The speech tokenizer (cloning a voice, preparing spoken training data) needs the `s3tokenizer` package: "
    f"{install_hint('voice')} (or [train]), then {S3TOKENIZER_INSTALL} (its torchaudio requirement is not used)."
)


def _torchaudio_stand_in() -> types.ModuleType:
    module = types.ModuleType("torchaudio")
    module.__doc__ = "Stand-in installed by transformers_fac while importing s3tokenizer (torchaudio is unusable)."

    def __getattr__(name: str):
        raise ImportError(
            f"torchaudio.{name} is unavailable: torchaudio is missing or does not match this torch. "
            "s3tokenizer.load_audio cannot be used; load audio with transformers_fac.audio_io.load_audio."
        )

    module.__getattr__ = __getattr__
    return module


def _torchaudio_usable() -> bool:
    if "torchaudio" in sys.modules:
        return sys.modules["torchaudio"] is not None and not getattr(sys.modules["torchaudio"], "__getattr__", None)
    if importlib.util.find_spec("torchaudio") is None:
        return False
    try:
        importlib.import_module("torchaudio")
    except (ImportError, OSError, RuntimeError):
        for name in [name for name in sys.modules if name == "torchaudio" or name.startswith("torchaudio.")]:
            del sys.modules[name]
        return False
    return True


def import_s3tokenizer() -> types.ModuleType:
    """Import `s3tokenizer`, with a temporary `torchaudio` stand-in when the real torchaudio is missing or broken.

    `sys.modules["torchaudio"]` is restored to what it was before (absent, `None` as set by
    `transformers_fac._compat.hide_broken_torchaudio`, or the real module), so nothing else sees the stand-in.
    """
    if "s3tokenizer" in sys.modules and sys.modules["s3tokenizer"] is not None:
        return sys.modules["s3tokenizer"]
    if importlib.util.find_spec("s3tokenizer") is None:
        raise ImportError(_INSTALL_HINT)
    if _torchaudio_usable():
        return importlib.import_module("s3tokenizer")
    missing = object()
    previous = sys.modules.get("torchaudio", missing)
    sys.modules["torchaudio"] = _torchaudio_stand_in()
    try:
        return importlib.import_module("s3tokenizer")
    finally:
        if previous is missing:
            sys.modules.pop("torchaudio", None)
        else:
            sys.modules["torchaudio"] = previous


def split_windows(
    waveform: np.ndarray,
    sampling_rate: int = SAMPLING_RATE,
    window_seconds: float = WINDOW_SECONDS,
    min_last_seconds: float = MIN_LAST_WINDOW_SECONDS,
) -> list[np.ndarray]:
    """Cut a waveform into non-overlapping `window_seconds` windows; a last window shorter than `min_last_seconds`
    is merged with the previous one and the merged pair is split into two equal halves (the official rule).

    Example:
        >>> [len(w) for w in split_windows(np.zeros(16000 * 60 + 8000), 16000)]
        [480000, 244000, 244000]
    """
    window = int(window_seconds * sampling_rate)
    windows = [waveform[start : start + window] for start in range(0, len(waveform), window)]
    if len(windows) > 1 and len(windows[-1]) < min_last_seconds * sampling_rate:
        merged = np.concatenate([windows[-2], windows[-1]])
        half = len(merged) // 2
        windows[-2:] = [merged[:half], merged[half:]]
    return windows


class SpeechCodeTokenizer:
    """Turns speech (any input `transformers_fac.audio_io.load_audio` reads) into 25 Hz CosyVoice3 speech codes.

    The `S3TokenizerV3` model is loaded on first use, so the object is cheap to create, to pickle into
    `datasets.map(num_proc=...)` workers (each worker loads its own copy) and to hash for the `datasets` cache.

    Args:
        name_or_path: `"speech_tokenizer_v3_25hz"` (default: downloaded once from ModelScope into
            `download_root`, `~/.cache/s3tokenizer` by default) or a local `speech_tokenizer_v3.onnx` (e.g. the one in
            a `Fun-CosyVoice3-0.5B-2512` download), a `.pt` state dict of `S3TokenizerV3`, or a `.safetensors` file
            written by `save`.
        device: where the tokenizer runs (`"cpu"`, `"cuda"`, `"cuda:1"`); `"cuda"` with several GPUs and
            `rank` set picks `cuda:{rank % n}`.
        download_root: cache folder for the downloaded ONNX file.
        batch_size: windows tokenized together.
        random_init: build `S3TokenizerV3` with random weights (seeded by `seed`) instead of loading any: for tests
            and smoke runs only; `model_config` overrides fields of `s3tokenizer`'s `ModelConfigV3` (e.g. a tiny
            `n_audio_layer`).
    """

    def __init__(
        self,
        name_or_path: str | os.PathLike = DEFAULT_SPEECH_TOKENIZER,
        device: str | torch.device = "cpu",
        download_root: str | None = None,
        batch_size: int = 8,
        random_init: bool = False,
        seed: int = 0,
        model_config: dict | None = None,
    ):
        self.name_or_path = os.fspath(name_or_path)
        self.device = str(device)
        self.download_root = download_root
        self.batch_size = int(batch_size)
        self.random_init = bool(random_init)
        self.seed = int(seed)
        self.model_config = dict(model_config or {})
        self._model = None

    @classmethod
    def random(cls, seed: int = 0, **model_config) -> "SpeechCodeTokenizer":
        """A randomly initialised `S3TokenizerV3` (no download): stands in for the real tokenizer in tests."""
        return cls(random_init=True, seed=seed, model_config=model_config)

    # pickling / hashing: only the settings travel, never the loaded weights
    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_model"] = None
        return state

    def __repr__(self) -> str:
        kind = f"random(seed={self.seed}, {self.model_config})" if self.random_init else repr(self.name_or_path)
        return f"{type(self).__name__}({kind}, device={self.device!r})"

    def to_dict(self) -> dict:
        """The settings (what a recipe's `speech_tokenizer:` section holds)."""
        return {key: value for key, value in self.__getstate__().items() if not key.startswith("_")}

    @property
    def model(self) -> torch.nn.Module:
        if self._model is None:
            self._model = self._load().to(self.device).eval()
        return self._model

    def _load(self) -> torch.nn.Module:
        s3tokenizer = import_s3tokenizer()
        from s3tokenizer.model_v3 import ModelConfigV3

        config = ModelConfigV3(**{**asdict(ModelConfigV3()), **self.model_config})
        if self.random_init:
            with _seeded(self.seed):
                return s3tokenizer.S3TokenizerV3(DEFAULT_SPEECH_TOKENIZER, config=config)
        if os.path.isfile(self.name_or_path) and self.name_or_path.endswith(".safetensors"):
            return _load_safetensors(s3tokenizer, self.name_or_path)
        if os.path.isfile(self.name_or_path):
            model = s3tokenizer.S3TokenizerV3(DEFAULT_SPEECH_TOKENIZER, config=config)
            if self.name_or_path.endswith(".onnx"):
                model.init_from_onnx(self.name_or_path)
            else:
                model.init_from_pt(self.name_or_path)
            return model
        if self.name_or_path != DEFAULT_SPEECH_TOKENIZER:
            raise ValueError(
                f"Unknown speech tokenizer {self.name_or_path!r}: pass {DEFAULT_SPEECH_TOKENIZER!r} (downloaded) or "
                "the path of a speech_tokenizer_v3.onnx file."
            )
        logger.info("Loading %s (downloaded from ModelScope on first use)", DEFAULT_SPEECH_TOKENIZER)
        return s3tokenizer.load_model(DEFAULT_SPEECH_TOKENIZER, download_root=self.download_root)

    def save(self, path: str | os.PathLike) -> str:
        """Write the tokenizer's weights and `ModelConfigV3` to a `.safetensors` file (loadable with
        `SpeechCodeTokenizer(path)`); returns the path."""
        path = os.fspath(path)
        if not path.endswith(".safetensors"):
            raise ValueError(f"A speech tokenizer is saved as a .safetensors file, got {path!r}.")
        from safetensors.torch import save_file

        state = {key: value.detach().cpu().contiguous() for key, value in self.model.state_dict().items()}
        config = json.dumps(asdict(self.model.config), sort_keys=True)
        # one metadata key: safetensors writes several in no fixed order, and the tiny checkpoint must be byte-stable
        save_file(state, path, metadata={_SAFETENSORS_CONFIG_KEY: config})
        return path

    def for_rank(self, rank: int | None) -> "SpeechCodeTokenizer":
        """The tokenizer a `datasets.map(with_rank=True)` worker uses: `"cuda"` becomes `cuda:{rank % n}` (in the
        worker's own copy, before its model loads), spreading the workers over the visible GPUs."""
        if rank is not None and self.device == "cuda" and self._model is None and torch.cuda.is_available():
            self.device = f"cuda:{rank % torch.cuda.device_count()}"
        return self

    def __call__(self, audio: Any, sampling_rate: int | None = None) -> list[int]:
        """Speech codes (25 per second) of one audio input; `sampling_rate` is that of a bare waveform."""
        return self.batch_encode([audio], sampling_rate=sampling_rate)[0]

    def batch_encode(self, audios: Sequence[Any], sampling_rate: int | None = None) -> list[list[int]]:
        """Speech codes of several audio inputs (their 30 s windows are tokenized in batches of `batch_size`)."""
        s3tokenizer = import_s3tokenizer()
        owners, mels = [], []
        for index, audio in enumerate(audios):
            waveform = load_audio(audio, sampling_rate=sampling_rate, name=f"audio[{index}]")
            for window in split_windows(waveform):
                mels.append(s3tokenizer.log_mel_spectrogram(torch.from_numpy(np.ascontiguousarray(window)), 128))
                owners.append(index)
        codes: list[list[int]] = [[] for _ in audios]
        for start in range(0, len(mels), self.batch_size):
            batch, lengths = s3tokenizer.padding(mels[start : start + self.batch_size])
            with torch.inference_mode():
                tokens, token_lengths = self.model.quantize(batch.to(self.device), lengths.to(self.device))
            for row, (owner, length) in enumerate(zip(owners[start:], token_lengths.tolist())):
                codes[owner].extend(int(code) for code in tokens[row, :length].tolist())
        return codes


_SAFETENSORS_CONFIG_KEY = "s3tokenizer.ModelConfigV3"


def _load_safetensors(s3tokenizer: types.ModuleType, path: str) -> torch.nn.Module:
    from s3tokenizer.model_v3 import ModelConfigV3
    from safetensors import safe_open

    with safe_open(path, "pt") as handle:
        metadata = handle.metadata() or {}
        if _SAFETENSORS_CONFIG_KEY not in metadata:
            raise ValueError(f"{path} is not a speech tokenizer saved by SpeechCodeTokenizer.save.")
        state = {key: handle.get_tensor(key) for key in handle.keys()}
    model = s3tokenizer.S3TokenizerV3(
        DEFAULT_SPEECH_TOKENIZER, config=ModelConfigV3(**json.loads(metadata[_SAFETENSORS_CONFIG_KEY]))
    )
    model.load_state_dict(state, strict=True)
    return model


@contextlib.contextmanager
def _seeded(seed: int):
    """Run with torch's global RNG seeded, restoring its previous state afterwards."""
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        yield
    finally:
        torch.random.set_rng_state(state)


__all__ = [
    "CODEBOOK_SIZE",
    "DEFAULT_SPEECH_TOKENIZER",
    "SpeechCodeTokenizer",
    "import_s3tokenizer",
    "split_windows",
]
