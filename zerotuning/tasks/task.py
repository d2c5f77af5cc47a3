"""The task data model: a task's description and its examples, each in one named split."""

from __future__ import annotations

from dataclasses import dataclass, field

CLASSIFICATION = "classification"
MULTIPLE_CHOICE = "multiple_choice"
GENERATION = "generation"
TASK_KINDS = (CLASSIFICATION, MULTIPLE_CHOICE, GENERATION)

# A chat turn: (role, content); roles are "system", "user" and "assistant".
Message = tuple[str, str]
MESSAGE_ROLES = ("system", "user", "assistant")

# "demo" feeds few-shot demonstrations only; gamma is tuned on "calibration" and judged on "test".
SPLITS = ("demo", "calibration", "test")

OPTION_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@dataclass(frozen=True)
class TaskSpec:
    """What a task asks and how its prompts read (the ``<name>.task.json`` fields)."""

    name: str
    kind: str
    instruction: str
    input_name: str
    labels: tuple[str, ...] = ()
    description: str = ""
    provenance: str = ""
    license: str = ""

    def __post_init__(self) -> None:
        if self.kind not in TASK_KINDS:
            raise ValueError(f"task kind: got {self.kind!r}, expected one of {TASK_KINDS}")
        if self.kind == CLASSIFICATION:
            if len(self.labels) < 2:
                raise ValueError(f"task {self.name!r}: a classification task needs at least 2 labels, got {list(self.labels)}")
            if len(set(self.labels)) != len(self.labels):
                raise ValueError(f"task {self.name!r}: labels must be distinct, got {list(self.labels)}")
            if any(not label.strip() for label in self.labels):
                raise ValueError(f"task {self.name!r}: labels must be non-empty words, got {list(self.labels)}")

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "kind": self.kind,
            "instruction": self.instruction,
            "input_name": self.input_name,
            "labels": list(self.labels),
            "description": self.description,
            "provenance": self.provenance,
            "license": self.license,
        }


@dataclass(frozen=True)
class Example:
    """One labelled example. ``answer`` indexes the task's labels (classification) or ``choices``.

    A generation example has ``answer`` -1 and instead a conversation ``messages`` ending with a
    user turn, one or more ``references`` (acceptable answers) and an optional regular expression
    ``pattern`` that a right answer matches.
    """

    id: str
    split: str
    answer: int
    text: str = ""
    question: str = ""
    choices: tuple[str, ...] = ()
    messages: tuple[Message, ...] = ()
    references: tuple[str, ...] = ()
    pattern: str = ""


@dataclass(frozen=True)
class Task:
    """A task spec with its examples; ``source`` says where they came from (for the results file)."""

    spec: TaskSpec
    examples: tuple[Example, ...]
    source: dict = field(default_factory=dict)

    def split(self, name: str) -> list[Example]:
        """The examples of one split, in file order."""
        if name not in SPLITS:
            raise ValueError(f"split: got {name!r}, expected one of {SPLITS}")
        return [example for example in self.examples if example.split == name]

    def split_sizes(self) -> dict[str, int]:
        return {name: len(self.split(name)) for name in SPLITS}

    def answer_strings(self) -> tuple[str, ...]:
        """What the model should say after "Answer:": the label words, or option letters."""
        if self.spec.kind == GENERATION:
            raise ValueError(f"task {self.spec.name!r} is a generation task: it has references, not answer tokens")
        if self.spec.kind == CLASSIFICATION:
            return self.spec.labels
        most_choices = max((len(example.choices) for example in self.examples), default=0)
        return tuple(OPTION_LETTERS[:most_choices])
