"""Prompt templates in the paper's plain style, with optional few-shot demonstrations.

Zero-shot classification reads ``<instruction>\\n<input_name>: <text>\\nAnswer:``; multiple choice
reads ``<question>\\nA. ...\\nB. ...\\nAnswer:`` (the instruction line only when the task has one).
Demonstrations are the same blocks with their answer filled in, separated by blank lines.

``render_messages`` gives the same prompt as chat turns, for a tokenizer's chat template: each
demonstration a user turn (its block) and an assistant turn (its answer), then the example's block
as the last user turn; the instruction opens the first user turn. The blocks keep their cue, so
the turns hold exactly the plain prompt's text and only the template's wrapping differs.
"""

from __future__ import annotations

import numpy as np

from .task import CLASSIFICATION, OPTION_LETTERS, Example, Message, Task, TaskSpec

ANSWER_CUE = "Answer:"


def default_instruction(kind: str, labels: tuple[str, ...], input_name: str) -> str:
    """The paper's instruction for classification; none for multiple choice (as in the paper)."""
    if kind != CLASSIFICATION:
        return ""
    names = ", ".join(labels[:-1]) + f" or {labels[-1]}" if len(labels) > 1 else labels[0]
    return f"Classify the {input_name.lower()} into one of the following categories: {names}."


def answer_text(spec: TaskSpec, example: Example) -> str:
    """What a correct model says after the cue: the label word or the option letter."""
    return spec.labels[example.answer] if spec.kind == CLASSIFICATION else OPTION_LETTERS[example.answer]


def render_prompt(spec: TaskSpec, example: Example, demonstrations: tuple[Example, ...] = ()) -> str:
    """The full prompt for one example, ending with the answer cue (no trailing space)."""
    blocks = [_block(spec, demo) + " " + answer_text(spec, demo) for demo in demonstrations]
    blocks.append(_block(spec, example))
    body = "\n\n".join(blocks)
    return f"{spec.instruction}\n{body}" if spec.instruction else body


def render_messages(spec: TaskSpec, example: Example, demonstrations: tuple[Example, ...] = ()) -> tuple[Message, ...]:
    """The prompt as chat turns ending with the example's user turn (the model answers in the next, assistant turn)."""
    messages: list[Message] = []
    for demo in demonstrations:
        messages += [("user", _block(spec, demo)), ("assistant", answer_text(spec, demo))]
    messages.append(("user", _block(spec, example)))
    if spec.instruction:
        messages[0] = ("user", f"{spec.instruction}\n{messages[0][1]}")
    return tuple(messages)


def draw_demonstrations(task: Task, shots: int, seed: int) -> tuple[Example, ...]:
    """``shots`` demo-split examples drawn without replacement with ``seed``, shared by every prompt.

    One fixed set for all scored examples keeps the context identical across them (as in-context
    learning is usually evaluated), so the label-bias estimate of contextual calibration applies.
    The demo split is disjoint from calibration and test by construction.
    """
    if shots < 0:
        raise ValueError(f"shots: got {shots}, expected a count >= 0")
    if shots == 0:
        return ()
    pool = task.split("demo")
    if len(pool) < shots:
        raise ValueError(f"shots: asked for {shots} demonstrations but the demo split has {len(pool)} examples")
    chosen = np.random.default_rng(seed).choice(len(pool), size=shots, replace=False)
    return tuple(pool[index] for index in chosen)


def _block(spec: TaskSpec, example: Example) -> str:
    if spec.kind == CLASSIFICATION:
        return f"{spec.input_name}: {example.text}\n{ANSWER_CUE}"
    question = f"{spec.input_name}: {example.question}" if spec.input_name else example.question
    options = "\n".join(f"{OPTION_LETTERS[index]}. {choice}" for index, choice in enumerate(example.choices))
    return f"{question}\n{options}\n{ANSWER_CUE}"
