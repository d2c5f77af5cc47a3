"""Raw rows from a HuggingFace ``datasets`` hub dataset, when the library and the hub are there."""

from __future__ import annotations

HUB_PREFIX = "hf:"
HUB_SPLIT_COLUMN = "__hub_split__"
DEFAULT_HUB_SPLIT_MAP = {"train": "demo", "validation": "calibration", "test": "test"}


def read_hub_rows(name: str, config: str | None = None) -> list[dict]:
    """Every row of every split of ``name``, each tagged with its hub split in ``HUB_SPLIT_COLUMN``."""
    try:
        import datasets
    except ImportError as error:
        raise RuntimeError(
            f"task {HUB_PREFIX}{name}: the `datasets` library is not installed (pip install datasets); "
            "or export the data to a local JSONL/CSV/TSV file and pass its path"
        ) from error
    try:
        dataset_dict = datasets.load_dataset(name, config)
    except Exception as error:  # datasets raises many types (connection, missing config, ...): report any
        raise RuntimeError(
            f"task {HUB_PREFIX}{name} (config {config!r}): could not load it from the hub ({type(error).__name__}: {error}); "
            "is the hub reachable from here? Otherwise export the data to a local JSONL/CSV/TSV file and pass its path"
        ) from error
    return [{**row, HUB_SPLIT_COLUMN: split_name} for split_name, split in dataset_dict.items() for row in split]
