"""One-pass head sensitivity: d surrogate / d log_gamma[layer][head] for every head at once.

The sink bias enters one logit per head, so the first-order effect of every head's log-gamma on the
calibration objective comes from one forward and one backward pass over the calibration split,
instead of one scoring pass per probe. The objectives' keys (accuracy, out-of-fold calibration) are
not differentiable; the surrogate is the nearest smooth quantity, the mean over examples of:

- supervised, ``calibration="none"``: the right answer's full-vocabulary log-likelihood (the key's
  tie-breaker);
- supervised, label-bias calibration: the right answer's log-likelihood among the example's options
  (label bias acts on that distribution);
- unsupervised: minus the entropy of the answer distribution over the options, or of the full
  next-token distribution with ``entropy_over="vocab"``.

``gradient_probes.gradient_head_probes`` turns the gradients into ``HeadProbes``. This module imports
the HF glue, so it is imported by its module path (like ``model_scoring``).
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from ..hf import apply
from ..hf.differentiable import trainable_log_gammas
from ..profile import Profile
from ..scoring.cost import CostLedger
from ..scoring.encoding import ScoringSet, length_sorted_batches
from ..scoring.scorer import Scorer, last_logits
from .objectives import Objective, SupervisedObjective


def surrogate_name(objective: Objective) -> str:
    if isinstance(objective, SupervisedObjective):
        return "answer_log_likelihood_vocab" if objective.calibration == "none" else "answer_log_likelihood_options"
    return "minus_vocab_entropy" if objective.entropy_over == "vocab" else "minus_answer_entropy"


def batch_surrogate(logits: torch.Tensor, answer_logits: torch.Tensor, answers: torch.Tensor, choice_mask: torch.Tensor, name: str) -> torch.Tensor:
    """[B] per-example surrogate from next-token ``logits`` [B, V] and answers' log-masses ``answer_logits`` [B, C]."""
    rows = torch.arange(len(answers), device=logits.device)
    if name == "answer_log_likelihood_vocab":
        return answer_logits[rows, answers] - torch.logsumexp(logits, dim=-1)
    if name == "minus_vocab_entropy":
        log_probs = torch.log_softmax(logits, dim=-1)
        return (log_probs.exp() * log_probs).sum(-1)
    log_probs = torch.log_softmax(answer_logits.masked_fill(~choice_mask, float("-inf")), dim=-1)
    if name == "answer_log_likelihood_options":
        return log_probs[rows, answers]
    if name == "minus_answer_entropy":
        return torch.where(choice_mask, log_probs.exp() * log_probs, 0.0).sum(-1)
    raise ValueError(f"surrogate: got {name!r}")


def check_answer_position_scoring(scorer, what: str) -> None:
    """The surrogates read the answer position's logits; whole-answer scoring has no such single position."""
    if not isinstance(scorer, Scorer):
        raise NotImplementedError(
            f"{what}: answers are scored by {type(scorer).__name__} (--answer-forms full_sequence); "
            f"{what} needs answer-position scoring (--answer-forms surface or first_token)"
        )


def batch_surrogates(model, scorer: Scorer, scoring_set: ScoringSet, indices: np.ndarray, name: str, ledger: CostLedger) -> torch.Tensor:
    """[B] the surrogate ``name`` of the examples at ``indices`` from one recorded forward pass (differentiable
    in the log-gammas when called inside ``trainable_log_gammas`` with grad enabled)."""
    device = next(model.parameters()).device
    choice_mask = np.arange(scorer.num_answers)[None, :] < scoring_set.choice_counts[indices, None]
    logits = last_logits(model, [scoring_set.token_ids[i] for i in indices], scorer.pad_id, 1, ledger, device)[:, -1, :]
    return batch_surrogate(
        logits,
        scorer.answer_logits(logits),
        torch.as_tensor(scoring_set.answers[indices], device=device),
        torch.as_tensor(choice_mask, device=device),
        name,
    )


def head_gradients(
    model, scorer: Scorer, scoring_set: ScoringSet, objective: Objective, profile: Profile, ledger: CostLedger, description: str = "head gradients"
) -> np.ndarray:
    """[num_layers, num_heads] float64: d mean surrogate / d log_gamma at ``profile``, one forward + backward per batch."""
    check_answer_position_scoring(scorer, "--probes gradient")
    apply(model, profile)
    name = surrogate_name(objective)
    count = len(scoring_set.example_ids)
    batches = length_sorted_batches(scoring_set.lengths(), scorer.batch_size)
    with trainable_log_gammas(model) as leaves, torch.enable_grad():
        for indices in tqdm(batches, desc=f"{scoring_set.name}: {description}", unit="batch", leave=False):
            surrogate = batch_surrogates(model, scorer, scoring_set, indices, name, ledger)
            (surrogate.sum() / count).backward()
            ledger.record_backward()
        gradients = np.stack([leaf.grad.double().cpu().numpy() if leaf.grad is not None else np.zeros(leaf.shape) for leaf in leaves])
    if not np.isfinite(gradients).all():
        raise FloatingPointError(f"head gradients on {scoring_set.name}: non-finite values ({int((~np.isfinite(gradients)).sum())} heads)")
    return gradients
