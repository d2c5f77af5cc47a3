"""The candidates the tuner may try on one model shape: every head of the tunable layers at one gamma, or chosen heads."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..profile import ModelIdentity, Profile

Head = tuple[int, int]  # (layer, query head)


class CandidateSpace:
    """Builds the ``Profile`` of each candidate over ``layers`` (the tunable layers) x ``range(num_heads)``."""

    def __init__(self, identity: ModelIdentity, layers: Iterable[int] | None = None) -> None:
        self.identity = identity
        self.num_layers = identity.num_layers
        self.num_heads = identity.num_heads
        self.layers = check_layers(None if layers is None else tuple(layers), self.num_layers)

    @classmethod
    def for_model(cls, model: Any, layers: Iterable[int] | None = None) -> "CandidateSpace":
        """The space of a loaded HuggingFace model (its shape is read from its config)."""
        return cls(ModelIdentity.of(model), layers)

    def neutral(self) -> Profile:
        return Profile.neutral(self.identity)

    def uniform(self, gamma: float) -> Profile:
        return Profile.uniform(self.identity, gamma, layers=self.layers)

    def for_heads(self, gamma: float, heads: list[Head]) -> Profile:
        outside = [head for head in heads if head[0] not in self.layers]
        if outside:
            raise ValueError(f"heads: {outside[:4]} lie outside the tunable layers {list(self.layers)}")
        return Profile.for_heads(self.identity, gamma, heads)


def check_layers(layers: tuple[int, ...] | None, num_layers: int) -> tuple[int, ...]:
    """``None`` means every layer; otherwise distinct indices in range, sorted."""
    if layers is None:
        return tuple(range(num_layers))
    bad = [layer for layer in layers if not 0 <= layer < num_layers]
    if bad or not layers:
        raise ValueError(f"layers: got {list(layers)}, expected a non-empty subset of 0..{num_layers - 1}")
    return tuple(sorted(set(layers)))


def profile_key(profile: Profile) -> tuple[tuple[float, ...], ...]:
    """A hashable identity of a profile's gammas: equal keys score identically."""
    return tuple(tuple(float(gamma) for gamma in row) for row in profile.gammas)
