"""Counting what tuning and evaluation cost: forward passes, examples, tokens and wall time per stage."""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields


@dataclass
class StageCost:
    forward_passes: int = 0
    backward_passes: int = 0  # gradient paths only; a backward costs about two forwards
    examples_scored: int = 0
    tokens: int = 0
    padded_tokens: int = 0
    cache_hits: int = 0
    seconds: float = 0.0

    def add(self, other: StageCost) -> None:
        for item in fields(self):
            setattr(self, item.name, getattr(self, item.name) + getattr(other, item.name))


class CostLedger:
    """Accumulates costs under named stages (``with ledger.stage("level2"): ...``).

    Stages nest: work inside an inner stage counts for every enclosing one too, so a level's cost
    includes its parts. The total sums the outermost stages only. Work outside any stage goes to
    ``"unstaged"``; entering a stage again adds to it.
    """

    def __init__(self) -> None:
        self.stages: dict[str, StageCost] = {}
        self._outermost: list[str] = []
        self._active: list[str] = []

    @contextmanager
    def stage(self, name: str):
        if name in self._active:
            raise ValueError(f"stage: {name!r} is already active")
        if not self._active and name not in self._outermost:
            self._outermost.append(name)
        cost = self.stages.setdefault(name, StageCost())
        self._active.append(name)
        start = time.perf_counter()
        try:
            yield cost
        finally:
            cost.seconds += time.perf_counter() - start
            self._active.pop()

    def record_forward(self, examples: int, tokens: int, padded_tokens: int) -> None:
        for cost in self._active_costs():
            cost.forward_passes += 1
            cost.examples_scored += examples
            cost.tokens += tokens
            cost.padded_tokens += padded_tokens

    def record_backward(self) -> None:
        for cost in self._active_costs():
            cost.backward_passes += 1

    def record_cache_hit(self) -> None:
        for cost in self._active_costs():
            cost.cache_hits += 1

    def total(self) -> StageCost:
        """The sum over the outermost stages."""
        total = StageCost()
        for name in self._outermost:
            total.add(self.stages[name])
        return total

    def to_json(self) -> dict:
        return {"stages": {name: asdict(cost) for name, cost in self.stages.items()}, "total": asdict(self.total())}

    def _active_costs(self) -> list[StageCost]:
        if not self._active:
            if "unstaged" not in self._outermost:
                self._outermost.append("unstaged")
            return [self.stages.setdefault("unstaged", StageCost())]
        return [self.stages[name] for name in self._active]
