"""Batched scoring: one forward pass per batch reads the next-token distribution at the answer position."""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from .answer_tokens import FULL_SEQUENCE, AnswerTokens
from .cost import CostLedger
from .encoding import ScoringSet, left_padded, length_sorted_batches
from .records import ScoredSplit


class Scorer:
    """Scores scoring sets with whatever profile is currently applied to ``model``.

    Rows are left-padded (the answer position is the last column for every row) and given
    position ids that count real tokens only, so a padded row gets the same logits as alone.
    """

    rows_per_example = 1  # forward rows (prompt-length passes) per example scored

    def __init__(self, model, tokenizer, answer_tokens: AnswerTokens, *, batch_size: int, ledger: CostLedger) -> None:
        check_scoring_model(model, batch_size)
        if answer_tokens.mode == FULL_SEQUENCE:
            raise ValueError("answer_tokens: full_sequence mode scores whole answers; use make_scorer (a SequenceScorer)")
        self.model = model
        self.tokenizer = tokenizer
        self.answer_tokens = answer_tokens
        self.batch_size = batch_size
        self.ledger = ledger
        self._pad_id = pad_id_of(tokenizer)
        # [C, F] first-token ids of each answer's surface forms, padded by repeating the canonical one
        # (a repeat would count twice, so padding is masked out of the log-sum-exp).
        width = max(len(forms) for forms in answer_tokens.forms)
        self._form_ids = torch.tensor([list(forms) + [forms[0]] * (width - len(forms)) for forms in answer_tokens.forms], dtype=torch.long)
        self._form_mask = torch.tensor([[i < len(forms) for i in range(width)] for forms in answer_tokens.forms])
        self._parsed: dict[int, int] = {}

    def score(self, scoring_set: ScoringSet, description: str) -> ScoredSplit:
        """Score every example of ``scoring_set`` (progress bar labelled ``description``)."""
        count = len(scoring_set.example_ids)
        answer_logits = np.empty((count, len(self._form_ids)), dtype=np.float32)
        logsumexp = np.empty(count, dtype=np.float64)
        entropy = np.empty(count, dtype=np.float64)
        greedy = np.empty(count, dtype=np.int64)
        device = next(self.model.parameters()).device
        batches = length_sorted_batches(scoring_set.lengths(), self.batch_size)
        with torch.inference_mode():
            for indices in tqdm(batches, desc=description, unit="batch", leave=False):
                rows = self._forward([scoring_set.token_ids[i] for i in indices], device)
                answer_logits[indices] = rows["answer_logits"]
                logsumexp[indices] = rows["logsumexp"]
                entropy[indices] = rows["entropy"]
                greedy[indices] = rows["greedy"]
        choice_mask = np.arange(len(self._form_ids))[None, :] < scoring_set.choice_counts[:, None]
        return ScoredSplit(
            example_ids=scoring_set.example_ids,
            answers=scoring_set.answers,
            choice_mask=choice_mask,
            answer_logits=answer_logits,
            vocab_logsumexp=logsumexp,
            vocab_entropy=entropy,
            greedy_tokens=greedy,
            greedy_answers=self._greedy_answers(greedy, scoring_set.choice_counts),
        )

    def _forward(self, token_lists: list[tuple[int, ...]], device: torch.device) -> dict[str, np.ndarray]:
        logits = last_logits(self.model, token_lists, self._pad_id, 1, self.ledger, device)[:, -1, :]
        probs = torch.softmax(logits, dim=-1)
        return {
            "answer_logits": self._answer_logits(logits).cpu().numpy(),
            "logsumexp": torch.logsumexp(logits, dim=-1).double().cpu().numpy(),
            "entropy": (-torch.special.xlogy(probs, probs).sum(-1)).double().cpu().numpy(),  # 0 log 0 = 0
            "greedy": logits.argmax(-1).cpu().numpy(),
        }

    @property
    def num_answers(self) -> int:
        return len(self._form_ids)

    @property
    def pad_id(self) -> int:
        return self._pad_id

    def answer_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """The answers' log-masses of next-token ``logits`` [B, V] (differentiable; the gradient paths use it)."""
        return self._answer_logits(logits)

    def _answer_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """[B, C] log-sum-exp of each answer's form logits: minus the vocabulary log-sum-exp, the log of its mass."""
        form_logits = logits[:, self._form_ids.to(logits.device)]  # [B, C, F]
        return torch.logsumexp(form_logits.masked_fill(~self._form_mask.to(logits.device), float("-inf")), dim=-1)

    def _greedy_answers(self, greedy: np.ndarray, choice_counts: np.ndarray) -> np.ndarray:
        """Parse each greedy token as an answer; naming an option the example lacks is invalid too."""
        for token in set(greedy.tolist()) - self._parsed.keys():
            self._parsed[token] = self.answer_tokens.parse(self.tokenizer.decode([token]))
        parsed = np.array([self._parsed[token] for token in greedy.tolist()], dtype=np.int64)
        return np.where(parsed < choice_counts, parsed, -1)


def make_scorer(model, tokenizer, answer_tokens: AnswerTokens, *, batch_size: int, ledger: CostLedger):
    """The scorer for ``answer_tokens``' mode: whole answers (``SequenceScorer``) or the answer position only (``Scorer``)."""
    if answer_tokens.mode == FULL_SEQUENCE:
        from .sequence_scorer import SequenceScorer

        return SequenceScorer(model, tokenizer, answer_tokens, batch_size=batch_size, ledger=ledger)
    return Scorer(model, tokenizer, answer_tokens, batch_size=batch_size, ledger=ledger)


def check_scoring_model(model, batch_size: int) -> None:
    if model.training:
        raise ValueError("model: it is in training mode (dropout on); call model.eval() before scoring")
    if batch_size < 1:
        raise ValueError(f"batch_size: got {batch_size}, expected >= 1")


def pad_id_of(tokenizer) -> int:
    return next(i for i in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0) if i is not None)


def last_logits(model, token_lists: list[tuple[int, ...]], pad_id: int, keep: int, ledger: CostLedger, device: torch.device) -> torch.Tensor:
    """[B, keep, V] float32 logits at the last ``keep`` positions of the left-padded rows (one forward pass, recorded)."""
    input_ids, attention_mask = left_padded(token_lists, pad_id)
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    output = model(
        input_ids=input_ids.to(device),
        attention_mask=attention_mask.to(device),
        position_ids=position_ids.to(device),
        use_cache=False,
        logits_to_keep=keep,
    )
    ledger.record_forward(len(token_lists), int(attention_mask.sum()), attention_mask.numel())
    return output.logits[:, -keep:, :].float()
