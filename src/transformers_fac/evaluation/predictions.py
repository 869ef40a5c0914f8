"""`predictions.jsonl`: one JSON object per generated reply, appended as replies finish (so an interrupted run
resumes where it stopped), rewritten with the scores once scored.

Each line: `benchmark`, `subset`, `id`, `text` (the reply, special tokens removed), `raw_text` (with `<tool_call>`
tags), `finish_reason`, `error` (when generation failed), `audio` (the spoken reply's WAV, relative to the file's
folder, or null), `fields` (the item's columns the scoring needs) and, once scored, `scores` (and `transcript` for
spoken replies that were transcribed).
"""

import json
import os
from pathlib import Path


def read_predictions(path: Path) -> list[dict]:
    """The records of a predictions file (none when it does not exist). A last line cut off by an interrupted run
    is dropped (its item is generated again)."""
    if not path.is_file():
        return []
    records = []
    lines = path.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number == len(lines):
                break
            raise ValueError(f"{path}:{number} is not a JSON object.") from None
    return records


def done_keys(records: list[dict]) -> set[tuple[str, str, str]]:
    """(benchmark, subset, id) of every record."""
    return {(record["benchmark"], record["subset"], record["id"]) for record in records}


class PredictionWriter:
    """Appends records to a predictions file, one flushed line each.

    Example:
        >>> with PredictionWriter(Path("out/predictions.jsonl")) as writer:  # doctest: +SKIP
        ...     writer.write({"benchmark": "custom", "subset": "custom", "id": "1", "text": "Hi"})
    """

    def __init__(self, path: Path):
        self.path = path
        _drop_cut_line(path)
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def write(self, record: dict) -> None:
        self._file.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "PredictionWriter":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def _drop_cut_line(path: Path) -> None:
    """Removes a last line without its newline (written by a run killed mid-line)."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    data = path.read_bytes()
    if not data.endswith(b"\n"):
        path.write_bytes(data[: data.rfind(b"\n") + 1])


def rewrite_predictions(path: Path, records: list[dict]) -> None:
    """Replaces the file with `records` (atomically: a temporary file renamed over it)."""
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "w", encoding="utf-8") as file:
        for record in records:
            file.write(json.dumps(record, ensure_ascii=False) + "\n")
    os.replace(temporary, path)


__all__ = ["PredictionWriter", "done_keys", "read_predictions", "rewrite_predictions"]
