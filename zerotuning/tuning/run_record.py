"""The record of a run: what ``tune`` stores in each profile, how ``evaluate`` rebuilds the run, which files a run writes.

Every profile ``tune`` saves carries ``metadata["zerotuning"]``: the level, gamma and heads it
stands for, its calibration scores, and the model, task request, shots, seed and settings it was
tuned with. ``evaluate`` reads this back (``RecordedRun``) to score the same model on the same
task, splits and prompts unless an option overrides them. Results, predictions, profiles and
plots are written atomically, as UTF-8.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..atomic_files import write_text_atomically
from ..models import load_record
from ..plots import plot_head_effects, plot_metric_vs_gamma
from ..profile import Profile
from ..tasks.loader import TaskRequest
from .experiment import RunSettings
from .head_probing import HeadProbes
from .tuner import LevelResult, TuningResult

RECORD_KEY = "zerotuning"


def describe_model(model) -> dict:
    """The model as the results record it: how it was loaded, its class, identity and size."""
    return {
        "load": load_record(model),
        "class": type(model).__name__,
        "identity": Profile.neutral(model).identity.to_json(),
        "parameters": sum(parameter.numel() for parameter in model.parameters()),
    }


def model_spec_for_record(spec: str) -> str:
    """A local model folder or file as an absolute path (``evaluate`` may run from another folder)."""
    return str(Path(spec).resolve()) if Path(spec).exists() else spec


def record_tuning(profile: Profile, level_result: LevelResult, request: TaskRequest, settings: RunSettings, model_spec: str) -> None:
    """Store in ``profile`` how it was tuned, so that ``evaluate`` can rebuild the same task and prompts."""
    profile.metadata[RECORD_KEY] = {
        "level": level_result.level,
        "gamma": level_result.gamma,
        "heads": level_result.to_json()["heads"],
        "calibration": level_result.calibration_metrics(),
        "model": model_spec,
        "task_request": request.to_json(),
        "shots": settings.shots,
        "seed": settings.seed,
        "settings": settings.to_json(),
    }


def record_held_out(profile: Profile, comparison: dict) -> None:
    """Store in ``profile``'s run record the held-out accuracies with intervals and the paired comparisons
    (``compare_on_test``'s output, or ``compare_generation``'s for a generation task), for its model card."""
    if "tuned_vs_baseline" in comparison:  # a generation task: every measure, baseline and tuned
        profile.metadata[RECORD_KEY]["held_out"] = {
            "examples": comparison["examples"],
            "measures": {
                measure: {
                    "baseline": comparison["methods"]["baseline"][measure],
                    "tuned": comparison["methods"]["tuned"][measure],
                    "difference": row["difference"],
                    "mcnemar_p": row["mcnemar"]["p_value"] if "mcnemar" in row else None,
                }
                for measure, row in comparison["tuned_vs_baseline"].items()
            },
        }
        return
    profile.metadata[RECORD_KEY]["held_out"] = {
        "examples": comparison["examples"],
        "accuracy": {name: method["accuracy"] for name, method in comparison["methods"].items() if "accuracy" in method},
        "comparisons": {
            name: {"accuracy_difference": row["accuracy_difference"], "mcnemar_p": row["mcnemar"]["p_value"]}
            for name, row in comparison["comparisons"].items()
            if "accuracy_difference" in row and "mcnemar" in row
        },
    }


@dataclass(frozen=True)
class RecordedRun:
    """What a saved profile records about the run that tuned it (empty for a profile made by hand)."""

    path: Path
    fields: dict

    @classmethod
    def of(cls, profile: Profile, path: str | Path) -> "RecordedRun":
        return cls(Path(path), profile.metadata.get(RECORD_KEY, {}))

    def setting(self, option: str, given: Any) -> Any:
        """``given`` when not None, else the recorded value of ``option`` (model, shots or seed)."""
        if given is not None:
            return given
        if option not in self.fields:
            raise ValueError(f"--{option} is not given and the profile {str(self.path)!r} records none")
        return self.fields[option]

    def task_request(self) -> TaskRequest:
        """The task request the profile was tuned on."""
        if "task_request" not in self.fields:
            raise ValueError(f"--task is not given and the profile {str(self.path)!r} records no task")
        return TaskRequest.from_json(self.fields["task_request"])

    def describe(self) -> str:
        level = self.fields.get("level", "?")
        return f"{'' if level == 'budgeted' else 'level '}{level}, gamma {self.fields.get('gamma', '?')}"


def write_tuning_run(
    out: Path, results: dict, tuning: TuningResult, request: TaskRequest, settings: RunSettings, model_spec: str
) -> None:
    """Into ``out``: profile_level<N>.json per level (or profile_budgeted.json) and profile.json (the selected one, with its held-out
    results) plus its README.md model card, so that ``out`` is a profile folder; each profile with its run
    record; metric_vs_gamma.png, head_effects.png (with Level 2), results.json and predictions.json."""
    out.mkdir(parents=True, exist_ok=True)
    for level_result in tuning.levels.values():
        record_tuning(level_result.profile, level_result, request, settings, model_spec)
    record_held_out(tuning.selected.profile, results["test"])
    for level_result in tuning.levels.values():
        level_result.profile.save(out / f"profile_{level_result.name}.json")
    tuning.selected.profile.save_pretrained(out)
    objective = settings.make_objective()
    results["files"] = {
        "profile": str(out / "profile.json"),
        "metric_vs_gamma": str(plot_metric_vs_gamma(tuning, objective.metric, out / "metric_vs_gamma.png")),
    }
    if 2 in tuning.levels:
        head_effects = plot_head_effects(tuning.levels[2].head_probes, objective.to_json()["key"][0], out / "head_effects.png")
        results["files"]["head_effects"] = str(head_effects)
    _write_results(results, out / "results.json", out / "predictions.json")


def write_evaluation(results: dict, path: Path) -> None:
    """The evaluation as JSON at ``path``, its per-example predictions beside it (``<stem>_predictions.json``)."""
    _write_results(results, path, path.with_name(path.stem + "_predictions.json"))


def write_head_probing_run(out: Path, results: dict, head_probes: HeadProbes, settings: RunSettings) -> None:
    """Into ``out``: head_effects.png and head_effects.json."""
    out.mkdir(parents=True, exist_ok=True)
    head_effects = plot_head_effects(head_probes, settings.make_objective().to_json()["key"][0], out / "head_effects.png")
    results["files"] = {"head_effects": str(head_effects)}
    _write_results(results, out / "head_effects.json", None)


def _write_results(results: dict, path: Path, predictions_path: Path | None) -> None:
    """``results`` without its ``predictions`` at ``path``; the predictions at ``predictions_path``."""
    predictions = results.pop("predictions", None)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomically(path, json.dumps(results, indent=2) + "\n")
    if predictions is not None and predictions_path is not None:
        write_text_atomically(predictions_path, json.dumps(predictions, indent=1) + "\n")
