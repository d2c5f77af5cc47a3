"""The chat-template section of docs/RESULTS.md (used by make_results_md.py).

Reads ``<folder>/chat_template/<run>/results.json``: ``zerotuning tune`` runs of one model and task
made with ``--chat-template off`` and ``on`` at the same commit, so that the only difference is how
prompts are rendered. They are kept out of the other tables (their plain runs repeat the default's).
Every number comes from those files.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from results_md_files import recorded

FOLDER = "chat_template"
LINKED = ("results.json", "profile.json", "README.md")
SIGNIFICANCE = 0.05


def is_chat_template_run(name: str) -> bool:
    """Whether a run (its folder relative to the results folder) belongs to this section."""
    return name.split("/", 1)[0] == FOLDER


def load_chat_template_runs(folder: Path) -> list[dict]:
    runs = []
    for path in recorded(folder / FOLDER, "*/results.json"):
        results = json.loads(path.read_text())
        runs.append(dict(name=path.parent.name, path=path, results=results))
    # Task by task, the plain prompt first.
    return sorted(runs, key=lambda run: (run["results"]["task"]["name"], run["results"]["task"]["prompt_format"]["name"] != "plain"))


def _pct(interval: dict) -> str:
    return f"{100 * interval['estimate']:.1f} [{100 * interval['low']:.1f}, {100 * interval['high']:.1f}]"


def _signed(interval: dict) -> str:
    return f"{100 * interval['estimate']:+.1f} [{100 * interval['low']:+.1f}, {100 * interval['high']:+.1f}]"


def _template_text(results: dict) -> str:
    prompt_format = results["task"]["prompt_format"]
    return "chat template" if prompt_format["name"] == "chat" else "plain"


def _selected_text(results: dict) -> str:
    level = results["tuning"]["levels"][str(results["tuning"]["selected_level"])]
    if level["gamma"] == 1:
        return "gamma 1 (untouched)"
    identity = results["model"]["identity"]
    heads = "every head" if level["heads"] == "all" else f"{level['head_count']}/{identity['num_layers'] * identity['num_heads']} heads"
    return f"gamma {level['gamma']:g} on {heads}"


def table(runs: list[dict]) -> list[str]:
    lines = [
        "| model | task | prompts | prompt tokens (test mean) | untouched | greedy invalid (untouched) | label bias alone | selected "
        "| selected method | vs its reference: diff, McNemar p | vs untouched: diff, McNemar p |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        r = run["results"]
        methods, comparisons, selection = r["test"]["methods"], r["test"]["comparisons"], r["selection"]
        method, reference = selection["method"], selection["reference"]
        versus_reference = comparisons[f"{method} vs {reference}"]
        versus_untouched = comparisons[f"{method} vs baseline"]
        lines.append(
            f"| {r['model']['load']['spec']} | {r['task']['name']} | {_template_text(r)} | {r['task']['prompt_tokens']['test']['mean']:.0f} "
            f"| {_pct(methods['baseline']['accuracy'])} | {100 * methods['baseline']['invalid_rate']:.1f} "
            f"| {_pct(methods['baseline+label_bias']['accuracy'])} | {_selected_text(r)} "
            f"| {method}: {_pct(methods[method]['accuracy'])} "
            f"| {_signed(versus_reference['accuracy_difference'])}, {versus_reference['mcnemar']['p_value']:.3g} "
            f"| {_signed(versus_untouched['accuracy_difference'])}, {versus_untouched['mcnemar']['p_value']:.3g} |"
        )
    return lines


def verdict_lines(runs: list[dict]) -> list[str]:
    """Per task: the untouched model and label bias alone with and without the template, and what the tuning adds."""
    lines = []
    by_task: dict[str, dict[str, dict]] = {}
    for run in runs:
        by_task.setdefault(run["results"]["task"]["name"], {})[run["results"]["task"]["prompt_format"]["name"]] = run["results"]
    for task, pair in by_task.items():
        parts = [f"{'plain' if name == 'plain' else 'chat template'}: {_run_verdict(pair[name])}" for name in ("plain", "chat") if name in pair]
        missing = [name for name in ("plain", "chat") if name not in pair]
        differing = _other_differences(pair) if not missing else []
        notes = (f" (no {missing[0]} run here)" if missing else "") + (f" (the two runs also differ in {', '.join(differing)})" if differing else "")
        lines.append(f"- {task}: " + "; ".join(parts) + notes + ".")
    return lines


def _other_differences(pair: dict[str, dict]) -> list[str]:
    """The settings besides --chat-template in which a task's plain and chat runs differ (none, when made as documented)."""
    plain, chat = ({k: v for k, v in pair[name]["settings"].items() if k != "chat_template"} for name in ("plain", "chat"))
    differing = sorted(key for key in plain.keys() | chat.keys() if plain.get(key) != chat.get(key))
    if pair["plain"]["task"]["source"] != pair["chat"]["task"]["source"]:
        differing.append("task source")
    return differing


def _run_verdict(results: dict) -> str:
    methods, selection = results["test"]["methods"], results["selection"]
    text = (
        f"untouched {100 * methods['baseline']['accuracy']['estimate']:.1f}, "
        f"label bias alone {100 * methods['baseline+label_bias']['accuracy']['estimate']:.1f}, "
    )
    if results["tuning"]["levels"][str(results["tuning"]["selected_level"])]["gamma"] == 1:
        return text + "the search keeps the untouched model (the method is label bias alone)"
    row = results["test"]["comparisons"][f"{selection['method']} vs {selection['reference']}"]
    p, difference = row["mcnemar"]["p_value"], row["accuracy_difference"]
    direction = "better than" if difference["estimate"] > 0 else "worse than"
    judged = f"significantly {direction}" if p < SIGNIFICANCE else "not significantly different from"
    return text + f"{selection['method']} ({_selected_text(results)}) {judged} {selection['reference']} ({_signed(difference)}, McNemar p {p:.3g})"


def chat_template_section(folder: Path, page: Path) -> list[str]:
    runs = load_chat_template_runs(folder)
    if not runs:
        return []
    models = sorted({run["results"]["model"]["load"]["spec"] for run in runs})
    tasks = sorted({run["results"]["task"]["name"] for run in runs})
    templates = sorted({run["results"]["settings"]["chat_template"] for run in runs})
    links = [
        f"- `{FOLDER}/{run['name']}`: "
        + ", ".join(f"[{name}]({Path(os.path.relpath(run['path'].parent / name, page.parent)).as_posix()})" for name in LINKED if (run["path"].parent / name).is_file())
        for run in runs
    ]
    return [
        "## Chat templates: the same runs with prompts through the tokenizer's chat template",
        "",
        f"`zerotuning tune --model {'|'.join(models)} --task TASK --objective supervised --chat-template {'|'.join(templates)}` with the "
        f"default (budgeted) search, for {', '.join(tasks)}; the runs of a task differ only in `--chat-template` unless said "
        "below (`docs/tuning.md` section 1 says what `on` renders). Accuracies on the test split, % with 95% bootstrap intervals; "
        "the selected method is what the objective judged (tuned + label bias), its reference label bias alone.",
        "",
        *verdict_lines(runs),
        "",
        *table(runs),
        "",
        *links,
        "",
    ]
