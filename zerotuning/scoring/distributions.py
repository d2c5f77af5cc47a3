"""Answer distributions: softmax over the answers an example offers (others are masked out)."""

from __future__ import annotations

import numpy as np


def masked_log_softmax(logits: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax over the entries where ``mask`` is True; -inf elsewhere. float64."""
    logits = np.where(mask, logits.astype(np.float64), -np.inf)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def entropy_from_log_probs(log_probs: np.ndarray) -> np.ndarray:
    """Row-wise entropy in nats; -inf entries (probability 0) contribute nothing."""
    probs = np.exp(log_probs)
    return -np.where(probs > 0, probs * np.where(np.isfinite(log_probs), log_probs, 0.0), 0.0).sum(axis=-1)
