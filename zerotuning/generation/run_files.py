"""Files a generation run writes beside the ones ``zerotuning.tuning.run_record`` writes."""

from __future__ import annotations

import json
from pathlib import Path

from ..atomic_files import write_text_atomically


def write_predictions(predictions: list[dict], path: Path) -> Path:
    """Per-example answers and measures of a generation evaluation, as UTF-8 JSON, written atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_text_atomically(path, json.dumps(predictions, indent=1) + "\n")
