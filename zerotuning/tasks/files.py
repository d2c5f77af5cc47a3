"""Reading raw rows from local JSONL, CSV and TSV files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

FILE_FORMATS = {".jsonl": "jsonl", ".json": "jsonl", ".csv": "csv", ".tsv": "tsv"}


def read_rows(path: str | Path) -> list[dict]:
    """All rows of a JSONL (one object per line), CSV or TSV file (header row first), by extension."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"task file: {str(path)!r} does not exist")
    file_format = FILE_FORMATS.get(path.suffix.lower())
    if file_format is None:
        raise ValueError(f"task file: {str(path)!r} has extension {path.suffix!r}, expected one of {sorted(FILE_FORMATS)}")
    with path.open(encoding="utf-8", newline="") as handle:
        rows = _read_jsonl(handle, path) if file_format == "jsonl" else list(csv.DictReader(handle, delimiter="," if file_format == "csv" else "\t"))
    if not rows:
        raise ValueError(f"task file: {str(path)!r} has no rows")
    return rows


def _read_jsonl(handle, path: Path) -> list[dict]:
    rows = []
    for line_number, line in enumerate(handle, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"task file {str(path)!r}, line {line_number}: not valid JSON ({error.msg})") from error
        if not isinstance(row, dict):
            raise ValueError(f"task file {str(path)!r}, line {line_number}: expected a JSON object, got {type(row).__name__}")
        rows.append(row)
    return rows
