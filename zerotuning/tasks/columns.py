"""Turning raw rows (dicts from a file or a hub dataset) into examples, through a column mapping."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from .generation_rows import generation_example
from .task import CLASSIFICATION, GENERATION, MULTIPLE_CHOICE, OPTION_LETTERS, Example

ANSWER_FORMATS = ("auto", "index", "index1", "letter", "text")


@dataclass(frozen=True)
class ColumnMapping:
    """Which column holds what.

    Classification rows use ``text`` and ``label``; multiple-choice rows use ``question``,
    ``answer`` and either ``choices`` (one list column; a JSON list string in CSV/TSV) or
    ``choice_columns`` (one column per option, in order; empty trailing cells are dropped).
    ``answer_format``: ``index`` (0-based), ``index1`` (1-based), ``letter`` (A, B, ...),
    ``text`` (the right choice's text), or ``auto`` (an integer is a 0-based index, a single
    letter within range is a letter, else the text of exactly one choice). Generation rows use
    ``prompt`` or ``messages``, ``references`` and optionally ``pattern``
    (``zerotuning.tasks.generation_rows``). ``id`` is optional (row numbers otherwise).
    """

    text: str = "text"
    label: str = "label"
    question: str = "question"
    choices: str = "choices"
    choice_columns: tuple[str, ...] = ()
    answer: str = "answer"
    answer_format: str = "auto"
    id: str = "id"
    prompt: str = "prompt"
    messages: str = "messages"
    references: str = "references"
    pattern: str = "pattern"

    def __post_init__(self) -> None:
        if self.answer_format not in ANSWER_FORMATS:
            raise ValueError(f"answer_format: got {self.answer_format!r}, expected one of {ANSWER_FORMATS}")

    def to_json(self) -> dict:
        return {**asdict(self), "choice_columns": list(self.choice_columns)}

    @classmethod
    def from_json(cls, data: dict) -> ColumnMapping:
        return cls(**{**data, "choice_columns": tuple(data.get("choice_columns", ()))})


def infer_kind(row: dict, columns: ColumnMapping) -> str:
    """Classification when the row has the label column, multiple choice when it has the question column,
    generation when it has the references column and a prompt or messages column."""
    if columns.label in row and columns.text in row:
        return CLASSIFICATION
    if columns.question in row and (columns.choices in row or columns.choice_columns):
        return MULTIPLE_CHOICE
    if columns.references in row and (columns.prompt in row or columns.messages in row):
        return GENERATION
    raise ValueError(
        f"cannot tell the task kind from the columns {sorted(row)}: expected {columns.text!r} and {columns.label!r} "
        f"(classification), {columns.question!r} and {columns.choices!r} (multiple choice) or {columns.references!r} "
        f"and {columns.prompt!r} or {columns.messages!r} (generation); "
        "name the columns or give the kind explicitly"
    )


def classification_labels(rows: list[dict], columns: ColumnMapping) -> tuple[str, ...]:
    """The label words of rows whose labels are words, sorted (pass labels explicitly to fix their order)."""
    values = {_label_cell(row, columns.label, row_number) for row_number, row in enumerate(rows)}
    if any(isinstance(value, int) or str(value).strip().lstrip("-").isdigit() for value in values):
        raise ValueError(
            f"column {columns.label!r} holds numbers ({sorted(map(str, values))[:5]}); the label words are what the "
            "model is asked to say, so give them explicitly in index order (e.g. --labels negative,positive)"
        )
    return tuple(sorted(str(value).strip() for value in values))


def row_to_example(row: dict, row_number: int, split: str, kind: str, columns: ColumnMapping, labels: tuple[str, ...]) -> Example:
    """One example from one raw row; errors name the row, the column and the value."""
    example_id = str(row[columns.id]) if columns.id in row and row[columns.id] not in (None, "") else f"row-{row_number}"
    if kind == GENERATION:
        return generation_example(row, row_number, split, example_id, columns)
    if kind == CLASSIFICATION:
        text = _text_cell(row, columns.text, row_number)
        return Example(id=example_id, split=split, answer=_label_index(row, row_number, columns, labels), text=text)
    question = _text_cell(row, columns.question, row_number)
    choices = _choices(row, row_number, columns)
    answer = _answer_index(_cell(row, columns.answer, row_number), choices, columns.answer_format, row_number, columns.answer)
    return Example(id=example_id, split=split, answer=answer, question=question, choices=choices)


def _cell(row: dict, column: str, row_number: int):
    if column not in row or row[column] is None:
        raise ValueError(f"row {row_number}: column {column!r} is missing (row has {sorted(row)})")
    return row[column]


def _label_cell(row: dict, column: str, row_number: int):
    """A label: a word or an integer index; a JSON boolean is neither (which of the labels is true?)."""
    value = _cell(row, column, row_number)
    if isinstance(value, bool):
        raise ValueError(
            f"row {row_number}: label {json.dumps(value)} in column {column!r} is a JSON boolean; expected a label word "
            "or an integer index into the labels (write e.g. \"positive\" or 1)"
        )
    if not isinstance(value, (str, int)):
        raise ValueError(f"row {row_number}: label {value!r} in column {column!r} is a {type(value).__name__}; expected a label word or an integer index")
    return value


def _text_cell(row: dict, column: str, row_number: int) -> str:
    value = str(_cell(row, column, row_number)).strip()
    if not value:
        raise ValueError(f"row {row_number}: column {column!r} is empty")
    return value


def _label_index(row: dict, row_number: int, columns: ColumnMapping, labels: tuple[str, ...]) -> int:
    value = _label_cell(row, columns.label, row_number)
    word = str(value).strip()
    if word in labels:
        return labels.index(word)
    if isinstance(value, int) or word.lstrip("-").isdigit():
        index = int(word)
        if 0 <= index < len(labels):
            return index
    raise ValueError(
        f"row {row_number}: label {value!r} in column {columns.label!r} is neither one of the labels {list(labels)} "
        f"nor an index 0..{len(labels) - 1} into them"
    )


def _choices(row: dict, row_number: int, columns: ColumnMapping) -> tuple[str, ...]:
    if columns.choice_columns:
        cells = [row.get(column) for column in columns.choice_columns]
        while cells and (cells[-1] is None or str(cells[-1]).strip() == ""):
            cells.pop()
        if any(cell is None or str(cell).strip() == "" for cell in cells):
            raise ValueError(f"row {row_number}: an option column among {list(columns.choice_columns)} is empty before a filled one")
        choices = [str(cell).strip() for cell in cells]
    else:
        value = _cell(row, columns.choices, row_number)
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as error:
                raise ValueError(
                    f"row {row_number}: column {columns.choices!r} must be a list (a JSON list in CSV/TSV), got {value!r}"
                ) from error
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"row {row_number}: column {columns.choices!r} must be a list, got {type(value).__name__}")
        choices = [str(choice).strip() for choice in value]
    if not 2 <= len(choices) <= len(OPTION_LETTERS):
        raise ValueError(f"row {row_number}: expected 2 to {len(OPTION_LETTERS)} choices, got {len(choices)}")
    if any(not choice for choice in choices):
        raise ValueError(f"row {row_number}: a choice is empty: {choices}")
    return tuple(choices)


def _answer_index(value, choices: tuple[str, ...], answer_format: str, row_number: int, column: str) -> int:
    text = str(value).strip()
    is_integer = (isinstance(value, int) and not isinstance(value, bool)) or text.lstrip("-").isdigit()
    letters = OPTION_LETTERS[: len(choices)]
    candidates = {
        "index": int(text) if is_integer else None,
        "index1": int(text) - 1 if is_integer else None,
        "letter": letters.index(text.upper()) if len(text) == 1 and text.upper() in letters else None,
        "text": choices.index(text) if choices.count(text) == 1 else None,
    }
    if answer_format == "auto":
        index = candidates["index"] if is_integer else candidates["letter"] if candidates["letter"] is not None else candidates["text"]
    else:
        index = candidates[answer_format]
    if index is None or not 0 <= index < len(choices):
        raise ValueError(
            f"row {row_number}: answer {value!r} in column {column!r} is not a valid {answer_format} answer "
            f"for {len(choices)} choices {list(choices)}"
        )
    return index
