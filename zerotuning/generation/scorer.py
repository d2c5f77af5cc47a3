"""Scoring a generation split with whatever profile is applied: reference likelihoods and greedy answers.

Likelihood: each (prompt, reference) pair is one left-padded row; one forward pass per batch
reads the log-probability of every reference token (teacher forcing), the end-of-turn token
included, so a reference the model would not stop after scores lower. Generation: greedy
``model.generate`` with the KV cache, a fresh ``GenerationConfig`` (no sampling, no penalties
inherited from the model), stopping at the format's stop tokens or after ``max_new_tokens``.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import GenerationConfig

from ..scoring.cost import CostLedger
from ..scoring.encoding import left_padded, length_sorted_batches
from .formats import PromptFormat
from .prepared import GenerationSet
from .records import GenerationScores, Generations

MEASURES = ("likelihood", "generation")


class GenerationScorer:
    """Scores ``GenerationSet``s; ``measures`` picks the likelihood pass, the generation, or both."""

    def __init__(self, model, prompt_format: PromptFormat, *, batch_size: int, max_new_tokens: int, ledger: CostLedger) -> None:
        if model.training:
            raise ValueError("model: it is in training mode (dropout on); call model.eval() before scoring")
        if batch_size < 1:
            raise ValueError(f"batch_size: got {batch_size}, expected >= 1")
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens: got {max_new_tokens}, expected >= 1")
        self.model = model
        self.format = prompt_format
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.ledger = ledger
        tokenizer = prompt_format.tokenizer
        self._pad_id = next(i for i in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0) if i is not None)

    def score(self, generation_set: GenerationSet, description: str, measures: tuple[str, ...] = MEASURES) -> GenerationScores:
        unknown = [measure for measure in measures if measure not in MEASURES]
        if unknown or not measures:
            raise ValueError(f"measures: got {list(measures)}, expected a non-empty subset of {MEASURES}")
        with torch.inference_mode():
            likelihood = self._likelihood(generation_set, description) if "likelihood" in measures else None
            generations = self._generate(generation_set, description) if "generation" in measures else None
        return GenerationScores(generation_set.example_ids, generation_set.references, generation_set.patterns, likelihood, generations)

    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _likelihood(self, generation_set: GenerationSet, description: str) -> np.ndarray:
        pairs = [(example, reference) for example, refs in enumerate(generation_set.reference_ids) for reference in range(len(refs))]
        rows = [generation_set.prompt_ids[e] + generation_set.reference_ids[e][r] for e, r in pairs]
        answers = [generation_set.reference_ids[e][r] for e, r in pairs]
        means = np.empty(len(pairs))
        device = self._device()
        for indices in tqdm(length_sorted_batches(np.array([len(row) for row in rows]), self.batch_size), desc=f"{description} (likelihood)", unit="batch", leave=False):
            input_ids, attention_mask = left_padded([rows[i] for i in indices], self._pad_id)
            keep = max(len(answers[i]) for i in indices) + 1
            output = self.model(
                input_ids=input_ids.to(device),
                attention_mask=attention_mask.to(device),
                position_ids=(attention_mask.cumsum(-1) - 1).clamp(min=0).to(device),
                use_cache=False,
                logits_to_keep=keep,
            )
            self.ledger.record_forward(len(indices), int(attention_mask.sum()), attention_mask.numel())
            log_probs = torch.log_softmax(output.logits.float(), dim=-1)
            for row, index in enumerate(indices):
                answer = answers[index]
                # Row ends at its last answer token; the logits at keep-len-1 .. keep-2 predict the answer's tokens.
                positions = torch.arange(keep - len(answer) - 1, keep - 1, device=device)
                targets = torch.tensor(answer, device=device)
                means[index] = float(log_probs[row, positions, targets].double().mean())
        best = np.full(len(generation_set), -np.inf)
        for (example, _), value in zip(pairs, means):
            best[example] = max(best[example], value)
        return best

    def _generate(self, generation_set: GenerationSet, description: str) -> Generations:
        count = len(generation_set)
        texts: list[str] = [""] * count
        token_counts = np.zeros(count, dtype=np.int64)
        ended = np.zeros(count, dtype=bool)
        entropy = np.zeros(count)
        config = GenerationConfig(
            do_sample=False,
            max_new_tokens=self.max_new_tokens,
            eos_token_id=list(self.format.stop_token_ids),
            pad_token_id=self._pad_id,
            return_dict_in_generate=True,
            output_logits=True,
            use_cache=True,
        )
        device = self._device()
        for indices in tqdm(length_sorted_batches(generation_set.prompt_lengths(), self.batch_size), desc=f"{description} (generation)", unit="batch", leave=False):
            input_ids, attention_mask = left_padded([generation_set.prompt_ids[i] for i in indices], self._pad_id)
            output = self.model.generate(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device), generation_config=config)
            steps = len(output.logits)
            self.ledger.record_forward(len(indices), int(attention_mask.sum()), attention_mask.numel())  # the prefill
            for _ in range(steps - 1):  # one cached decoding pass per further token
                self.ledger.record_forward(0, len(indices), len(indices))
            step_entropy = np.stack([_entropy(logits) for logits in output.logits], axis=1)  # [B, steps]
            new_tokens = output.sequences[:, input_ids.shape[1] :].cpu().tolist()
            for row, index in enumerate(indices):
                text, finished, used = self.format.answer_of(new_tokens[row][:steps])
                texts[index], ended[index], token_counts[index] = text, finished, used
                entropy[index] = float(step_entropy[row, :used].mean())
        return Generations(tuple(texts), token_counts, ended, entropy)


def _entropy(logits: torch.Tensor) -> np.ndarray:
    """Row-wise entropy (nats) of softmax(logits); 0 log 0 = 0."""
    probs = torch.softmax(logits.float(), dim=-1)
    return (-torch.special.xlogy(probs, probs).sum(-1)).double().cpu().numpy()
