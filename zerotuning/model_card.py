"""The README.md model card of a profile folder: base model, gammas, how it was tuned, held-out results.

Everything on the card comes from the profile itself (identity, gammas and the run record that
``zerotuning tune`` stores in ``metadata["zerotuning"]``), so a card always describes the
gammas beside it. A profile made by hand gets a card that says it records no tuning run.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .profile import Profile

RECORD_KEY = "zerotuning"  # the run record's key, as in tuning/run_record.py
MAX_GAMMA_ROWS = 12  # more distinct gammas than this (fitted per head): summarised per layer
_HUB_MODEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


def render_model_card(profile: "Profile") -> str:
    identity = profile.identity
    record = profile.metadata.get(RECORD_KEY) or {}
    base = identity.base_model or "an unnamed model"
    sections = [
        _front_matter(identity.base_model),
        f"# ZeroTuning profile for {base}\n",
        "Per-head gammas for [ZeroTuning](https://arxiv.org/abs/2505.11739): each listed attention head's "
        "attention to the initial (sink) token is rescaled by its gamma at inference, without training. "
        "Load and apply it with the `zerotuning` package:\n",
        "```python\nimport zerotuning\nfrom zerotuning import Profile\n\n"
        "profile = Profile.from_pretrained(\"PATH_OR_HUB_ID\")\n"
        "zerotuning.apply(model, profile)   # model: the base model below, loaded with transformers\n```\n",
        "## Base model\n",
        _table(
            ("field", "value"),
            [
                ("name or path", f"`{base}`"),
                ("model type", f"`{identity.model_type}`"),
                ("shape", f"{identity.num_layers} layers x {identity.num_heads} query heads ({identity.num_kv_heads} kv heads)"),
                ("config fingerprint", f"`{identity.config_fingerprint or 'unknown'}`"),
            ],
        ),
        "Applying the profile to a model of another shape is refused; to one of this shape with another "
        "configuration, warned about (refused with `strict=True`).\n",
        "## Gammas\n",
        _gamma_summary(profile.gammas),
        "## How it was tuned\n",
        _tuning_section(record),
        "## Held-out results\n",
        _held_out_section(record.get("held_out")),
    ]
    return "\n".join(sections)


def _front_matter(base_model: str | None) -> str:
    lines = ["---", "library_name: zerotuning"]
    if base_model and _HUB_MODEL.match(base_model):  # the hub accepts only repository ids here
        lines.append(f"base_model: {base_model}")
    lines += ["tags:", "- zerotuning", "- attention-sink", "---", ""]
    return "\n".join(lines)


def _gamma_summary(gammas: list[list[float]]) -> str:
    values = Counter(g for row in gammas for g in row)
    total = sum(values.values())
    changed = total - values.get(1.0, 0)
    if not changed:
        return f"Every gamma is 1.0 ({total} heads): this profile leaves the model unchanged.\n"
    lines = [f"{changed} of {total} heads have a gamma other than 1.0:\n"]
    if len(values) > MAX_GAMMA_ROWS:  # fitted per-head gammas (level 3): one row per layer, not one per value
        rows = [
            (str(layer), f"{min(row):.3g}", f"{max(row):.3g}", str(sum(g != 1.0 for g in row)))
            for layer, row in enumerate(gammas)
            if any(g != 1.0 for g in row)
        ]
        lines.append(_table(("layer", "lowest gamma", "highest gamma", "heads changed"), rows))
        return "\n".join(lines)
    rows = [(f"{gamma:g}", str(count), _layers_text([i for i, row in enumerate(gammas) if gamma in row])) for gamma, count in sorted(values.items()) if gamma != 1.0]
    lines.append(_table(("gamma", "heads", "layers"), rows))
    return "\n".join(lines)


def _selected_text(record: dict, heads) -> str:
    level = record.get("level", "?")
    if level == 3 and heads is None:
        return f"level 3, a gamma per head fitted on every head of the tunable layers (geometric mean {record.get('gamma', 0):.3g})"
    return f"{'' if level == 'budgeted' else 'level '}{level}, gamma {record.get('gamma', '?')} on " + (
        "every head of the tunable layers" if heads is None else f"{len(heads)} heads"
    )


def _tuning_section(record: dict) -> str:
    if not record:
        return "This profile records no tuning run (made by hand or by code, not by `zerotuning tune`).\n"
    settings = record.get("settings") or {}
    request = record.get("task_request") or {}
    objective = (settings.get("objective") or {}).get("name", "?")
    heads = record.get("heads")
    if heads == "all":  # the run record's word for every head of the tunable layers
        heads = None
    rows = [
        ("model spec", f"`{record.get('model', '?')}`"),
        ("task", f"`{request.get('source', '?')}`"),
        ("chat template", _chat_template_text(record.get("prompt_format"), settings)),
        ("shots", str(record.get("shots", "?"))),
        ("seed", str(record.get("seed", "?"))),
        ("objective", str(objective)),
        ("answer scoring", _scoring_text(record.get("answer_scoring"), settings)),
        ("selected", _selected_text(record, heads)),
    ]
    calibration = record.get("calibration") or {}
    if "accuracy" in calibration:
        rows.append(("calibration accuracy", f"{calibration['accuracy']:.3f} on {calibration.get('examples', '?')} examples"))
    text = _table(("setting", "value"), rows)
    tuning = settings.get("tuning")
    if tuning:
        text += f"\nSearch settings: `{json.dumps(tuning, sort_keys=True)}`\n"
    return text


def _chat_template_text(prompt_format: str | None, settings: dict) -> str:
    """Whether prompts went through the tokenizer's chat template (older records: what was asked for, if anything)."""
    if prompt_format is not None:
        return "yes (the tokenizer's chat template)" if prompt_format == "chat" else "no (plain prompts)"
    requested = settings.get("chat_template", (settings.get("generation") or {}).get("chat_template"))
    return "no (plain prompts)" if requested in (None, "off", False) else f"asked for: {requested} (resolution not recorded)"


