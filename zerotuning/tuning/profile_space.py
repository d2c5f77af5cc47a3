"""The profiles the tuner may build: all heads of the tunable layers at one gamma, or chosen heads."""

from __future__ import annotations

from typing import Any, Protocol

Head = tuple[int, int]  # (layer, query head)


class ProfileSpace(Protocol):
    """Builds profiles over ``layers`` (the tunable layers) x ``range(num_heads)``."""

    num_layers: int
    num_heads: int
    layers: tuple[int, ...]

    def neutral(self) -> Any: ...

    def uniform(self, gamma: float) -> Any: ...

    def for_heads(self, gamma: float, heads: list[Head]) -> Any: ...


def check_layers(layers: tuple[int, ...] | None, num_layers: int) -> tuple[int, ...]:
    """``None`` means every layer; otherwise distinct indices in range, sorted."""
    if layers is None:
        return tuple(range(num_layers))
    bad = [layer for layer in layers if not 0 <= layer < num_layers]
    if bad or not layers:
        raise ValueError(f"layers: got {list(layers)}, expected a non-empty subset of 0..{num_layers - 1}")
    return tuple(sorted(set(layers)))


def profile_key(profile: Any) -> tuple[tuple[float, ...], ...]:
    """A hashable identity of a profile's gammas: equal keys score identically."""
    return tuple(tuple(float(gamma) for gamma in row) for row in profile.gammas)
