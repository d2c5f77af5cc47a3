"""Reading raw rows from local JSONL, CSV and TSV files (UTF-8; errors name the file and the line)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

FILE_FORMATS = {".jsonl": "jsonl", ".json": "jsonl", ".csv": "csv", ".tsv": "tsv"}


def read_rows(path: str | Path) -> list[dict]:
    """All rows of a JSONL (one object per line), CSV or TSV file (header row first), by extension."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"task file: {str(path)!r} is a directory; expected a {'/'.join(sorted(FILE_FORMATS))} file")
    if not path.is_file():
        raise FileNotFoundError(f"task file: {str(path)!r} does not exist")
    file_format = FILE_FORMATS.get(path.suffix.lower())
    if file_format is None:
        raise ValueError(f"task file: {str(path)!r} has extension {path.suffix!r}, expected one of {sorted(FILE_FORMATS)}")
    # utf-8-sig: a byte-order mark (as some editors write) is not part of the first column's name.
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            rows = _read_jsonl(handle, path) if file_format == "jsonl" else _read_delimited(handle, path, "," if file_format == "csv" else "\t")
    except UnicodeDecodeError as error:
        raise ValueError(
            f"task file {str(path)!r} is not UTF-8 text ({error.reason} at byte {error.start}); expected UTF-8 (convert it, e.g. with iconv)"
        ) from None
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
        except RecursionError:
            raise ValueError(f"task file {str(path)!r}, line {line_number}: JSON nested too deeply") from None
        if not isinstance(row, dict):
            raise ValueError(f"task file {str(path)!r}, line {line_number}: expected a JSON object, got {type(row).__name__}")
        rows.append(row)
    return rows


def _read_delimited(handle, path: Path, delimiter: str) -> list[dict]:
    """Rows as dicts keyed by the header; a row with more or fewer fields than the header is an error
    (an unquoted delimiter inside a cell would otherwise shift or add a column silently)."""
    reader = csv.reader(handle, delimiter=delimiter, strict=True)
    try:
        header = next(reader, None)
        if header is None:
            return []
        repeated = sorted({name for name in header if header.count(name) > 1})
        if repeated:
            raise ValueError(f"task file {str(path)!r}, line {reader.line_num}: the header names the columns {repeated} more than once")
        rows = []
        start = reader.line_num + 1
        for fields in reader:
            # reader.line_num is the last physical line read: a quoted cell may span lines.
            if not fields:  # a blank line
                start = reader.line_num + 1
                continue
            if len(fields) != len(header):
                where = f"line {start}" if start == reader.line_num else f"lines {start}-{reader.line_num}"
                raise ValueError(
                    f"task file {str(path)!r}, {where}: {len(fields)} fields, but the header has {len(header)} "
                    f"({', '.join(header)}); quote a cell that holds {'a comma' if delimiter == ',' else 'a tab'}"
                )
            rows.append(dict(zip(header, fields)))
            start = reader.line_num + 1
    except csv.Error as error:
        raise ValueError(f"task file {str(path)!r}, line {reader.line_num}: not valid {'CSV' if delimiter == ',' else 'TSV'} ({error})") from None
    return rows
