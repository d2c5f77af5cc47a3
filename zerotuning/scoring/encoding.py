"""Tokenising a split once, and cutting it into length-sorted, left-padded batches."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class ScoringSet:
    """One split ready to score: token ids per example (special tokens included), answers, option counts."""

    name: str
    example_ids: tuple[str, ...]
    token_ids: tuple[tuple[int, ...], ...]
    answers: np.ndarray
    choice_counts: np.ndarray

    def __post_init__(self) -> None:
        if not self.example_ids:
            raise ValueError(f"split {self.name!r} has no examples to score")

    def subset(self, indices: np.ndarray) -> "ScoringSet":
        """The examples at ``indices``, in that order."""
        indices = np.asarray(indices, dtype=np.int64)
        return ScoringSet(
            name=self.name,
            example_ids=tuple(self.example_ids[i] for i in indices),
            token_ids=tuple(self.token_ids[i] for i in indices),
            answers=self.answers[indices],
            choice_counts=self.choice_counts[indices],
        )

    def lengths(self) -> np.ndarray:
        return np.array([len(ids) for ids in self.token_ids])


def length_sorted_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Example indices grouped into batches of similar length, longest first (memory peaks early)."""
    if batch_size < 1:
        raise ValueError(f"batch_size: got {batch_size}, expected >= 1")
    order = np.argsort(-np.asarray(lengths), kind="stable")
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def left_padded(token_lists: list[tuple[int, ...]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """input_ids and attention_mask [B, L], real tokens at the right so every row ends at the answer position."""
    width = max(len(ids) for ids in token_lists)
    input_ids = torch.full((len(token_lists), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(token_lists), width), dtype=torch.long)
    for row, ids in enumerate(token_lists):
        input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, width - len(ids) :] = 1
    return input_ids, attention_mask
