"""A task made ready for one tokenizer: demonstrations drawn, prompts rendered and tokenised once."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..tasks.prompts import draw_demonstrations
from ..tasks.task import CLASSIFICATION, GENERATION, Example, Task
from .answer_tokens import AnswerTokens, answer_tokens
from .encoding import ScoringSet
from .option_format import OPTION_TASK_DEFAULT, OptionFormat, resolve_option_format

SCORED_SPLITS = ("calibration", "test")


@dataclass(frozen=True)
class PreparedTask:
    """The task, its fixed few-shot demonstrations, prompt format, answer tokens and tokenised scored splits."""

    task: Task
    shots: int
    demonstration_seed: int
    demonstrations: tuple[Example, ...]
    answer_tokens: AnswerTokens
    sets: dict[str, ScoringSet]
    example_prompt: str
    prompt_format: OptionFormat

    def summary(self) -> dict:
        """JSON-ready description for the results file."""
        return {
            "name": self.task.spec.name,
            "spec": self.task.spec.to_json(),
            "source": self.task.source,
            "split_sizes": self.task.split_sizes(),
            "shots": self.shots,
            "demonstration_seed": self.demonstration_seed,
            "demonstration_ids": [demo.id for demo in self.demonstrations],
            "prompt_format": self.prompt_format.to_json(),
            "answer_tokens": self.answer_tokens.to_json(),
            "answer_scoring": self.answer_tokens.describe(),
            "example_prompt": self.example_prompt,
            "prompt_tokens": {
                name: {"min": int(scoring_set.lengths().min()), "max": int(scoring_set.lengths().max()), "mean": float(scoring_set.lengths().mean())}
                for name, scoring_set in self.sets.items()
            },
        }


def prepare_task(task: Task, tokenizer, *, shots: int = 0, seed: int = 0, answer_forms: str = "auto", chat_template: str = OPTION_TASK_DEFAULT) -> PreparedTask:
    """Draw ``shots`` demonstrations with ``seed`` and tokenise the calibration and test splits once.

    ``answer_forms``: ``"surface"`` scores each answer by all its surface forms' first tokens,
    ``"first_token"`` by its canonical first token only, ``"full_sequence"`` by its forms' whole
    token sequences, ``"auto"`` as ``"surface"`` unless first tokens are shared (``zerotuning.scoring.answer_tokens``).
    ``chat_template``: ``"off"`` (the plain prompt), ``"on"`` or ``"auto"`` (``zerotuning.scoring.option_format``).
    """
    if task.spec.kind == GENERATION:
        raise ValueError(f"task {task.spec.name!r} is a generation task: score it with zerotuning.generation, not the answer-token scorer")
    prompt_format = resolve_option_format(tokenizer, chat_template)
    demonstrations = draw_demonstrations(task, shots, seed)
    tokens = answer_tokens(tokenizer, task.answer_strings(), cue=prompt_format.answer_cue, forms=answer_forms, prefix=prompt_format.answer_prefix)
    sets = {name: _scoring_set(task, name, demonstrations, tokenizer, prompt_format) for name in SCORED_SPLITS}
    first = task.split("calibration")[0]
    return PreparedTask(
        task=task,
        shots=shots,
        demonstration_seed=seed,
        demonstrations=demonstrations,
        answer_tokens=tokens,
        sets=sets,
        example_prompt=prompt_format.prompt_text(task.spec, first, demonstrations),
        prompt_format=prompt_format,
    )


def _scoring_set(task: Task, split: str, demonstrations: tuple[Example, ...], tokenizer, prompt_format: OptionFormat) -> ScoringSet:
    examples = task.split(split)
    if not examples:
        raise ValueError(f"task {task.spec.name!r}: the {split!r} split is empty (split sizes {task.split_sizes()})")
    prompts = [prompt_format.prompt_text(task.spec, example, demonstrations) for example in examples]
    token_ids = prompt_format.encode(prompts, tokenizer)
    choice_counts = [len(task.spec.labels) if task.spec.kind == CLASSIFICATION else len(example.choices) for example in examples]
    return ScoringSet(
        name=split,
        example_ids=tuple(example.id for example in examples),
        token_ids=tuple(tuple(ids) for ids in token_ids),
        answers=np.array([example.answer for example in examples], dtype=np.int64),
        choice_counts=np.array(choice_counts, dtype=np.int64),
    )
