"""Reading a benchmark's items with `datasets`: from the Hub (the ids in `benchmarks`), or from a local copy
(`--data-dir`) in the same schema.

An item is the id, the audio (whatever the source holds: a `datasets` audio value or a file path; decoded only when
the item is generated), the text instruction that follows the audio (None for audio-only prompts), the tools of a
function-calling item, and `fields`: the item's other columns, kept with its prediction for scoring.

Local copies:
- `hub` layout: a `Dataset.save_to_disk` / `DatasetDict.save_to_disk` folder of the subset (a `DatasetDict` gives
  the subset's split, or all splits when the subset reads all of them).
- `openaudiobench`: the dataset repository's tree: `eval_datas/<subset>/<subset>.csv` and `.../audios/`.
- `speechfc`: the dataset repository's tree: JSON-lines files of records with the clip in `file_name`.
- `mmau`: `mmau-test-mini.json` and the clips it names (`audio_id`, relative to the JSON's folder).
- `vstyle`: the dataset repository's tree: `<language>/metadata.jsonl` and the clips it names (`file_name`).
- `custom`: a `save_to_disk` folder, or `data.jsonl` with `id`, `audio` (relative path) and optional `reference`.
"""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..prompts import ASR_INSTRUCTION
from .benchmarks import Benchmark, Subset
from .scoring import mmau_instruction


@dataclass
class Item:
    """One benchmark item to answer."""

    id: str
    audio: Any
    instruction: str | None
    fields: dict[str, Any]
    tools: list[dict] | None = None


def _plain(value: Any) -> Any:
    """A JSON-serialisable copy of a column value."""
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


def _select(dataset, split: str | None):
    """One split of a `DatasetDict` (every split concatenated when `split` is None or absent)."""
    import datasets

    if isinstance(dataset, datasets.DatasetDict):
        if split is not None and split in dataset:
            return dataset[split]
        return datasets.concatenate_datasets([dataset[name] for name in dataset])
    return dataset


def _hub_rows(subset: Subset, data_dir: Path | None):
    import datasets

    if data_dir is not None:
        return _select(datasets.load_from_disk(str(data_dir)), subset.split)
    if subset.split is None:
        return _select(datasets.load_dataset(subset.source, subset.config), None)
    return datasets.load_dataset(subset.source, subset.config, split=subset.split)


def _snapshot(subset: Subset, data_dir: Path | None, patterns: list[str] | None = None) -> Path:
    if data_dir is not None:
        return data_dir
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(subset.source, repo_type="dataset", allow_patterns=patterns))


def _dataset_rows(benchmark: Benchmark, subset: Subset, data_dir: Path | None) -> tuple[Any, Path | None]:
    """The subset's rows (a `datasets.Dataset`) and the folder that relative audio paths start from."""
    import datasets

    if benchmark.layout == "hub":
        return _hub_rows(subset, data_dir), None
    if benchmark.layout == "openaudiobench":
        root = _snapshot(subset, data_dir, [f"eval_datas/{subset.name}/*"]) / "eval_datas" / subset.name
        return datasets.Dataset.from_csv(str(root / f"{subset.name}.csv")), root / "audios"
    if benchmark.layout == "speechfc":
        root = _snapshot(subset, data_dir)
        files = sorted(str(path) for path in root.rglob("*.json*") if path.suffix in (".json", ".jsonl"))
        records = [record for file in files for record in _json_records(Path(file))]
        wanted = [record for record in records if record.get("category") == subset.options["category"]]
        return datasets.Dataset.from_list(wanted), root
    if benchmark.layout == "vstyle":
        folder = subset.options["folder"]
        root = _snapshot(subset, data_dir, [f"{folder}/*"]) / folder
        return datasets.Dataset.from_list(_json_records(root / "metadata.jsonl")), root
    if benchmark.layout == "mmau":
        if data_dir is None:
            raise ValueError(
                "MMAU is not on the Hugging Face Hub: download mmau-test-mini.json and its clips from "
                "https://github.com/Sakshi113/MMAU and pass the folder with --data-dir."
            )
        path = data_dir / subset.options["file"]
        return datasets.Dataset.from_list(json.loads(path.read_text(encoding="utf-8"))), data_dir
    if benchmark.layout == "custom":
        if data_dir is None:
            raise ValueError("The custom benchmark reads your data: pass --data-dir DIR.")
        if (data_dir / "data.jsonl").is_file():
            return datasets.Dataset.from_list(_json_records(data_dir / "data.jsonl")), data_dir
        return _select(datasets.load_from_disk(str(data_dir)), None), data_dir
    raise ValueError(f"Unknown layout {benchmark.layout!r}.")


def _json_records(path: Path) -> list[dict]:
    text = path.read_text(encoding="utf-8").strip()
    if path.suffix == ".json" and text.startswith("["):
        return [record for record in json.loads(text) if isinstance(record, dict)]
    return [json.loads(line) for line in text.splitlines() if line.strip()]


_AUDIO_PATH_COLUMNS = {
    "openaudiobench": "audio_filename",
    "speechfc": "file_name",
    "mmau": "audio_id",
    "vstyle": "file_name",
}


def _instruction(benchmark: Benchmark, subset: Subset, row: dict) -> str | None:
    if subset.scorer == "asr":
        return ASR_INSTRUCTION
    if subset.scorer == "mmau":
        return mmau_instruction(row["question"], row["choices"])
    return None


def load_items(benchmark: Benchmark, subset: Subset, data_dir: str | None = None, limit: int | None = None):
    """The first `limit` items of a subset (all when None), from the Hub or from `data_dir`.

    Example:
        >>> from transformers_fac.evaluation.benchmarks import get_benchmark
        >>> custom = get_benchmark("custom")
        >>> items = load_items(custom, custom.subsets[0], data_dir="my_questions")  # doctest: +SKIP
    """
    directory = Path(data_dir) if data_dir is not None else None
    if directory is not None and not directory.is_dir():
        raise FileNotFoundError(f"--data-dir {directory} is not a folder.")
    if limit is not None and limit < 1:
        raise ValueError(f"--limit must be at least 1, got {limit}.")
    try:
        rows, audio_root = _dataset_rows(benchmark, subset, directory)
    except (ConnectionError, OSError) as error:
        if directory is not None:
            raise
        reason = (str(error).splitlines() or [type(error).__name__])[0][:200]
        raise ValueError(
            f"{benchmark.name}/{subset.name} could not be loaded from the Hub ({reason}); "
            "connect, or pass a local copy with --data-dir."
        ) from error
    if limit is not None:
        rows = rows.select(range(min(limit, len(rows))))
    path_column = _AUDIO_PATH_COLUMNS.get(benchmark.layout)
    items = []
    for position, row in enumerate(rows):
        if benchmark.layout == "custom" and "audio" in row and isinstance(row["audio"], str):
            audio = audio_root / row["audio"]
        elif path_column is not None:
            audio = audio_root / str(row[path_column])
        else:
            audio = row.get("audio")
        if audio is None:
            raise ValueError(f"{benchmark.name}/{subset.name} row {position} has no audio.")
        fields = {key: _plain(value) for key, value in row.items() if key != "audio"}
        item_id = str(row[subset.id_column]) if subset.id_column and subset.id_column in row else str(position)
        tools = json.loads(row["function"]) if benchmark.mode == "fc" else None
        items.append(Item(item_id, audio, _instruction(benchmark, subset, row), fields, tools))
    ids = [item.id for item in items]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{benchmark.name}/{subset.name}: item ids are not unique.")
    return items


__all__ = ["Item", "load_items"]
