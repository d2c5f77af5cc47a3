"""The two calibration baselines a reviewer asked for, fitted on the calibration split, and their metrics.

- Temperature scaling divides the answer logits by one T > 0 fitted to minimise the NLL of the
  right answers. It never changes which answer is most likely, so its accuracy equals the
  uncalibrated accuracy; its NLL and ECE say whether the confidence was off.
- Label-bias (contextual) calibration divides the answer distribution by the model's average
  answer distribution over the calibration inputs and renormalises: an answer the prompt
  favours regardless of the input is discounted. The bias is estimated from the calibration
  inputs themselves (no labels, no extra forward pass) rather than from a content-free input such
  as "N/A" (Zhao et al., 2021): the mean over real inputs is the same correction without
  depending on one arbitrary probe string.
"""

from __future__ import annotations

import numpy as np

from ..scoring.distributions import masked_log_softmax

TEMPERATURE_RANGE = (1e-2, 1e2)
GOLDEN_STEPS = 120
ECE_BINS = 15


def fit_temperature(logits: np.ndarray, mask: np.ndarray, answers: np.ndarray) -> float:
    """The T minimising the mean NLL of ``answers`` under ``softmax(logits / T)`` over offered answers.

    The NLL is convex in 1/T, hence unimodal in log T: a golden-section search on log T over
    ``TEMPERATURE_RANGE`` finds the minimum to ~1e-8 relative precision.
    """
    def loss(log_temperature: float) -> float:
        return negative_log_likelihood(masked_log_softmax(logits / np.exp(log_temperature), mask), answers)

    low, high = np.log(TEMPERATURE_RANGE[0]), np.log(TEMPERATURE_RANGE[1])
    ratio = (np.sqrt(5) - 1) / 2
    left, right = high - ratio * (high - low), low + ratio * (high - low)
    left_loss, right_loss = loss(left), loss(right)
    for _ in range(GOLDEN_STEPS):
        if left_loss <= right_loss:
            high, right, right_loss = right, left, left_loss
            left = high - ratio * (high - low)
            left_loss = loss(left)
        else:
            low, left, left_loss = left, right, right_loss
            right = low + ratio * (high - low)
            right_loss = loss(right)
    return float(np.exp((low + high) / 2))


def temperature_scaled(logits: np.ndarray, mask: np.ndarray, temperature: float) -> np.ndarray:
    """Answer log-probabilities after dividing the logits by ``temperature``."""
    return masked_log_softmax(logits / temperature, mask)


def fit_label_bias(log_probs: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """[C] mean probability of each answer over the examples that offer it."""
    probs = np.where(mask, np.exp(log_probs), 0.0)
    offered = mask.sum(axis=0)
    return np.where(offered > 0, probs.sum(axis=0) / np.maximum(offered, 1), 1.0)


def label_bias_corrected(log_probs: np.ndarray, mask: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Answer log-probabilities after dividing by ``bias`` and renormalising over offered answers."""
    return masked_log_softmax(np.where(mask, log_probs, 0.0) - np.log(bias)[None, :], mask)


def negative_log_likelihood(log_probs: np.ndarray, answers: np.ndarray) -> float:
    """Mean negative log-probability of the right answers (nats)."""
    return float(-log_probs[np.arange(len(answers)), answers].mean())


def expected_calibration_error(log_probs: np.ndarray, answers: np.ndarray, bins: int = ECE_BINS) -> float:
    """Top-label ECE with ``bins`` equal-width confidence bins: sum over bins of |accuracy - confidence| x share."""
    confidence = np.exp(log_probs.max(axis=-1))
    correct = log_probs.argmax(axis=-1) == answers
    bin_index = np.minimum((confidence * bins).astype(int), bins - 1)
    error = 0.0
    for index in range(bins):
        members = bin_index == index
        if members.any():
            error += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    return float(error)
