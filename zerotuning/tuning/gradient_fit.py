"""Level 3: a continuous log-gamma per (layer, query head) of the tunable layers, fitted by a few gradient steps.

The loss is minus the mean surrogate of ``gradient_sensitivity`` (supervised: the right answer's
cross-entropy, among the options with label-bias calibration, over the vocabulary without;
unsupervised: the answer entropy, or the vocabulary entropy with ``entropy_over="vocab"``), plus an
L2 prior ``prior x sum(log_gamma ** 2)`` pulling every head towards gamma = 1.

The calibration split is cut once (seeded) into a fit fold and a held-out fold (a quarter of it);
the test split is never seen. Each step is one full pass over the fit fold (a forward and a
backward per batch), then one forward pass over the held-out fold. The kept log-gammas are those
of the step (step 0 = the untouched model) with the lowest held-out loss; the fit stops once
``PATIENCE`` steps in a row have not lowered it.

Adam rather than L-BFGS or plain gradient descent: the heads' gradients differ by orders of
magnitude between layers, and Adam's per-head step (about ``learning_rate`` in log-gamma) keeps
every head moving at a known pace without a line search, whose extra passes over the split
L-BFGS would need at every step. The prior is applied after each Adam step as its exact proximal
step ``log_gamma / (1 + 2 x learning_rate x prior)`` (decoupled, as AdamW's weight decay), so
that a strong prior shrinks without oscillating and an infinite one keeps gamma = 1 exactly.

This module imports the HF glue, so it is imported by its module path (like ``model_scoring``).
"""

from __future__ import annotations

import math
import resource

import numpy as np
import torch
from tqdm.auto import tqdm

from ..hf import apply
from ..hf.differentiable import trainable_log_gammas
from ..profile import Profile
from ..scoring.cost import CostLedger
from ..scoring.encoding import ScoringSet, length_sorted_batches
from ..scoring.scorer import Scorer
from .candidates import CandidateSpace
from .fit_settings import PATIENCE, FitSettings, held_out_fold
from .gradient_sensitivity import batch_surrogates, check_answer_position_scoring, surrogate_name
from .objectives import Objective

def fit_log_gammas(
    model,
    scorer: Scorer,
    scoring_set: ScoringSet,
    objective: Objective,
    space: CandidateSpace,
    settings: FitSettings,
    ledger: CostLedger,
    seed: int,
) -> tuple[Profile, dict]:
    """The fitted profile (gammas 1 outside the tunable layers) and the record of the fit."""
    check_answer_position_scoring(scorer, "level 3")
    fit_indices, held_indices = held_out_fold(len(scoring_set.example_ids), seed)
    fit_set, held_set = scoring_set.subset(fit_indices), scoring_set.subset(held_indices)
    name = surrogate_name(objective)
    apply(model, space.neutral())

    def mean_loss(part: ScoringSet, backward: bool) -> float:
        """Minus the mean surrogate over ``part``; with ``backward``, its gradient accumulated in the leaves."""
        total = 0.0
        for indices in length_sorted_batches(part.lengths(), scorer.batch_size):
            loss = -batch_surrogates(model, scorer, part, indices, name, ledger).sum() / len(part.example_ids)
            if backward:
                loss.backward()
                ledger.record_backward()
            total += float(loss.detach())
        if not math.isfinite(total):
            raise FloatingPointError(f"level 3 on {scoring_set.name}: the loss on the {'fit' if backward else 'held-out'} fold is {total}")
        return total

    with trainable_log_gammas(model) as leaves:
        tunable = [leaves[layer] for layer in space.layers]
        for layer, leaf in enumerate(leaves):
            leaf.requires_grad_(layer in space.layers)  # no gradient is computed for the frozen layers' sinks
        optimizer = torch.optim.Adam(tunable, lr=settings.learning_rate)
        with torch.no_grad():
            held_losses = [mean_loss(held_set, backward=False)]
        fit_losses, penalties = [], [0.0]
        best_step, best = 0, [leaf.detach().clone() for leaf in tunable]
        progress = tqdm(range(1, settings.steps + 1), desc=f"{scoring_set.name}: level 3 fit", unit="step", leave=False)
        for step in progress:
            optimizer.zero_grad(set_to_none=True)
            with torch.enable_grad():
                fit_losses.append(mean_loss(fit_set, backward=True))  # at the previous step's log-gammas
            optimizer.step()
            with torch.no_grad():
                for leaf in tunable:
                    if math.isinf(settings.prior):
                        leaf.zero_()
                    else:
                        leaf.div_(1 + 2 * settings.learning_rate * settings.prior)
                held_losses.append(mean_loss(held_set, backward=False))
            penalties.append(0.0 if math.isinf(settings.prior) else settings.prior * float(sum((leaf.detach() ** 2).sum() for leaf in tunable)))
            progress.set_postfix(fit=f"{fit_losses[-1]:.4f}", held_out=f"{held_losses[-1]:.4f}")
            if held_losses[-1] < held_losses[best_step]:
                best_step, best = step, [leaf.detach().clone() for leaf in tunable]
            elif step - best_step >= PATIENCE:
                break
    log_gammas = np.zeros((space.num_layers, space.num_heads))
    for layer, values in zip(space.layers, best):
        log_gammas[layer] = values.double().cpu().numpy()
    profile = Profile(space.identity, np.exp(log_gammas).tolist())
    steps_run = len(fit_losses)
    record = {
        "optimizer": "adam",
        "loss": f"-{name}",
        "steps": settings.steps,
        "learning_rate": settings.learning_rate,
        "prior": "inf" if math.isinf(settings.prior) else settings.prior,
        "patience": PATIENCE,
        "layers": list(space.layers),
        "fit_examples": len(fit_indices),
        "held_out_examples": len(held_indices),
        "held_out_ids": list(held_set.example_ids),
        "steps_run": steps_run,
        "stopped_early": steps_run < settings.steps,
        "best_step": best_step,
        "fit_losses": fit_losses,  # [t]: the fit fold's loss at step t's log-gammas (t = 0 .. steps_run - 1)
        "held_out_losses": held_losses,  # [t]: the held-out fold's loss after step t (t = 0: the untouched model)
        "prior_penalties": penalties,  # [t]: prior x sum(log_gamma ** 2) after step t
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # the process's peak so far (Linux: KiB)
    }
    return profile, record
