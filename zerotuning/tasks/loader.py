"""One entry point for every task source: a built-in name, a local file, or ``hf:<dataset>``."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from .builtin import read_builtin
from .columns import ColumnMapping, classification_labels, infer_kind, row_to_example
from .files import FILE_FORMATS, read_rows
from .hub import DEFAULT_HUB_SPLIT_MAP, HUB_PREFIX, HUB_SPLIT_COLUMN, read_hub_rows
from .prompts import default_instruction
from .splits import DEFAULT_FRACTIONS, SplitPlan, assign_splits
from .task import CLASSIFICATION, Task, TaskSpec

BUILTIN_SPLIT_COLUMN = "split"


@dataclass(frozen=True)
class TaskRequest:
    """Everything needed to load a task again identically (it is stored in the profile's metadata).

    ``source``: a built-in task name, a ``.jsonl``/``.csv``/``.tsv`` path, or ``hf:<dataset>``.
    ``kind``, ``labels``, ``instruction`` and ``input_name`` override what the source says or
    what is inferred. Split defaults: built-ins use their ``split`` column; hub datasets map
    their splits train -> demo, validation -> calibration, test -> test; local files without a
    split column are split at random (10% demo, 45% calibration, 45% test) with ``splits.seed``.
    """

    source: str
    kind: str | None = None
    columns: ColumnMapping = field(default_factory=ColumnMapping)
    labels: tuple[str, ...] = ()
    instruction: str | None = None
    input_name: str | None = None
    splits: SplitPlan = field(default_factory=SplitPlan)
    hub_config: str | None = None

    def to_json(self) -> dict:
        return {
            "source": self.source,
            "kind": self.kind,
            "columns": self.columns.to_json(),
            "labels": list(self.labels),
            "instruction": self.instruction,
            "input_name": self.input_name,
            "splits": self.splits.to_json(),
            "hub_config": self.hub_config,
        }

    @classmethod
    def from_json(cls, data: dict) -> TaskRequest:
        return cls(
            source=data["source"],
            kind=data.get("kind"),
            columns=ColumnMapping.from_json(data.get("columns") or {}),
            labels=tuple(data.get("labels") or ()),
            instruction=data.get("instruction"),
            input_name=data.get("input_name"),
            splits=SplitPlan.from_json(data.get("splits") or {}),
            hub_config=data.get("hub_config"),
        )


def load_task(request: TaskRequest) -> Task:
    """Load, map and split a task; every row must convert cleanly (errors name the source and the row)."""
    origin, description, rows = _read_source(request.source, request.hub_config)
    try:
        return _task_from_rows(request, origin, description, rows)
    except ValueError as error:  # name the source: a row number or a column alone does not say where
        raise ValueError(f"task {request.source!r}: {error}") from error


def _task_from_rows(request: TaskRequest, origin: str, description: dict, rows: list[dict]) -> Task:
    kind = request.kind or description.get("kind") or infer_kind(rows[0], request.columns)
    labels = tuple(request.labels) or tuple(description.get("labels") or ())
    if kind == CLASSIFICATION and not labels:
        labels = classification_labels(rows, request.columns)
    input_name = request.input_name or description.get("input_name") or ("Sentence" if kind == CLASSIFICATION else "")
    instruction = request.instruction if request.instruction is not None else description.get("instruction")
    if instruction is None:  # "" is a choice: no instruction line
        instruction = default_instruction(kind, labels, input_name)
    spec = TaskSpec(
        name=description.get("name") or _source_name(request.source),
        kind=kind,
        instruction=instruction,
        input_name=input_name,
        labels=labels if kind == CLASSIFICATION else (),
        description=description.get("description", ""),
        provenance=description.get("provenance", ""),
        license=description.get("license", ""),
    )
    plan = _resolved_plan(request.splits, origin)
    splits, split_account = assign_splits(rows, plan)
    examples = tuple(
        row_to_example(row, row_number, split, kind, request.columns, spec.labels)
        for row_number, (row, split) in enumerate(zip(rows, splits))
        if split is not None
    )
    _check_unique_ids(examples)
    return Task(spec=spec, examples=examples, source={"origin": origin, "request": request.to_json(), "splits": split_account})


def _read_source(source: str, hub_config: str | None) -> tuple[str, dict, list[dict]]:
    if source.startswith(HUB_PREFIX):
        return "hub", {}, read_hub_rows(source[len(HUB_PREFIX) :], hub_config)
    path = Path(source)
    if path.suffix.lower() in FILE_FORMATS or path.exists():
        return "file", {}, read_rows(path)
    description, rows = read_builtin(source)
    return "builtin", description, rows


def _resolved_plan(plan: SplitPlan, origin: str) -> SplitPlan:
    if plan.fractions is not None or plan.column is not None:
        return plan
    if origin == "builtin":
        return replace(plan, column=BUILTIN_SPLIT_COLUMN)
    if origin == "hub":
        return replace(plan, column=HUB_SPLIT_COLUMN, mapping=plan.mapping or dict(DEFAULT_HUB_SPLIT_MAP))
    if plan.mapping is not None:
        raise ValueError("split mapping given for a local file without --split-column: name the column that holds the split")
    return replace(plan, fractions=dict(DEFAULT_FRACTIONS))


def _source_name(source: str) -> str:
    return source[len(HUB_PREFIX) :] if source.startswith(HUB_PREFIX) else Path(source).stem


def _check_unique_ids(examples: tuple) -> None:
    seen: set[str] = set()
    for example in examples:
        if example.id in seen:
            raise ValueError(f"task: example id {example.id!r} appears twice; ids must be unique")
        seen.add(example.id)
