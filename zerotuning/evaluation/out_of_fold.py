"""Calibration fitted out of fold: each example is calibrated by a fit that never saw it.

A tuning objective that fits label-bias calibration on the calibration split and then measures
accuracy on the same examples would be optimistic (the bias was fitted to them). Here the split
is cut into k seeded folds (by example id); the bias (and, with labels, a temperature) is fitted on k - 1 folds and
applied to the held-out one, so every example's calibrated answer distribution is out of fold.
"""

from __future__ import annotations

import zlib

import numpy as np

from ..scoring.records import ScoredSplit
from .calibration import fit_label_bias, fit_temperature, label_bias_corrected, temperature_scaled

DEFAULT_FOLDS = 5


def fold_of_each_example(example_ids: tuple[str, ...], folds: int, seed: int) -> np.ndarray:
    """[N] fold index per example: the examples sorted by a seeded hash of their id, dealt round-robin.

    The assignment depends on which examples are there, not on their order, so a split scored in
    another order gets the same folds; fold sizes differ by at most one.
    """
    if folds < 2:
        raise ValueError(f"folds: got {folds}, expected >= 2")
    if len(example_ids) < folds:
        raise ValueError(f"out-of-fold calibration: {len(example_ids)} examples cannot fill {folds} folds (need at least {folds})")
    hashes = [zlib.crc32(f"{seed}:{example_id}".encode()) for example_id in example_ids]
    order = sorted(range(len(example_ids)), key=lambda index: (hashes[index], example_ids[index]))
    assignment = np.empty(len(example_ids), dtype=np.int64)
    assignment[order] = np.arange(len(example_ids)) % folds
    return assignment


def out_of_fold_label_bias(scored: ScoredSplit, folds: int = DEFAULT_FOLDS, seed: int = 0, *, temperature: bool = False) -> np.ndarray:
    """[N, C] answer log-probabilities after label-bias calibration (then temperature scaling, which needs
    the labels) fitted on the other folds."""
    log_probs = scored.answer_log_probs()
    mask = scored.choice_mask
    calibrated = np.empty_like(log_probs)
    assignment = fold_of_each_example(scored.example_ids, folds, seed)
    for fold in range(folds):
        held_out, fitted_on = assignment == fold, assignment != fold
        bias = fit_label_bias(log_probs[fitted_on], mask[fitted_on])
        corrected = label_bias_corrected(log_probs[held_out], mask[held_out], bias)
        if temperature:
            # label-bias-corrected log-probabilities are logits up to a per-row constant
            train = label_bias_corrected(log_probs[fitted_on], mask[fitted_on], bias)
            scale = fit_temperature(np.where(mask[fitted_on], train, 0.0), mask[fitted_on], scored.answers[fitted_on])
            corrected = temperature_scaled(np.where(mask[held_out], corrected, 0.0), mask[held_out], scale)
        calibrated[held_out] = corrected
    return calibrated
