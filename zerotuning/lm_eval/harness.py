"""Run lm-eval tasks on a loaded model with a ZeroTuning profile, as ``lm-eval run`` would.

The options are lm-eval's own (``EvaluatorConfig``, with its checks) and its task manager resolves
the tasks, both before any model work; ``simple_evaluate`` runs them on a ``ZeroTuningLM``; and
lm-eval's ``EvaluationTracker`` writes its usual files (``results_<date>.json`` and, with
``log_samples``, ``samples_<task>_<date>.jsonl``). The results carry a ``zerotuning`` record: the
profile, the BOS check and the sink row counts.
"""

from __future__ import annotations

import argparse
from importlib.metadata import version
from pathlib import Path
from typing import Any

import torch
from lm_eval import simple_evaluate
from lm_eval.config.evaluate_config import EvaluatorConfig
from lm_eval.loggers import EvaluationTracker
from lm_eval.tasks import TaskManager

from ..models import LOAD_RECORD_ATTRIBUTE
from ..profile import Profile
from .model import HFLM_OPTIONS, ZeroTuningLM

# EvaluatorConfig fields this runs with; the rest choose or load the model (model, model_args,
# device, trust_remote_code, config) or log to services (wandb, trackio, the hub).
RUN_OPTIONS = (
    "num_fewshot",
    "batch_size",
    "max_batch_size",
    "limit",
    "samples",
    "use_cache",
    "cache_requests",
    "check_integrity",
    "write_out",
    "log_samples",
    "output_path",
    "predict_only",
    "system_instruction",
    "apply_chat_template",
    "fewshot_as_multiturn",
    "show_config",
    "include_path",
    "gen_kwargs",
    "seed",
    "confirm_run_unsafe_code",
    "metadata",
)


def evaluation_config(tasks: list[str], **options: Any) -> tuple[EvaluatorConfig, TaskManager]:
    """lm-eval's run configuration from ``options`` (names as in ``lm-eval run``), validated, tasks resolved.

    Raises ValueError for an option this does not take, for lm-eval's own conflicts (e.g.
    ``log_samples`` without ``output_path``, ``limit`` with ``samples``) and for unknown tasks.
    """
    unknown = sorted(set(options) - set(RUN_OPTIONS))
    if unknown:
        raise ValueError(f"lm-eval options {unknown} are not taken here; expected any of {list(RUN_OPTIONS)}")
    if not tasks:
        raise ValueError("tasks: expected at least one lm-eval task name or task YAML file")
    config = EvaluatorConfig.from_cli(argparse.Namespace(tasks=list(tasks), **options))
    task_manager = config.process_tasks(config.metadata)
    return config, task_manager


def evaluate(model: torch.nn.Module, tokenizer: Any, profile: Profile, tasks: list[str], **options: Any) -> dict:
    """Evaluate lm-eval ``tasks`` on ``model`` with ``profile`` applied; returns lm-eval's results dict.

    ``options`` are ``lm-eval run``'s (``num_fewshot``, ``limit``, ``batch_size``, ``log_samples``,
    ``output_path``, ``include_path``, ``gen_kwargs``, ...; see ``RUN_OPTIONS``) plus HFLM's
    ``max_length`` and the others in ``HFLM_OPTIONS``. With ``log_samples`` the per-sample records
    are under ``results["samples"]``. ``model_name`` (default: the load_model spec, else the
    model's ``name_or_path``) names the output folder, as ``pretrained=`` does for lm-eval.
    """
    model_name = options.pop("model_name", None) or _model_name(model)
    model_options = {name: options.pop(name) for name in HFLM_OPTIONS if name in options}
    # As simple_evaluate: samples without an output_path stay in memory (lm-eval run refuses that).
    in_memory_samples = bool(options.get("log_samples")) and not options.get("output_path")
    if in_memory_samples:
        options.pop("log_samples")
    config, task_manager = evaluation_config(tasks, **options)
    config.log_samples = config.log_samples or in_memory_samples
    lm = ZeroTuningLM(model, tokenizer, profile, batch_size=config.batch_size, max_batch_size=config.max_batch_size or 64, **model_options)
    return run(lm, config, task_manager, model_name=model_name)


def run(lm: ZeroTuningLM, config: EvaluatorConfig, task_manager: TaskManager, *, model_name: str, profile_source: str | None = None) -> dict:
    """``simple_evaluate`` on ``lm`` with ``config``, then lm-eval's files written as ``lm-eval run`` writes them."""
    tracker = EvaluationTracker(output_path=config.output_path)
    seeds = config.seed or [None] * 4
    results = simple_evaluate(
        model=lm,
        model_args={"pretrained": model_name, "profile": profile_source or "in memory"},
        tasks=config.tasks,
        num_fewshot=config.num_fewshot,
        batch_size=config.batch_size,
        max_batch_size=config.max_batch_size,
        use_cache=config.use_cache,
        cache_requests=config.cache_requests.get("cache_requests", False),
        rewrite_requests_cache=config.cache_requests.get("rewrite_requests_cache", False),
        delete_requests_cache=config.cache_requests.get("delete_requests_cache", False),
        limit=config.limit,
        samples=config.samples,
        check_integrity=config.check_integrity,
        write_out=config.write_out,
        log_samples=config.log_samples,
        evaluation_tracker=tracker,
        system_instruction=config.system_instruction,
        apply_chat_template=config.apply_chat_template,
        fewshot_as_multiturn=config.fewshot_as_multiturn,
        gen_kwargs=config.gen_kwargs or None,
        task_manager=task_manager,
        predict_only=config.predict_only,
        random_seed=seeds[0],
        numpy_random_seed=seeds[1],
        torch_random_seed=seeds[2],
        fewshot_random_seed=seeds[3],
        confirm_run_unsafe_code=config.confirm_run_unsafe_code,
        metadata=config.metadata,
    )
    results["zerotuning"] = {
        "version": version("zerotuning"),
        "profile_source": profile_source,
        "profile": lm.profile.to_json(),
        "model_load": getattr(lm.model.config, LOAD_RECORD_ATTRIBUTE, None),
        "bos": lm.bos_check.to_json(),
        "sink_rows": lm.sink_rows(),
    }
    samples = results.pop("samples", None) if config.log_samples else None
    tracker.save_results_aggregated(results=results, samples=samples)
    if samples is not None:
        for task_name in results["configs"]:
            tracker.save_results_samples(task_name=task_name, samples=samples[task_name])
        results["samples"] = samples
    if config.output_path:
        results["files"] = {"results": str(_results_file(tracker, Path(config.output_path)))}
    return results


def _results_file(tracker: EvaluationTracker, output_path: Path) -> Path:
    """Where ``save_results_aggregated`` wrote: lm-eval's own naming rule."""
    if output_path.suffix == ".json":
        return output_path.with_name(f"{output_path.stem}_{tracker.date_id}.json")
    return output_path / tracker.general_config_tracker.model_name_sanitized / f"results_{tracker.date_id}.json"


def _model_name(model: torch.nn.Module) -> str:
    record = getattr(model.config, LOAD_RECORD_ATTRIBUTE, None)
    if record is not None:
        return record["spec"]
    return getattr(model, "name_or_path", None) or type(model).__name__
