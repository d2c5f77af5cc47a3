"""Head probing: which heads help when their sink is amplified, which when it is reduced.

Each probe scales the sink of some heads by ``probe_gamma`` and compares the calibration
objective with the baseline. With a probe above 1, heads that improve are up-effective and heads
that get worse are taken as down-effective (the published code's rule: it assumes the response
is monotone in gamma, so reducing would help them); a probe below 1 mirrors this. Heads whose
objective does not change at all are left out.

Granularity ``"head"`` probes one head index in every tunable layer at once (the published code;
num_heads probes); ``"layer_head"`` probes each (layer, head) alone (num_layers x num_heads probes).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from ..profile import Profile
from ..scoring.records import ScoredSplit
from .candidates import CandidateSpace, Head
from .objectives import Objective

GRANULARITIES = ("head", "layer_head")
UP, DOWN, NEUTRAL = "up", "down", "neutral"


@dataclass(frozen=True)
class HeadEffect:
    """One probe: its heads, the change of the objective key (probe - baseline) and the verdict."""

    layer: int | None  # None: this head index in every tunable layer
    head: int
    heads: tuple[Head, ...]
    key_change: tuple[float, ...]
    kind: str
    metrics: dict

    def to_json(self) -> dict:
        return {"layer": self.layer, "head": self.head, "key_change": list(self.key_change), "kind": self.kind, "metrics": self.metrics}


@dataclass(frozen=True)
class HeadProbes:
    """All probes of one probing run, and the heads of the dominant kind."""

    probe_gamma: float
    granularity: str
    num_layers: int
    num_heads: int
    effects: tuple[HeadEffect, ...]

    def heads_of(self, kind: str) -> list[Head]:
        return sorted(head for effect in self.effects if effect.kind == kind for head in effect.heads)

    def dominant_kind(self) -> str:
        """The kind with more probes; a tie goes to the larger summed improvement; neutral if none is effective."""
        counts = {kind: sum(effect.kind == kind for effect in self.effects) for kind in (UP, DOWN)}
        if counts[UP] == counts[DOWN] == 0:
            return NEUTRAL
        if counts[UP] != counts[DOWN]:
            return UP if counts[UP] > counts[DOWN] else DOWN
        gain = {kind: sum(abs(effect.key_change[0]) for effect in self.effects if effect.kind == kind) for kind in (UP, DOWN)}
        return UP if gain[UP] >= gain[DOWN] else DOWN

    def effect_matrix(self) -> np.ndarray:
        """[rows, num_heads] change of the primary objective per probe (rows: 1 for "head", layers for "layer_head"); NaN = not probed."""
        rows = 1 if self.granularity == "head" else self.num_layers
        matrix = np.full((rows, self.num_heads), np.nan)
        for effect in self.effects:
            matrix[0 if effect.layer is None else effect.layer, effect.head] = effect.key_change[0]
        return matrix

    def to_json(self) -> dict:
        return {
            "probe_gamma": self.probe_gamma,
            "granularity": self.granularity,
            "num_layers": self.num_layers,
            "num_heads": self.num_heads,
            "counts": {kind: sum(effect.kind == kind for effect in self.effects) for kind in (UP, DOWN, NEUTRAL)},
            "dominant_kind": self.dominant_kind(),
            "effects": [effect.to_json() for effect in self.effects],
        }


def check_probe_settings(probe_gamma: float, granularity: str) -> None:
    """A probe gamma that changes something (finite, > 0, not 1) and a known granularity."""
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity: got {granularity!r}, expected one of {GRANULARITIES}")
    if not (math.isfinite(probe_gamma) and probe_gamma > 0 and probe_gamma != 1):
        raise ValueError(f"probe_gamma: got {probe_gamma}, expected a finite positive number other than 1")


def probe_heads(
    space: CandidateSpace,
    score_profile: Callable[[Profile, str], ScoredSplit],
    objective: Objective,
    baseline: ScoredSplit,
    *,
    probe_gamma: float = 2.0,
    granularity: str = "head",
) -> HeadProbes:
    """Probe every head (index, or (layer, head)) once with ``probe_gamma``."""
    check_probe_settings(probe_gamma, granularity)
    if granularity == "head":
        probes = [(None, head, tuple((layer, head) for layer in space.layers)) for head in range(space.num_heads)]
    else:
        probes = [(layer, head, ((layer, head),)) for layer in space.layers for head in range(space.num_heads)]
    baseline_key = objective.key(baseline)
    effects = []
    for layer, head, heads in tqdm(probes, desc=f"probing heads (gamma {probe_gamma:g})", unit="probe"):
        scored = score_profile(space.for_heads(probe_gamma, list(heads)), f"probe layer {'all' if layer is None else layer} head {head}")
        key = objective.key(scored)
        change = tuple(new - old for new, old in zip(key, baseline_key))
        effects.append(HeadEffect(layer, head, heads, change, _verdict(key, baseline_key, probe_gamma), {**scored.summary(), **objective.metrics(scored)}))
    return HeadProbes(probe_gamma, granularity, space.num_layers, space.num_heads, tuple(effects))


def _verdict(key: tuple[float, ...], baseline_key: tuple[float, ...], probe_gamma: float) -> str:
    if key == baseline_key:
        return NEUTRAL
    helped_by_probe = key > baseline_key
    return UP if helped_by_probe == (probe_gamma > 1) else DOWN