def _scoring_text(scoring: dict | None, settings: dict) -> str:
    """The resolved answer scoring (runs before it was recorded: the requested one, if any)."""
    if scoring:
        return f"{scoring['mode']} ({scoring['reason']})" if scoring.get("reason") else str(scoring["mode"])
    if "generation" in settings:
        return "none: a generation task (answers are generated, then matched)"
    return str(settings.get("answer_forms", "?"))


def _held_out_section(held_out: Any) -> str:
    if not held_out:
        return "No held-out evaluation is recorded with this profile.\n"
    lines = [f"On the task's held-out test split ({held_out.get('examples', '?')} examples), 95% bootstrap intervals:\n"]
    if "measures" in held_out:  # a generation task
        rows = [
            (name, _interval(row["baseline"]), _interval(row["tuned"]), _interval(row["difference"], signed=True),
             "-" if row["mcnemar_p"] is None else f"{row['mcnemar_p']:.4g}")
            for name, row in held_out["measures"].items()
        ]
        lines.append(_table(("generation measure", "untouched model", "with the profile", "difference", "McNemar p"), rows))
        return "\n".join(lines)
    methods = held_out.get("accuracy") or {}
    lines.append(_table(("method", "accuracy [95% CI]"), [(name, _interval(interval)) for name, interval in methods.items()]))
    comparisons = held_out.get("comparisons") or {}
    if comparisons:
        rows = [
            (name, _interval(row["accuracy_difference"], signed=True), f"{row['mcnemar_p']:.4g}")
            for name, row in comparisons.items()
        ]
        lines.append(_table(("comparison", "difference [95% CI]", "McNemar p"), rows))
    return "\n".join(lines)


def _interval(interval: dict, signed: bool = False) -> str:
    sign = "+" if signed else ""
    return f"{interval['estimate']:{sign}.3f} [{interval['low']:{sign}.3f}, {interval['high']:{sign}.3f}]"


def _layers_text(layers: list[int]) -> str:
    """[0, 1, 2, 5] -> "0-2, 5"."""
    runs: list[list[int]] = []
    for layer in layers:
        if runs and layer == runs[-1][1] + 1:
            runs[-1][1] = layer
        else:
            runs.append([layer, layer])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"
