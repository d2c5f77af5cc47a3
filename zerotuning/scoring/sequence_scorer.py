"""Batched whole-answer scoring: teacher-forced log-likelihood of every answer form (``zerotuning.scoring.sequences``).

Each example is scored by ``plan.rows_per_example`` rows (its prompt plus each continuation), all
rows of a split length-sorted into batches; the ledger counts every row as an example scored, so
costs stay in example-equivalents (prompt-length passes). The answer position's statistics
(entropy, greedy token) come from the first row; an answer is the greedy answer when greedy
decoding would write one of its forms whole (every form token is the argmax after the ones before).
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from .answer_tokens import AnswerTokens
from .cost import CostLedger
from .encoding import ScoringSet, length_sorted_batches
from .records import ScoredSplit
from .scorer import check_scoring_model, last_logits, pad_id_of
from .sequences import SequencePlan


class SequenceScorer:
    """Scores scoring sets by whole answers with whatever profile is currently applied to ``model``.

    ``ScoredSplit.answer_logits`` holds each answer's log-likelihood (log-sum-exp over its forms)
    and ``vocab_logsumexp`` zeros, so ``vocab_log_probs`` is that log-likelihood too.
    """

    def __init__(self, model, tokenizer, answer_tokens: AnswerTokens, *, batch_size: int, ledger: CostLedger) -> None:
        check_scoring_model(model, batch_size)
        self.plan = SequencePlan.of(answer_tokens)
        self.model = model
        self.answer_tokens = answer_tokens
        self.batch_size = batch_size
        self.ledger = ledger
        self.rows_per_example = self.plan.rows_per_example
        self._pad_id = pad_id_of(tokenizer)
        self._answer_of_form = np.array([answer for answer, _ in self.plan.forms], dtype=np.int64)
        # per continuation: the forms its row scores, as [forms, longest form] positions / token ids / validity
        self._gather = []
        for row in range(self.rows_per_example):
            members = [index for index, owner in enumerate(self.plan.row_of_form) if owner == row]
            width = max(len(self.plan.forms[index][1]) for index in members)
            tokens = torch.zeros((len(members), width), dtype=torch.long)
            valid = torch.zeros((len(members), width), dtype=torch.bool)
            for slot, index in enumerate(members):
                form = self.plan.forms[index][1]
                tokens[slot, : len(form)] = torch.tensor(form)
                valid[slot, : len(form)] = True
            self._gather.append((np.array(members, dtype=np.int64), tokens, valid))

    def score(self, scoring_set: ScoringSet, description: str) -> ScoredSplit:
        """Score every example of ``scoring_set`` (progress bar labelled ``description``)."""
        count, forms = len(scoring_set.example_ids), len(self.plan.forms)
        form_log_likelihood = np.full((count, forms), -np.inf, dtype=np.float64)
        form_greedy = np.zeros((count, forms), dtype=bool)
        entropy = np.empty(count, dtype=np.float64)
        greedy = np.empty(count, dtype=np.int64)
        rows = [(example, row) for example in range(count) for row in range(self.rows_per_example)]
        lengths = np.array([len(scoring_set.token_ids[example]) + len(self.plan.continuations[row]) for example, row in rows])
        device = next(self.model.parameters()).device
        with torch.inference_mode():
            for indices in tqdm(length_sorted_batches(lengths, self.batch_size), desc=description, unit="batch", leave=False):
                batch = [rows[index] for index in indices]
                keep = max(len(self.plan.continuations[row]) for _, row in batch) + 1
                token_lists = [scoring_set.token_ids[example] + self.plan.continuations[row] for example, row in batch]
                log_probs = torch.log_softmax(last_logits(self.model, token_lists, self._pad_id, keep, self.ledger, device).double(), dim=-1)
                for position, (example, row) in enumerate(batch):
                    span = log_probs[position, keep - len(self.plan.continuations[row]) - 1 :]  # [continuation + 1, V]
                    if row == 0:
                        first = span[0]
                        entropy[example] = float(-torch.special.xlogy(first.exp(), first.exp()).sum())  # 0 log 0 = 0
                        greedy[example] = int(first.argmax())
                    members, tokens, valid = self._gather[row]
                    width = tokens.shape[1]
                    steps = torch.arange(width, device=span.device).clamp(max=span.shape[0] - 1)
                    picked = span[steps[None, :], tokens.to(span.device)]  # [forms, width]
                    on = valid.to(span.device)
                    form_log_likelihood[example, members] = torch.where(on, picked, 0.0).sum(-1).cpu().numpy()
                    argmax = span.argmax(-1)[steps]
                    form_greedy[example, members] = ((argmax[None, :] == tokens.to(span.device)) | ~on).all(-1).cpu().numpy()
        choice_mask = np.arange(len(self.answer_tokens.answers))[None, :] < scoring_set.choice_counts[:, None]
        return ScoredSplit(
            example_ids=scoring_set.example_ids,
            answers=scoring_set.answers,
            choice_mask=choice_mask,
            answer_logits=self._answer_log_likelihood(form_log_likelihood),
            vocab_logsumexp=np.zeros(count, dtype=np.float64),
            vocab_entropy=entropy,
            greedy_tokens=greedy,
            greedy_answers=self._greedy_answers(form_greedy, scoring_set.choice_counts),
        )

    def _answer_log_likelihood(self, form_log_likelihood: np.ndarray) -> np.ndarray:
        """[N, C] log-sum-exp over each answer's forms."""
        columns = []
        for answer in range(len(self.answer_tokens.answers)):
            values = form_log_likelihood[:, self._answer_of_form == answer]
            top = values.max(axis=1, keepdims=True)
            columns.append(top[:, 0] + np.log(np.exp(values - top).sum(axis=1)))
        return np.stack(columns, axis=1)

    def _greedy_answers(self, form_greedy: np.ndarray, choice_counts: np.ndarray) -> np.ndarray:
        """The answer one of whose forms greedy decoding writes whole (forms are prefix-free across answers), else -1."""
        hit = form_greedy.any(axis=1)
        parsed = np.where(hit, self._answer_of_form[form_greedy.argmax(axis=1)], -1)
        return np.where(parsed < choice_counts, parsed, -1)
