"""Speech quality without a reference: DNSMOS (P.835 SIG / BAK / OVRL and P.808, through `speechmos`) and UTMOS22.

DNSMOS's ONNX models ship inside the `speechmos` wheel, so it runs offline. UTMOS22 "strong" (the UTokyo-SaruLab
VoiceMOS 2022 system, as UltraEval-Audio and the report use it) is loaded through torch.hub from `tarepan/SpeechMOS`,
whose release holds the weights; it needs the network the first time (then torch.hub's cache).

Both take 16 kHz mono float32 waveforms (see `audio_metric.audio_batch` for other forms).
"""

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..optional_imports import import_extra

DNSMOS_KEYS = ("ovrl_mos", "sig_mos", "bak_mos", "p808_mos")
"""speechmos's names of the four DNSMOS scores."""

UTMOS_HUB_REPO = "tarepan/SpeechMOS:v1.2.0"
UTMOS_ENTRY = "utmos22_strong"


def _mean_and_clips(per_clip: list[dict[str, float]], keys: Sequence[str]) -> dict[str, Any]:
    means = {key: float(np.mean([clip[key] for clip in per_clip])) if per_clip else float("nan") for key in keys}
    return {**means, "per_clip": per_clip, "clips": len(per_clip)}


def dnsmos_scores(waveforms_16k: Sequence[np.ndarray], personalized: bool = False) -> dict[str, Any]:
    """DNSMOS of each 16 kHz clip through `speechmos.dnsmos.run`: the means under speechmos's keys, and `per_clip`.

    Samples outside [-1, 1] are clipped first (speechmos refuses them).

    Example:
        >>> scores = dnsmos_scores([np.zeros(16000, dtype=np.float32)])  # doctest: +SKIP
        >>> sorted(scores)  # doctest: +SKIP
        ['bak_mos', 'clips', 'ovrl_mos', 'p808_mos', 'per_clip', 'sig_mos']
    """
    dnsmos = import_extra("speechmos.dnsmos", "eval", "DNSMOS", package="speechmos")
    model_type = "dnsmos_personalized" if personalized else "dnsmos"
    per_clip = []
    for clip in waveforms_16k:
        clip = np.clip(np.asarray(clip, dtype=np.float32), -1.0, 1.0)
        if clip.size == 0:
            raise ValueError("DNSMOS cannot score an empty clip.")
        scores = dnsmos.run(clip, 16000, model_type=model_type)
        per_clip.append({key: float(scores[key]) for key in DNSMOS_KEYS})
    return _mean_and_clips(per_clip, DNSMOS_KEYS)


def load_utmos(device: str = "cpu"):
    """The UTMOS22 strong predictor from torch.hub (`tarepan/SpeechMOS`); raises `RuntimeError` in one line when it
    cannot be fetched (offline, no cached copy)."""
    import torch

    try:
        predictor = torch.hub.load(UTMOS_HUB_REPO, UTMOS_ENTRY, trust_repo=True, verbose=False)
    except Exception as error:  # noqa: BLE001 - torch.hub raises many kinds (URLError, HTTPError, RuntimeError...)
        reason = (str(error).splitlines() or [type(error).__name__])[0][:160]
        raise RuntimeError(
            f"UTMOS needs the {UTMOS_ENTRY} weights from torch.hub ({UTMOS_HUB_REPO}), which could not be loaded "
            f"({type(error).__name__}: {reason}); connect once to fill torch.hub's cache."
        ) from error
    return predictor.to(device).eval()


def utmos_scores(waveforms_16k: Sequence[np.ndarray], predictor: Any = None, device: str = "cpu") -> dict[str, Any]:
    """UTMOS (1-5) of each 16 kHz clip, one clip at a time (padding would change the scores): `utmos` (the mean)
    and `per_clip`."""
    import torch

    predictor = predictor if predictor is not None else load_utmos(device)
    per_clip = []
    with torch.inference_mode():
        for clip in waveforms_16k:
            wave = torch.as_tensor(np.asarray(clip, dtype=np.float32), device=device)[None]
            per_clip.append({"utmos": float(predictor(wave, 16000).reshape(-1)[0])})
    return _mean_and_clips(per_clip, ("utmos",))


__all__ = ["DNSMOS_KEYS", "UTMOS_ENTRY", "UTMOS_HUB_REPO", "dnsmos_scores", "load_utmos", "utmos_scores"]
