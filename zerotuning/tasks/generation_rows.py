"""Generation rows: a prompt or a list of chat messages, one or more reference answers, an optional pattern.

``prompt`` is one user turn. ``messages`` is a conversation (a list of ``{"role", "content"}``
objects, a JSON list in CSV/TSV) whose last turn is the user's; earlier assistant turns are given,
so a follow-up question can depend on the first answer. ``references`` is one answer or a list
of them (a JSON list in CSV/TSV when it starts with ``[``). ``pattern`` is an optional regular
expression a right answer matches (checked here to compile).
"""

from __future__ import annotations

import json
import re

from .task import MESSAGE_ROLES, Example, Message


def generation_example(row: dict, row_number: int, split: str, example_id: str, columns) -> Example:
    """One generation example from a raw row; errors name the row, the column and the value."""
    messages = _messages(row, row_number, columns)
    references = _references(row, row_number, columns.references)
    pattern = _pattern(row, row_number, columns.pattern)
    return Example(id=example_id, split=split, answer=-1, messages=messages, references=references, pattern=pattern)


def _messages(row: dict, row_number: int, columns) -> tuple[Message, ...]:
    has_prompt = row.get(columns.prompt) not in (None, "")
    has_messages = row.get(columns.messages) not in (None, "")
    if has_prompt == has_messages:
        raise ValueError(
            f"row {row_number}: expected exactly one of the columns {columns.prompt!r} (a prompt) and "
            f"{columns.messages!r} (chat messages), got {'both' if has_prompt else 'neither'} (row has {sorted(row)})"
        )
    if has_prompt:
        prompt = str(row[columns.prompt]).strip()
        if not prompt:
            raise ValueError(f"row {row_number}: column {columns.prompt!r} is empty")
        return (("user", prompt),)
    value = _json_list(row[columns.messages], row_number, columns.messages)
    messages = []
    for turn, item in enumerate(value):
        if not isinstance(item, dict) or set(item) != {"role", "content"}:
            raise ValueError(f"row {row_number}: column {columns.messages!r}, turn {turn}: expected an object with 'role' and 'content', got {item!r}")
        role, content = item["role"], item["content"]
        if role not in MESSAGE_ROLES:
            raise ValueError(f"row {row_number}: column {columns.messages!r}, turn {turn}: role {role!r}, expected one of {MESSAGE_ROLES}")
        if not isinstance(content, str) or not content.strip():
            raise ValueError(f"row {row_number}: column {columns.messages!r}, turn {turn}: content must be non-empty text, got {content!r}")
        if role == "system" and turn != 0:
            raise ValueError(f"row {row_number}: column {columns.messages!r}, turn {turn}: a system message may only be the first turn")
        messages.append((role, content.strip()))
    if not messages or messages[-1][0] != "user":
        raise ValueError(f"row {row_number}: column {columns.messages!r}: the last turn must be the user's (the model answers it), got {[m[0] for m in messages]}")
    return tuple(messages)


def _references(row: dict, row_number: int, column: str) -> tuple[str, ...]:
    if row.get(column) in (None, ""):
        raise ValueError(f"row {row_number}: column {column!r} (the reference answers) is missing or empty (row has {sorted(row)})")
    value = row[column]
    if isinstance(value, str) and value.lstrip().startswith("["):
        value = _json_list(value, row_number, column)
    items = value if isinstance(value, (list, tuple)) else [value]
    references = tuple(str(item).strip() for item in items if not isinstance(item, (dict, list)))
    if len(references) != len(items) or not references or any(not reference for reference in references):
        raise ValueError(f"row {row_number}: column {column!r}: expected a non-empty answer or a list of non-empty answers, got {value!r}")
    return references


def _pattern(row: dict, row_number: int, column: str) -> str:
    value = row.get(column)
    if value in (None, ""):
        return ""
    try:
        re.compile(str(value))
    except re.error as error:
        raise ValueError(f"row {row_number}: column {column!r}: {value!r} is not a valid regular expression ({error})") from error
    return str(value)


def _json_list(value, row_number: int, column: str) -> list:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as error:
            raise ValueError(f"row {row_number}: column {column!r} must be a list (a JSON list in CSV/TSV), got {value!r}") from error
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"row {row_number}: column {column!r} must be a list, got {type(value).__name__}")
    return list(value)
