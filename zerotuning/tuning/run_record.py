"""The record of a run: what ``tune`` stores in each profile, how ``evaluate`` rebuilds the run, which files a run writes.

Every profile ``tune`` saves carries ``metadata["zerotuning"]``: the level, gamma and heads it
stands for, its calibration scores, and the model, task request, shots, seed and settings it was
tuned with. ``evaluate`` reads this back (``RecordedRun``) to score the same model on the same
task, splits and prompts unless an option overrides them. Results, predictions, profiles and
plots are written atomically, as UTF-8.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..atomic_files import write_text_atomically
from ..models import load_record
from ..output_paths import OutputFiles, RunFolder
from ..plots import plot_fitted_gammas, plot_head_effects, plot_metric_vs_gamma
from ..profile import Profile
from ..scoring.option_format import OPTION_TASK_DEFAULT
from ..tasks.loader import TaskRequest
from .experiment import RunSettings
from .head_probing import HeadProbes
from .tuner import LevelResult, TuningResult

RECORD_KEY = "zerotuning"
# What each command writes, by name: an earlier run's folder holding only these may be replaced (--overwrite).
TUNING_RUN_FILES = frozenset({"profile.json", "README.md", "results.json", "predictions.json", "metric_vs_gamma.png", "head_effects.png", "fitted_gammas.png"})
_LEVEL_PROFILE = re.compile(r"profile_(?:level\d+|budgeted)\.json")
HEAD_PROBING_RUN_FILES = frozenset({"head_effects.json", "head_effects.png"})


def tuning_run_folder(out: Path, overwrite: bool) -> RunFolder:
    """``tune --out``: the profiles, model card, results, predictions and plots of one tuning run."""
    return RunFolder("--out", out, lambda name: name in TUNING_RUN_FILES or bool(_LEVEL_PROFILE.fullmatch(name)), overwrite)


def head_probing_run_folder(out: Path, overwrite: bool) -> RunFolder:
    """``probe-heads --out``: head_effects.json and head_effects.png."""
    return RunFolder("--out", out, HEAD_PROBING_RUN_FILES.__contains__, overwrite)


def evaluation_files(path: Path, overwrite: bool) -> OutputFiles:
    """``evaluate --out FILE``: FILE, ``<stem>_predictions.json`` and (with --also-generation) ``<stem>_generation_predictions.json``."""
    return OutputFiles("--out", path, (_predictions_path(path), generation_predictions_path(path)), overwrite)


def generation_predictions_path(path: Path) -> Path:
    """Where ``evaluate --out FILE --also-generation TASK`` puts the generation task's per-example answers."""
    return path.with_name(path.stem + "_generation_predictions.json")


def _predictions_path(path: Path) -> Path:
    return path.with_name(path.stem + "_predictions.json")


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
        value = self.fields[option]
        expected_model = option == "model" and isinstance(value, str) and value
        expected_count = option != "model" and isinstance(value, int) and not isinstance(value, bool) and value >= 0
        if not (expected_model or expected_count):
            expected = "a model name or path" if option == "model" else "an integer >= 0"
            raise ValueError(f"profile {str(self.path)!r}: the recorded {option} is {value!r}, expected {expected}; give --{option}")
        return value

    def task_request(self) -> TaskRequest:
        """The task request the profile was tuned on."""
        if "task_request" not in self.fields:
            raise ValueError(f"--task is not given and the profile {str(self.path)!r} records no task")
        try:
            return TaskRequest.from_json(self.fields["task_request"])
        except (KeyError, TypeError, AttributeError, ValueError) as error:
            raise ValueError(f"profile {str(self.path)!r}: the recorded task request is not readable ({error!r}); give --task") from None

    def recorded_setting(self, name: str, default: Any) -> Any:
        """The value of ``name`` in the recorded run settings (``default`` when the profile predates it)."""
        return self.fields.get("settings", {}).get(name, default)

    def describe(self) -> str:
        level = self.fields.get("level", "?")
        return f"{'' if level == 'budgeted' else 'level '}{level}, gamma {self.fields.get('gamma', '?')}"


