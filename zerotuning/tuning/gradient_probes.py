"""Head probes predicted from log-gamma gradients, in the form of the scored ones (``HeadProbes``).

A probe of gamma g changes the surrogate by about ``gradient x log(g)`` (first order), which gives
the same up / down verdicts and dominant kind as scoring the probe would, if the objective were the
surrogate and the response linear. The gradients come from ``gradient_sensitivity.head_gradients``.
"""

from __future__ import annotations

import math

import numpy as np

from .candidates import CandidateSpace
from .head_probing import DOWN, GRANULARITIES, NEUTRAL, UP, HeadEffect, HeadProbes


def gradient_head_probes(space: CandidateSpace, gradients: np.ndarray, *, probe_gamma: float = 2.0, granularity: str = "head") -> HeadProbes:
    """``HeadProbes`` predicted from ``gradients`` [num_layers, num_heads] (only the tunable layers count).

    ``"head"``: head index h across every tunable layer, whose first-order effect is the sum of its
    layers' gradients; ``"layer_head"``: each (layer, head). A zero gradient is neutral.
    """
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity: got {granularity!r}, expected one of {GRANULARITIES}")
    if not (probe_gamma > 0 and probe_gamma != 1):
        raise ValueError(f"probe_gamma: got {probe_gamma}, expected a positive number other than 1")
    expected = (space.num_layers, space.num_heads)
    if gradients.shape != expected:
        raise ValueError(f"gradients: got shape {gradients.shape}, expected {expected} (layers x heads)")
    if granularity == "head":
        probes = [(None, head, tuple((layer, head) for layer in space.layers)) for head in range(space.num_heads)]
    else:
        probes = [(layer, head, ((layer, head),)) for layer in space.layers for head in range(space.num_heads)]
    effects = []
    for layer, head, heads in probes:
        gradient = float(sum(gradients[l, h] for l, h in heads))
        change = gradient * math.log(probe_gamma)
        kind = NEUTRAL if change == 0 else (UP if (change > 0) == (probe_gamma > 1) else DOWN)
        effects.append(HeadEffect(layer, head, heads, (change,), kind, {"gradient": gradient, "predicted_surrogate_change": change}))
    return HeadProbes(probe_gamma, granularity, space.num_layers, space.num_heads, tuple(effects))
