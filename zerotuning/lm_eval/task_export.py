"""A zerotuning task as an lm-eval task: a YAML file over JSONL files, with zerotuning's own prompts.

The test split becomes lm-eval's ``test_split`` and the demo split its ``fewshot_split``, so that
``--num_fewshot`` draws demonstrations from the same pool as ``zerotuning tune --shots``. Each row
carries its prompt block as zerotuning renders it (``zerotuning.tasks.prompts``) and the task's
instruction is lm-eval's ``description``, so a zero-shot lm-eval prompt is exactly zerotuning's
prompt, and lm-eval's ``acc`` picks the answer (label word or option letter, after a space) with
the highest log-likelihood. The YAML names the JSONL files by absolute path: export again after
moving them. Needs no lm-eval install.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from ..atomic_files import write_text_atomically
from ..output_paths import OutputFiles
from ..tasks.prompts import render_prompt
from ..tasks.task import CLASSIFICATION, GENERATION, OPTION_LETTERS, Example, Task

_TASK_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


def export_task(task: Task, out_dir: str | Path, *, name: str | None = None, overwrite: bool = False, inputs: Mapping[str, Path] = {}) -> Path:
    """Write ``<name>.yaml``, ``<name>_test.jsonl`` and (with demo examples) ``<name>_demo.jsonl``; returns the YAML path.

    ``name`` (default ``zerotuning_<task name>``) is the lm-eval task name; existing files of those names are refused
    unless ``overwrite``, and so is one of them being an ``inputs`` path. The files appear together (``OutputFiles``): the YAML last, so a failed export leaves the earlier ones.
    """
    if task.spec.kind == GENERATION:
        raise ValueError(f"task {task.spec.name!r} is a generation task; only classification and multiple-choice tasks export to lm-eval")
    name = name or f"zerotuning_{re.sub(r'[^A-Za-z0-9_]', '_', task.spec.name)}"
    if not _TASK_NAME.match(name):
        raise ValueError(f"name: got {name!r}, expected an lm-eval task name (a letter, then letters, digits or _)")
    out_dir = Path(out_dir).resolve()
    splits = {"test": task.split("test"), "demo": task.split("demo")}
    if not splits["test"]:
        raise ValueError(f"task {task.spec.name!r} has no test examples to export")
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"--out: {str(out_dir)!r} is a file; expected a folder")
    data_files = {split: out_dir / f"{name}_{split}.jsonl" for split, examples in splits.items() if examples}
    yaml_path = out_dir / f"{name}.yaml"
    # Every split's file is a companion, so that an earlier export's demo file does not outlive an export without one.
    files = OutputFiles("--out", yaml_path, tuple(out_dir / f"{name}_{split}.jsonl" for split in splits), overwrite)
    files.check(inputs)
    block_spec = replace(task.spec, instruction="")  # the instruction is lm-eval's description, written once
    with files.writing() as temporary:
        for split, path in data_files.items():
            write_text_atomically(temporary(path), "".join(json.dumps(_row(task, block_spec, example)) + "\n" for example in splits[split]))
        write_text_atomically(temporary(yaml_path), _task_yaml(task, name, data_files))
    return yaml_path


def _row(task: Task, block_spec, example: Example) -> dict:
    choices = list(task.spec.labels) if task.spec.kind == CLASSIFICATION else list(OPTION_LETTERS[: len(example.choices)])
    return {"id": example.id, "query": render_prompt(block_spec, example), "choices": choices, "answer": example.answer}


def _task_yaml(task: Task, name: str, data_files: dict[str, Path]) -> str:
    # Every scalar is written as a JSON string, which is valid YAML: no quoting rules to get wrong.
    lines = [
        f"# lm-eval task exported by zerotuning from the {task.spec.kind} task {task.spec.name!r} ({task.source.get('origin', '?')})",
        f"task: {json.dumps(name)}",
        'dataset_path: "json"',
        "dataset_kwargs:",
        "  data_files:",
        *(f"    {json.dumps(split)}: {json.dumps(str(path))}" for split, path in data_files.items()),
        'test_split: "test"',
        *(['fewshot_split: "demo"'] if "demo" in data_files else []),
        'output_type: "multiple_choice"',
        f"description: {json.dumps(task.spec.instruction + chr(10) if task.spec.instruction else '')}",
        'doc_to_text: "query"',
        'doc_to_choice: "choices"',
        'doc_to_target: "answer"',
        'target_delimiter: " "',
        f"fewshot_delimiter: {json.dumps(chr(10) * 2)}",
        "metric_list:",
        '  - metric: "acc"',
        '    aggregation: "mean"',
        "    higher_is_better: true",
        "metadata:",
        "  version: 1.0",
    ]
    return "\n".join(lines) + "\n"
