"""A generation task made ready for one tokenizer: conversations rendered and tokenised once, with the references' tokens."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..tasks.prompts import draw_demonstrations
from ..tasks.task import GENERATION, Example, Message, Task
from .formats import PromptFormat, resolve_format

SCORED_SPLITS = ("calibration", "test")


@dataclass(frozen=True)
class GenerationSet:
    """One split ready to score: per example its prompt tokens, and per reference the answer's tokens
    (the reference text and the end of turn, as they follow that prompt)."""

    name: str
    example_ids: tuple[str, ...]
    prompt_ids: tuple[tuple[int, ...], ...]
    references: tuple[tuple[str, ...], ...]
    reference_ids: tuple[tuple[tuple[int, ...], ...], ...]
    patterns: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.example_ids:
            raise ValueError(f"split {self.name!r} has no examples to score")

    def __len__(self) -> int:
        return len(self.example_ids)

    def prompt_lengths(self) -> np.ndarray:
        return np.array([len(ids) for ids in self.prompt_ids])


@dataclass(frozen=True)
class PreparedGeneration:
    """The task, its demonstrations, the resolved prompt format and the tokenised scored splits."""

    task: Task
    shots: int
    demonstration_seed: int
    demonstrations: tuple[Example, ...]
    prompt_format: PromptFormat
    sets: dict[str, GenerationSet]
    example_prompt: str

    def summary(self) -> dict:
        return {
            "name": self.task.spec.name,
            "spec": self.task.spec.to_json(),
            "source": self.task.source,
            "split_sizes": self.task.split_sizes(),
            "shots": self.shots,
            "demonstration_seed": self.demonstration_seed,
            "demonstration_ids": [demo.id for demo in self.demonstrations],
            "prompt_format": self.prompt_format.to_json(),
            "example_prompt": self.example_prompt,
            "prompt_tokens": {name: _stats(s.prompt_lengths()) for name, s in self.sets.items()},
            "reference_tokens": {name: _stats(np.array([len(r) for refs in s.reference_ids for r in refs])) for name, s in self.sets.items()},
        }


def prepare_generation(task: Task, tokenizer, *, chat_template: str = "auto", shots: int = 0, seed: int = 0, eos_token_ids: tuple[int, ...] = ()) -> PreparedGeneration:
    """Resolve the prompt format (``--chat-template``: auto, on or off), draw ``shots`` demonstrations (earlier turns of every conversation) and tokenise."""
    if task.spec.kind != GENERATION:
        raise ValueError(f"task {task.spec.name!r} is a {task.spec.kind} task, not a generation task")
    fmt = resolve_format(tokenizer, chat_template, eos_token_ids)
    demonstrations = draw_demonstrations(task, shots, seed)
    sets = {name: _generation_set(task, name, demonstrations, fmt) for name in SCORED_SPLITS}
    first = task.split("calibration")[0]
    return PreparedGeneration(task, shots, seed, demonstrations, fmt, sets, fmt.prompt_text(conversation(task, first, demonstrations)))


def conversation(task: Task, example: Example, demonstrations: tuple[Example, ...] = ()) -> tuple[Message, ...]:
    """The turns the model reads: the task's instruction on top of the first user turn, demonstrations
    as earlier question/answer turns (each answered with its first reference), then the example's turns."""
    turns: list[Message] = []
    for demo in demonstrations:
        turns.extend(message for message in demo.messages if message[0] != "system")
        turns.append(("assistant", demo.references[0]))
    own = list(example.messages)
    system = [own.pop(0)] if own and own[0][0] == "system" else []
    turns = system + turns + own
    if task.spec.instruction:
        first_user = next(index for index, (role, _) in enumerate(turns) if role == "user")
        turns[first_user] = ("user", f"{task.spec.instruction}\n{turns[first_user][1]}")
    return tuple(turns)


def _generation_set(task: Task, split: str, demonstrations: tuple[Example, ...], fmt: PromptFormat) -> GenerationSet:
    examples = task.split(split)
    if not examples:
        raise ValueError(f"task {task.spec.name!r}: the {split!r} split is empty (split sizes {task.split_sizes()})")
    prompt_ids, reference_ids = [], []
    for example in examples:
        prompt = fmt.prompt_text(conversation(task, example, demonstrations))
        ids = fmt.encode(prompt)
        prompt_ids.append(tuple(ids))
        reference_ids.append(tuple(_answer_ids(fmt, prompt, ids, reference, example.id) for reference in example.references))
    return GenerationSet(
        name=split,
        example_ids=tuple(example.id for example in examples),
        prompt_ids=tuple(prompt_ids),
        references=tuple(example.references for example in examples),
        reference_ids=tuple(reference_ids),
        patterns=tuple(example.pattern for example in examples),
    )


def _answer_ids(fmt: PromptFormat, prompt: str, prompt_ids: list[int], reference: str, example_id: str) -> tuple[int, ...]:
    """The reference's tokens as they follow the prompt (encoded together, so merges are as in context)."""
    full = fmt.encode(prompt + fmt.answer_text(reference))
    if full[: len(prompt_ids)] != prompt_ids or len(full) == len(prompt_ids):
        raise ValueError(
            f"example {example_id!r}: the tokenizer merges the reference {reference!r} into the end of the prompt, so its "
            "tokens cannot be scored after the prompt's; reword the reference or use another --chat-template"
        )
    return tuple(full[len(prompt_ids) :])


def _stats(lengths: np.ndarray) -> dict:
    return {"min": int(lengths.min()), "max": int(lengths.max()), "mean": float(lengths.mean())}
