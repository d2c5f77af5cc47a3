"""Which split each row belongs to: read from a column, or drawn at random with a recorded seed."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .task import SPLITS

DEFAULT_FRACTIONS = {"demo": 0.1, "calibration": 0.45, "test": 0.45}


@dataclass(frozen=True)
class SplitPlan:
    """How rows are split into demo / calibration / test.

    With ``column`` set, each row's split is that column's value, renamed through ``mapping``
    (source value -> split; values left out of an explicit mapping are deliberately unused and
    counted). With ``fractions``, rows are shuffled with ``seed`` and cut in that proportion
    (summing to at most 1; the rest is unused). Neither: the source's default (see
    ``zerotuning.tasks.loader``). ``max_examples`` then caps a split by a seeded subsample.
    """

    column: str | None = None
    mapping: dict[str, str] | None = None
    fractions: dict[str, float] | None = None
    seed: int = 0
    max_examples: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, target in (self.mapping or {}).items():
            if target not in SPLITS:
                raise ValueError(f"split mapping: {name!r} -> {target!r}, expected a target in {SPLITS}")
        if self.fractions is not None and (self.column is not None or self.mapping is not None):
            raise ValueError("split plan: give either a split column (and mapping) or random fractions, not both")
        for name, fraction in (self.fractions or {}).items():
            if name not in SPLITS or not 0 <= fraction <= 1:
                raise ValueError(f"split fractions: got {name}={fraction}, expected names in {SPLITS} with values in [0, 1]")
        if self.fractions is not None and sum(self.fractions.values()) > 1 + 1e-9:
            raise ValueError(f"split fractions: they sum to {sum(self.fractions.values()):g}, expected at most 1")
        for name, limit in self.max_examples.items():
            if name not in SPLITS or limit < 1:
                raise ValueError(f"max examples: got {name}={limit}, expected names in {SPLITS} with a positive count")

    def to_json(self) -> dict:
        return {
            "column": self.column,
            "mapping": self.mapping,
            "fractions": self.fractions,
            "seed": self.seed,
            "max_examples": self.max_examples,
        }

    @classmethod
    def from_json(cls, data: dict) -> SplitPlan:
        return cls(
            column=data.get("column"),
            mapping=data.get("mapping"),
            fractions=data.get("fractions"),
            seed=data.get("seed", 0),
            max_examples=data.get("max_examples") or {},
        )


def assign_splits(rows: list[dict], plan: SplitPlan) -> tuple[list[str | None], dict]:
    """Each row's split (None = unused), and a JSON-ready account of how they were chosen.

    The plan must be resolved: a ``column`` or ``fractions`` set.
    """
    if plan.column is None and plan.fractions is None:
        raise ValueError("split plan: neither a split column nor random fractions is set")
    splits = _splits_from_column(rows, plan) if plan.column else _random_splits(len(rows), plan)
    splits = _cap_splits(splits, plan)
    account = {
        **plan.to_json(),
        "sizes": {name: splits.count(name) for name in SPLITS},
        "unused_rows": splits.count(None),
    }
    return splits, account


def _splits_from_column(rows: list[dict], plan: SplitPlan) -> list[str | None]:
    values = [str(row.get(plan.column, "")).strip() for row in rows]
    if plan.mapping is not None:
        return [plan.mapping.get(value) for value in values]
    unknown = sorted(set(values) - set(SPLITS))
    if unknown:
        raise ValueError(
            f"split column {plan.column!r} holds {unknown}, expected only {SPLITS}; map them explicitly "
            "(e.g. --split-map train=demo,validation=calibration,test=test) or split at random instead"
        )
    return list(values)


def _random_splits(count: int, plan: SplitPlan) -> list[str | None]:
    order = np.random.default_rng(plan.seed).permutation(count)
    splits: list[str | None] = [None] * count
    start = 0
    cumulative = 0.0
    for name in SPLITS:
        cumulative += plan.fractions.get(name, 0.0)
        stop = min(count, int(round(cumulative * count)))
        for row_index in order[start:stop]:
            splits[row_index] = name
        start = stop
    return splits


def _cap_splits(splits: list[str | None], plan: SplitPlan) -> list[str | None]:
    rng = np.random.default_rng([plan.seed, 1])  # a stream of its own, so caps do not shift the random split
    capped = list(splits)
    for name in SPLITS:
        limit = plan.max_examples.get(name)
        members = [index for index, split in enumerate(splits) if split == name]
        if limit is not None and len(members) > limit:
            for index in rng.choice(members, size=len(members) - limit, replace=False):
                capped[index] = None
    return capped
