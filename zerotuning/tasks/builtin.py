"""The tasks shipped in ``zerotuning/tasks/data``: ``<name>.jsonl`` rows plus ``<name>.task.json``."""

from __future__ import annotations

import json
from pathlib import Path

from .files import read_rows

DATA_DIR = Path(__file__).resolve().parent / "data"


def builtin_task_names() -> list[str]:
    """Names of the shipped tasks (those with both a rows file and a description file)."""
    return sorted(path.name[: -len(".task.json")] for path in DATA_DIR.glob("*.task.json") if (DATA_DIR / f"{path.name[: -len('.task.json')]}.jsonl").is_file())


def read_builtin(name: str) -> tuple[dict, list[dict]]:
    """The description (``.task.json`` contents) and raw rows of a shipped task."""
    description_path = DATA_DIR / f"{name}.task.json"
    if not description_path.is_file():
        raise ValueError(
            f"task: {name!r} is not a built-in task ({builtin_task_names()}), an existing .jsonl/.csv/.tsv file, or hf:<dataset>"
        )
    description = json.loads(description_path.read_text(encoding="utf-8"))
    return description, read_rows(DATA_DIR / f"{name}.jsonl")
