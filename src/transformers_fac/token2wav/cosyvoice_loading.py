"""CosyVoice3 release layout <-> [`FunAudioChatToken2Wav`]: `cosyvoice3.yaml` + `flow.pt` + `hift.pt`.

Reading accepts both weight-norm key styles of `hift.pt` (`<m>.parametrizations.weight.original0/1` and the older
`<m>.weight_g/_v`) and a `generator.` prefix; loading is strict. Given a hub id, only those three files are downloaded
(not the LLM or the ONNX models of the release).
"""

import os
from os import PathLike
from pathlib import Path

import torch
from transformers import PreTrainedModel

from .cosyvoice_yaml import config_from_cosyvoice_yaml, cosyvoice_yaml_from_config

DEFAULT_COSYVOICE_REPO = "FunAudioLLM/Fun-CosyVoice3-0.5B-2512"
COSYVOICE_FILES = ("cosyvoice3.yaml", "flow.pt", "hift.pt")
# plain attributes of the reference modules that a re-saved checkpoint might carry; they are not weights
_NOT_WEIGHTS = ("decoder.rand_noise", "m_source.l_sin_gen.sine_waves", "m_source.l_sin_gen.rand_ini", "stft_window")


def resolve_cosyvoice_files(
    path_or_repo_id: str | PathLike = DEFAULT_COSYVOICE_REPO,
    revision: str | None = None,
    cache_dir: str | PathLike | None = None,
    token: str | bool | None = None,
    local_files_only: bool = False,
) -> dict[str, Path]:
    """Local paths of `cosyvoice3.yaml`, `flow.pt`, `hift.pt` in a directory, or downloaded from a hub repo."""
    if os.path.isdir(path_or_repo_id):
        folder = Path(path_or_repo_id)
        files = {name: folder / name for name in COSYVOICE_FILES}
        missing = [name for name, path in files.items() if not path.is_file()]
        if missing:
            raise FileNotFoundError(f"{folder} is not a CosyVoice3 directory: missing {', '.join(missing)}.")
        return files
    if Path(path_or_repo_id).exists() or str(path_or_repo_id).count("/") != 1:
        raise FileNotFoundError(f"{path_or_repo_id} is neither a CosyVoice3 directory nor a hub repo id.")
    from huggingface_hub import hf_hub_download

    return {
        name: Path(
            hf_hub_download(
                str(path_or_repo_id),
                name,
                revision=revision,
                cache_dir=cache_dir,
                token=token,
                local_files_only=local_files_only,
            )
        )
        for name in COSYVOICE_FILES
    }


def normalize_flow_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop non-weight attributes a re-saved `flow.pt` might hold."""
    return {key: value for key, value in state_dict.items() if key not in _NOT_WEIGHTS}


def normalize_hift_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip a `generator.` prefix, map `weight_g`/`weight_v` to `parametrizations.weight.original0/1`."""
    renamed = {}
    for key, value in state_dict.items():
        if key.startswith("generator."):
            key = key[len("generator.") :]
        if key in _NOT_WEIGHTS:
            continue
        if key.endswith(".weight_g"):
            key = key[: -len("weight_g")] + "parametrizations.weight.original0"
        elif key.endswith(".weight_v"):
            key = key[: -len("weight_v")] + "parametrizations.weight.original1"
        renamed[key] = value
    return renamed


def _load_strict(module: torch.nn.Module, state_dict: dict[str, torch.Tensor], name: str) -> None:
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state_dict) if expected[k].shape != state_dict[k].shape)
    if missing or unexpected or wrong:
        details = []
        for label, keys in (("missing", missing), ("unexpected", unexpected)):
            if keys:
                details.append(f"{len(keys)} {label} (e.g. {', '.join(keys[:3])})")
        if wrong:
            key = wrong[0]
            details.append(
                f"{len(wrong)} with other shapes (e.g. {key}: file {tuple(state_dict[key].shape)} "
                f"vs yaml {tuple(expected[key].shape)})"
            )
        raise ValueError(f"{name} does not match the yaml hyper-parameters: {'; '.join(details)}.")
    module.load_state_dict(state_dict, strict=True, assign=True)


def load_cosyvoice(
    path_or_repo_id: str | PathLike = DEFAULT_COSYVOICE_REPO,
    *,
    model_class: type[PreTrainedModel],
    revision: str | None = None,
    cache_dir: str | PathLike | None = None,
    token: str | bool | None = None,
    local_files_only: bool = False,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    **config_overrides,
) -> PreTrainedModel:
    """Build a decoder from a CosyVoice3 directory or hub repo: sizes from `cosyvoice3.yaml`, weights from `flow.pt`
    and `hift.pt` (`torch.load(weights_only=True)`, strict). `dtype` casts the model (the f0 predictor and harmonic
    source stay float32); `config_overrides` adjust non-weight settings (e.g. `stream_flow_context_codes`)."""
    files = resolve_cosyvoice_files(path_or_repo_id, revision, cache_dir, token, local_files_only)
    config = config_from_cosyvoice_yaml(files["cosyvoice3.yaml"], **config_overrides)
    flow_state = normalize_flow_state_dict(torch.load(files["flow.pt"], map_location="cpu", weights_only=True))
    hift_state = normalize_hift_state_dict(torch.load(files["hift.pt"], map_location="cpu", weights_only=True))
    with torch.device("meta"):
        model = model_class(config)
    _load_strict(model.flow, flow_state, "flow.pt")
    _load_strict(model.hift, hift_state, "hift.pt")
    # where the release came from: voice cloning looks for campplus.onnx and the speech tokenizer there
    model.name_or_path = model.config.name_or_path = os.fspath(path_or_repo_id)
    model.eval()
    if device is not None or dtype is not None:
        model.to(device=device, dtype=dtype)
    return model


def save_cosyvoice_dir(
    model: PreTrainedModel,
    out_dir: str | PathLike,
    weight_norm_style: str = "parametrizations",
    generator_prefix: bool = False,
) -> Path:
    """Write `model` in the CosyVoice3 release layout (`cosyvoice3.yaml`, `flow.pt`, `hift.pt`).

    `weight_norm_style="weight_g"` writes the older `weight_g`/`weight_v` names; `generator_prefix=True` prefixes the
    HiFT keys with `generator.` (as in a HiFiGAN training checkpoint). Both forms load back identically.
    """
    if weight_norm_style not in ("parametrizations", "weight_g"):
        raise ValueError(f"weight_norm_style must be 'parametrizations' or 'weight_g', got {weight_norm_style!r}.")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "cosyvoice3.yaml").write_text(cosyvoice_yaml_from_config(model.config), encoding="utf-8")
    flow_state = {k: v.detach().cpu().float().clone() for k, v in model.flow.state_dict().items()}
    hift_state = {}
    for key, value in model.hift.state_dict().items():
        if weight_norm_style == "weight_g":
            key = key.replace("parametrizations.weight.original0", "weight_g")
            key = key.replace("parametrizations.weight.original1", "weight_v")
        hift_state[("generator." if generator_prefix else "") + key] = value.detach().cpu().float().clone()
    torch.save(flow_state, out / "flow.pt")
    torch.save(hift_state, out / "hift.pt")
    return out
