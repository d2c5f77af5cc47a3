"""Checks of the console script's input that run before the model loads (and the few right after).

Loading a model takes seconds to minutes; an option that cannot work must be refused before that,
with its name, what was given and what was expected. Three stages:
- option values (argparse ``type=`` functions below): ranges, finiteness, device availability;
- the loaded task against the run's settings (``check_task_fits``): split sizes, shots, folds;
- the loaded model against the settings (``check_model_fits``): layer indices, a profile's model.
The engine (``zerotuning.tuning``) checks the same things again for callers that do not use the CLI.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

import torch

from .tasks.task import Task


def integer_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer >= ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


def positive_number(text: str) -> float:
    """An argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


def positive_numbers(text: str) -> tuple[float, ...]:
    """An argparse type: comma-separated finite numbers > 0."""
    try:
        values = tuple(float(item) for item in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated finite numbers > 0, got {text!r}") from None
    if not all(math.isfinite(value) and value > 0 for value in values):
        raise argparse.ArgumentTypeError(f"expected comma-separated finite numbers > 0, got {text!r}")
    return values


def non_negative_number(text: str) -> float:
    """An argparse type: a number >= 0, or inf."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0 or inf, got {text!r}") from None
    if not value >= 0:  # NaN too
        raise argparse.ArgumentTypeError(f"expected a number >= 0 or inf, got {text!r}")
    return value


def probe_gamma(text: str) -> float:
    """An argparse type: a probe's gamma, finite, > 0 and not 1 (gamma 1 changes nothing)."""
    value = positive_number(text)
    if value == 1:
        raise argparse.ArgumentTypeError(f"expected a finite number > 0 other than 1 (gamma 1 changes nothing), got {text!r}")
    return value


def device(text: str) -> str:
    """An argparse type: a torch device this torch build can run on now."""
    try:
        parsed = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected a torch device such as cpu or cuda, got {text!r}") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            built = "this torch build has no CUDA" if torch.version.cuda is None else "no CUDA device is visible"
            raise argparse.ArgumentTypeError(f"{text!r}: {built}; expected cpu")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise argparse.ArgumentTypeError(f"{text!r}: only {torch.cuda.device_count()} CUDA device(s) are visible")
    elif parsed.type == "mps" and not torch.backends.mps.is_available():
        raise argparse.ArgumentTypeError(f"{text!r}: MPS is not available; expected cpu")
    elif parsed.type not in ("cpu", "cuda", "mps"):
        raise argparse.ArgumentTypeError(f"{text!r}: expected cpu or cuda")
    return text


def check_task_fits(task: Task, *, shots: int, folds: int | None, needs: tuple[str, ...] = ("calibration", "test")) -> None:
    """The loaded task has the examples the run needs (before the model loads).

    ``folds``: the out-of-fold calibration's fold count when the calibration split is cut into
    folds (the label-bias objective and evaluation), else None.
    """
    sizes = task.split_sizes()
    for split in needs:
        if sizes.get(split, 0) == 0:
            raise ValueError(f"--task {task.spec.name!r}: the {split} split is empty (split sizes {sizes}); expected examples in {', '.join(needs)}")
    if shots > sizes.get("demo", 0):
        raise ValueError(f"--shots: asked for {shots} demonstrations but the demo split has {sizes.get('demo', 0)} examples (task {task.spec.name!r})")
    if folds is not None and sizes.get("calibration", 0) < folds:
        raise ValueError(
            f"--folds: {folds} folds need at least {folds} calibration examples, but the calibration split of "
            f"{task.spec.name!r} has {sizes.get('calibration', 0)}; lower --folds or give more data"
        )


def check_gradient_paths(tuning, *, answer_forms: str | None, generation: bool) -> None:
    """Level 3 and gradient probes read the logits at the answer position: refuse what has none (before the model loads).

    ``--answer-forms auto`` resolves to whole-answer scoring only once the tokenizer is loaded; that case is
    refused right after, before any scoring (``Session.check_gradient_paths``)."""
    if tuning.search != "levels":
        return
    paths = [name for name, used in (("level 3 (--levels)", 3 in tuning.levels), ("--probes gradient", 2 in tuning.levels and tuning.probes == "gradient")) if used]
    for path in paths:
        if generation:
            raise ValueError(f"{path}: reads the logits at the answer position; a generation task has none (its levels are 0-2 with --probes forward)")
        if answer_forms == "full_sequence":
            raise ValueError(f"{path}: needs answer-position scoring, but --answer-forms is full_sequence (whole-answer scoring); use surface or first_token")


def vllm_options(args: argparse.Namespace, tuning, *, generation: bool):
    """``--engine`` and its options: None for transformers, the engine's options for vLLM, or a refusal (before the model loads).
    ``tuning``: the tune command's TuningConfig (None for evaluate, which runs no levels)."""
    if args.engine != "vllm":
        for name in ("tensor_parallel_size", "vllm_model"):
            if getattr(args, name) is not None:
                raise ValueError(f"--{name.replace('_', '-')}: only used with --engine vllm, but --engine is {args.engine!r}")
        return None
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        raise ImportError("--engine vllm: vllm is not importable in this Python; run from the zerotuning[vllm] environment (scripts/setup_vllm_env.sh, .venv-vllm)")
    if generation:
        raise ValueError("--engine vllm: scores answer-token tasks only (the answer position); the task is a generation task, tune it with --engine transformers")
    if tuning is not None and tuning.search == "levels" and (3 in tuning.levels or (2 in tuning.levels and tuning.probes == "gradient")):
        raise ValueError("--engine vllm: level 3 and --probes gradient need backward passes, which vLLM does not run; use --levels 0,1,2 with --probes forward, or --engine transformers")
    if args.answer_forms == "full_sequence":
        raise ValueError("--engine vllm: scores the answer position only; --answer-forms full_sequence is not supported (use surface or first_token)")
    if args.batch_size is not None:
        raise ValueError(f"--batch-size: vLLM's scheduler batches the requests, so --batch-size {args.batch_size} would be ignored; drop it with --engine vllm")
    if args.device != "cpu":
        raise ValueError(f"--device: with --engine vllm the scoring device is vLLM's platform, so --device {args.device} would be ignored; drop it")
    if args.vllm_model is not None and not (args.vllm_model / "config.json").is_file():
        raise FileNotFoundError(f"--vllm-model: {str(args.vllm_model)!r} has no config.json; expected a folder written by `zerotuning export`")
    from .vllm.scoring_engine import VllmOptions

    return VllmOptions(tensor_parallel_size=args.tensor_parallel_size or 1, model_folder=args.vllm_model)


def check_model_fits(model, *, layers: tuple[int, ...] | None = None, profile=None, profile_source: str = "") -> None:
    """The loaded model against the options that name its parts (right after it loads, before any scoring)."""
    from .profile import ModelIdentity

    identity = ModelIdentity.of(model)
    if layers is not None:
        outside = sorted({layer for layer in layers if not 0 <= layer < identity.num_layers})
        if outside:
            raise ValueError(f"--layers: {outside} are not layers of the model, which has layers 0-{identity.num_layers - 1}")
    if profile is not None:
        try:
            profile.check_matches(identity)
        except ValueError as error:
            raise ValueError(f"--profile {profile_source}: {error}") from None