def overrides(recorded: RecordedRun, used: dict[str, Any]) -> dict:
    """The run settings an evaluation used that differ from the profile's (a profile that predates one: its default)."""
    defaults = {"chat_template": OPTION_TASK_DEFAULT}
    return {
        name: {"profile": recorded.recorded_setting(name, defaults.get(name)), "used": value}
        for name, value in used.items()
        if recorded.recorded_setting(name, defaults.get(name)) != value
    }


def write_tuning_run(
    folder: RunFolder, results: dict, tuning: TuningResult, request: TaskRequest, settings: RunSettings, model_spec: str
) -> None:
    """Into ``folder`` (``tuning_run_folder``), all at once: profile_level<N>.json per level (or profile_budgeted.json) and
    profile.json (the selected one, with its held-out results) plus its README.md model card, so that the folder is a
    profile folder; each profile with its run record; metric_vs_gamma.png, head_effects.png (with Level 2),
    fitted_gammas.png (with Level 3), results.json and predictions.json."""
    for level_result in tuning.levels.values():
        record_tuning(level_result.profile, level_result, request, settings, model_spec)
        if "answer_scoring" in results["task"]:  # classification and multiple choice; generation tasks have no answer tokens
            level_result.profile.metadata[RECORD_KEY]["answer_scoring"] = results["task"]["answer_scoring"]
        # The resolved rendering (--chat-template auto resolves per tokenizer): "chat" or "plain".
        level_result.profile.metadata[RECORD_KEY]["prompt_format"] = results["task"]["prompt_format"]["name"]
    record_held_out(tuning.selected.profile, results["test"])
    objective = settings.make_objective()
    results["files"] = {"profile": str(folder.path / "profile.json"), "metric_vs_gamma": str(folder.path / "metric_vs_gamma.png")}
    if 2 in tuning.levels:
        results["files"]["head_effects"] = str(folder.path / "head_effects.png")
    if 3 in tuning.levels:
        results["files"]["fitted_gammas"] = str(folder.path / "fitted_gammas.png")
    with folder.writing() as staging:
        for level_result in tuning.levels.values():
            level_result.profile.save(staging / f"profile_{level_result.name}.json")
        tuning.selected.profile.save_pretrained(staging)
        plot_metric_vs_gamma(tuning, objective.metric, staging / "metric_vs_gamma.png")
        if 2 in tuning.levels:
            plot_head_effects(tuning.levels[2].head_probes, objective.to_json()["key"][0], staging / "head_effects.png")
        if 3 in tuning.levels:
            plot_fitted_gammas(tuning.levels[3], staging / "fitted_gammas.png")
        _write_results(results, staging / "results.json", staging / "predictions.json")


def write_evaluation(results: dict, files: OutputFiles, generation_predictions: list[dict] | None = None) -> None:
    """All at once (``evaluation_files``): the evaluation as JSON at ``files.main``, its per-example predictions beside it
    (``<stem>_predictions.json``) and, given, the --also-generation task's (``<stem>_generation_predictions.json``)."""
    with files.writing() as temporary:
        if generation_predictions is not None:
            write_text_atomically(temporary(generation_predictions_path(files.main)), json.dumps(generation_predictions, indent=1) + "\n")
        _write_results(results, temporary(files.main), temporary(_predictions_path(files.main)))


def write_head_probing_run(folder: RunFolder, results: dict, head_probes: HeadProbes, settings: RunSettings) -> None:
    """Into ``folder`` (``head_probing_run_folder``), all at once: head_effects.png and head_effects.json."""
    results["files"] = {"head_effects": str(folder.path / "head_effects.png")}
    with folder.writing() as staging:
        plot_head_effects(head_probes, settings.make_objective().to_json()["key"][0], staging / "head_effects.png")
        _write_results(results, staging / "head_effects.json", None)


def _write_results(results: dict, path: Path, predictions_path: Path | None) -> None:
    """``results`` without its ``predictions`` at ``path``; the predictions at ``predictions_path``."""
    predictions = results.pop("predictions", None)
    if predictions is not None and predictions_path is not None:
        write_text_atomically(predictions_path, json.dumps(predictions, indent=1) + "\n")
    write_text_atomically(path, json.dumps(results, indent=2) + "\n")
