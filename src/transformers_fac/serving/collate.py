"""Joining the processor outputs of single requests into one generation batch, as the processor pads a batch.

Each request is processed alone when it arrives (that checks its audio and counts its tokens); a batch is then
assembled from those outputs without computing the audio features again: prompts are padded on the left, speech ids
on the right with the speech pad id, log-mel features on the right with zeros (the audio encoder reads only the
frames that `feature_attention_mask` marks).
"""

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F

PROMPT_KEYS = ("input_ids", "attention_mask")
AUDIO_KEYS = ("speech_ids", "speech_attention_mask", "input_features", "feature_attention_mask", "feature_exist_mask")


def _pad_right(tensors: list[torch.Tensor], value: float) -> torch.Tensor:
    width = max(tensor.shape[-1] for tensor in tensors)
    return torch.cat([F.pad(tensor, (0, width - tensor.shape[-1]), value=value) for tensor in tensors])


def collate(rows: Sequence[Mapping[str, torch.Tensor]], text_pad_id: int, speech_pad_id: int) -> dict:
    """One batch (prompts left-padded) from single-row processor outputs (`return_tensors="pt"`).

    Example:
        >>> a = {"input_ids": torch.tensor([[5, 6, 7]]), "attention_mask": torch.ones(1, 3, dtype=torch.long)}
        >>> b = {"input_ids": torch.tensor([[8]]), "attention_mask": torch.ones(1, 1, dtype=torch.long)}
        >>> collate([a, b], text_pad_id=0, speech_pad_id=0)["input_ids"].tolist()
        [[5, 6, 7], [0, 0, 8]]
    """
    if len(rows) == 1:
        return dict(rows[0])
    width = max(row["input_ids"].shape[1] for row in rows)
    batch = {
        "input_ids": torch.cat(
            [F.pad(r["input_ids"], (width - r["input_ids"].shape[1], 0), value=text_pad_id) for r in rows]
        ),
        "attention_mask": torch.cat(
            [F.pad(r["attention_mask"], (width - r["attention_mask"].shape[1], 0), value=0) for r in rows]
        ),
    }
    with_audio = [row for row in rows if "speech_ids" in row]
    if with_audio:
        batch["speech_ids"] = _pad_right([row["speech_ids"] for row in with_audio], speech_pad_id)
        batch["speech_attention_mask"] = _pad_right([row["speech_attention_mask"] for row in with_audio], 0)
        batch["feature_exist_mask"] = torch.cat([row["feature_exist_mask"] for row in with_audio])
    with_features = [row for row in with_audio if "input_features" in row]
    if with_features:
        batch["input_features"] = _pad_right([row["input_features"] for row in with_features], 0.0)
        batch["feature_attention_mask"] = _pad_right([row["feature_attention_mask"] for row in with_features], 0)
    unknown = {key for row in rows for key in row} - set(PROMPT_KEYS) - set(AUDIO_KEYS)
    if unknown:
        raise ValueError(f"Cannot batch processor outputs with {sorted(unknown)}.")
    return batch


__all__ = ["collate"]
