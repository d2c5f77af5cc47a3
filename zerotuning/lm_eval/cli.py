"""The ``lm-eval``, ``lm-eval-task`` and ``compare`` commands of the ``zerotuning`` console script.

``zerotuning lm-eval`` takes lm-eval's own option names and meanings (``lm-eval run --help``) for
everything about the run, and zerotuning's for the model (``--model``, ``--dtype``, ``--device``)
and the profile. Options that would load the model another way or log to outside services are
refused by name. Every check (options, profile file, task names) runs before the model loads.
lm-eval is imported only when a command runs, so ``--help`` works without it.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
from pathlib import Path

from .. import cli_checks
from ..models import DEFAULT_MODEL, SUPPORTED_DTYPES

DTYPES = {str(dtype).removeprefix("torch."): dtype for dtype in SUPPORTED_DTYPES}
INSTALL_HINT = "pip install 'zerotuning[lm-eval]'"

# lm-eval run options that are not taken here, and what to do instead.
REFUSED_OPTIONS = {
    "--model_args": "the model is loaded by zerotuning: use --model (a name, a folder or a .gguf), --dtype, --device and --max_length",
    "--config": "YAML run configurations are not read; pass the options on the command line",
    "--trust_remote_code": "zerotuning loads models and datasets without remote code",
    "--wandb_args": "logging to outside services is not supported; the results are in --output_path",
    "--wandb_config_args": "logging to outside services is not supported; the results are in --output_path",
    "--trackio_args": "logging to outside services is not supported; the results are in --output_path",
    "--hf_hub_log_args": "pushing results to the hub is not supported; the results are in --output_path",
    "--verbosity": "deprecated in lm-eval; set the LMEVAL_LOG_LEVEL environment variable",
}


def add_commands(commands: argparse._SubParsersAction, formatter_class: type[argparse.HelpFormatter]) -> None:
    """Register ``lm-eval``, ``lm-eval-task`` and ``compare`` on the console script's subcommands."""
    _add_lm_eval(commands, formatter_class)
    _add_task_export(commands, formatter_class)
    _add_compare(commands, formatter_class)


def _add_lm_eval(commands: argparse._SubParsersAction, formatter_class) -> None:
    parser = commands.add_parser(
        "lm-eval",
        help="run lm-evaluation-harness tasks on a model with a ZeroTuning profile applied",
        description="lm-eval's own HF model class (HFLM) drives the model with the profile applied, with lm-eval's "
        "task definitions, metrics and output files; the sink is the BOS in every request (docs/lm_eval.md). "
        f"Needs the lm-eval extra: {INSTALL_HINT}. Options below the model group mean what they mean for `lm-eval run`.",
        formatter_class=formatter_class,
    )
    model = parser.add_argument_group("model and profile")
    model.add_argument("--model", default=DEFAULT_MODEL, help="what zerotuning.models.load_model loads: smollm2, gemma3, a local HuggingFace model folder or a .gguf file")
    model.add_argument("--dtype", choices=tuple(DTYPES), default="float32", help="weight and activation dtype")
    model.add_argument("--device", type=cli_checks.device, default="cpu", help="torch device to run on, e.g. cpu or cuda")
    model.add_argument("--max_length", type=_positive_int, default=None, help="HFLM's max_length: longest model input in tokens (default: from the model config)")
    profiles = model.add_mutually_exclusive_group(required=True)
    profiles.add_argument("--profile", type=Path, default=None, help="a profile JSON (e.g. written by `zerotuning tune`)")
    profiles.add_argument("--neutral-profile", action="store_true", help="every gamma 1: the patched model with the stock model's outputs (the control run)")

    run = parser.add_argument_group("lm-eval run options")
    run.add_argument("--tasks", "-t", nargs="+", required=True, type=_names, action=_Extend, help="task names or task YAML files, space- or comma-separated")
    run.add_argument("--include_path", default=None, help="additional folder of lm-eval task YAMLs")
    run.add_argument("--num_fewshot", "-f", type=_count, default=None, help="examples in the few-shot context")
    run.add_argument("--batch_size", "-b", type=_batch_size, default=1, help="an integer, 'auto' or 'auto:N'")
    run.add_argument("--max_batch_size", type=_positive_int, default=None, help="largest batch size tried by --batch_size auto")
    run.add_argument("--limit", "-L", type=_positive_float, default=None, help="examples per task: a count, or a fraction if below 1 (for testing)")
    run.add_argument("--samples", "-E", default=None, help="JSON (or a JSON file) mapping task names to document indices; not with --limit")
    run.add_argument("--output_path", "-o", default=None, help="folder (or .json file) for lm-eval's results and samples files")
    run.add_argument("--log_samples", "-s", action="store_true", help="also write every sample (needed by `zerotuning compare`)")
    run.add_argument("--predict_only", "-x", action="store_true", help="write model outputs only, compute no metrics")
    run.add_argument("--gen_kwargs", nargs="+", default=None, help="generation arguments as key=val,key2=val2 (update the tasks' own)")
    run.add_argument("--apply_chat_template", nargs="?", const=True, default=False, help="render prompts with the tokenizer's chat template (optionally its name)")
    run.add_argument("--fewshot_as_multiturn", nargs="?", const=True, default=None, type=_boolean, help="few-shot examples as a multi-turn conversation (needs --apply_chat_template)")
    run.add_argument("--system_instruction", default=None, help="a system instruction added to the prompts")
    run.add_argument("--seed", type=_seeds, default=None, help="seeds for python, numpy, torch and the few-shot sampler: one integer (all four), or three or four comma-separated ones (None leaves one unset)")
    run.add_argument("--use_cache", "-c", default=None, help="sqlite file caching model responses")
    run.add_argument("--cache_requests", choices=("true", "refresh", "delete"), default=None, help="cache the built requests")
    run.add_argument("--check_integrity", action="store_true", help="run the tasks' test suites")
    run.add_argument("--write_out", "-w", action="store_true", help="print the prompts of the first documents")
    run.add_argument("--show_config", action="store_true", help="print the full task configuration after the run")
    run.add_argument("--confirm_run_unsafe_code", action="store_true", help="allow tasks that execute generated code")
    run.add_argument("--metadata", nargs="+", default=None, help="key=val pairs (or JSON) passed to tasks that need them")
    for option, reason in REFUSED_OPTIONS.items():
        parser.add_argument(option, nargs="*", action=_Refused, reason=reason, help=argparse.SUPPRESS)
    parser.set_defaults(command_function=_lm_eval)


def _add_task_export(commands: argparse._SubParsersAction, formatter_class) -> None:
    parser = commands.add_parser(
        "lm-eval-task",
        help="write a zerotuning task as an lm-eval task (YAML + JSONL) for `zerotuning lm-eval --include_path`",
        description="The test split becomes lm-eval's test split and the demo split its few-shot split; prompts are "
        "rendered as zerotuning renders them. Writes <name>.yaml, <name>_test.jsonl and <name>_demo.jsonl into --out.",
        formatter_class=formatter_class,
    )
    parser.add_argument("--task", required=True, help="a built-in task (sentiment, capitals, elements) or a .jsonl/.csv/.tsv file with the default columns")
    parser.add_argument("--out", type=Path, required=True, help="folder for the task files (pass it to --include_path); other files in it are left alone")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier export's files of the same --name in --out (otherwise refused)")
    parser.add_argument("--name", default=None, help="lm-eval task name (default: zerotuning_<task>)")
    parser.add_argument("--seed", type=cli_checks.integer_at_least(0), default=0, help="seed of the random split of a local file without a split column")
    parser.set_defaults(command_function=_export_task)


def _add_compare(commands: argparse._SubParsersAction, formatter_class) -> None:
    parser = commands.add_parser(
        "compare",
        help="paired comparison of two lm-eval runs written with --log_samples (bootstrap interval, McNemar)",
        description="Match the two runs' samples by doc_id and compare every per-sample metric: each run's mean, the "
        "paired bootstrap interval of B - A and, for 0/1 metrics, the exact McNemar test. Runs whose samples differ are refused.",
        formatter_class=formatter_class,
    )
    parser.add_argument("run_a", type=Path, help="run A: an lm-eval results_<date>.json, or a folder holding one")
    parser.add_argument("run_b", type=Path, help="run B, compared against A")
    parser.add_argument("--out", type=Path, default=None, help="also write the comparison as JSON to this (new) file")
    parser.add_argument("--bootstrap-resamples", type=_positive_int, default=10_000, help="bootstrap resamples for the 95%% intervals")
    parser.add_argument("--seed", type=cli_checks.integer_at_least(0), default=0, help="seed of the bootstrap")
    parser.set_defaults(command_function=_compare)


def _lm_eval(args: argparse.Namespace) -> int:
    if importlib.util.find_spec("lm_eval") is None:
        raise ImportError(f"zerotuning lm-eval needs lm-evaluation-harness: {INSTALL_HINT}")
    from lm_eval.utils import make_table

    from ..models import load_model
    from ..profile import Profile
    from .harness import evaluation_config, run
    from .model import ZeroTuningLM

    if args.profile is not None and not args.profile.is_file():
        raise FileNotFoundError(f"--profile: {str(args.profile)!r} does not exist")
    profile = Profile.load(args.profile) if args.profile is not None else None
    config, task_manager = evaluation_config(args.tasks, **_run_options(args))
    model, tokenizer = load_model(args.model, dtype=DTYPES[args.dtype], device=args.device)
    profile = profile or Profile.neutral(model)
    model_options = {} if args.max_length is None else {"max_length": args.max_length}
    lm = ZeroTuningLM(model, tokenizer, profile, batch_size=config.batch_size, max_batch_size=config.max_batch_size or 64, **model_options)
    profile_source = str(args.profile) if args.profile is not None else "neutral"
    results = run(lm, config, task_manager, model_name=args.model, profile_source=profile_source)
    print(f"zerotuning lm-eval: model {args.model}, profile {profile_source}, sink rows {json.dumps(results['zerotuning']['sink_rows'])}")
    if "results" in results:
        print(make_table(results))
    if "groups" in results:
        print(make_table(results, "groups"))
    if results.get("files"):
        print(f"wrote {results['files']['results']}")
    return 0


def _export_task(args: argparse.Namespace) -> int:
    from ..tasks.files import FILE_FORMATS
    from ..tasks.loader import TaskRequest, load_task
    from ..tasks.splits import SplitPlan
    from .task_export import export_task

    source = Path(args.task)
    is_file = source.suffix.lower() in FILE_FORMATS and source.is_file()
    task = load_task(TaskRequest(source=str(source.resolve()) if is_file else args.task, splits=SplitPlan(seed=args.seed)))
    yaml_path = export_task(task, args.out, name=args.name, overwrite=args.overwrite, inputs={"--task": source} if is_file else {})
    print(f"wrote {yaml_path} (lm-eval task {yaml_path.stem}: {len(task.split('test'))} test, {len(task.split('demo'))} few-shot examples)")
    print(f"run it with: zerotuning lm-eval --include_path {args.out} --tasks {yaml_path.stem} ...")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from ..atomic_files import write_text_atomically
    from ..output_paths import check_not_an_input, check_writable_parent, local_inputs
    from .compare import compare_runs, find_run, format_comparison

    if args.out is not None:
        if args.out.exists():
            raise FileExistsError(f"--out: {str(args.out)!r} already exists; remove it or choose another file")
        check_not_an_input("--out", args.out, local_inputs(run_a=args.run_a, run_b=args.run_b))
        check_writable_parent("--out", args.out)
    comparison = compare_runs(find_run(args.run_a), find_run(args.run_b), resamples=args.bootstrap_resamples, seed=args.seed)
    print(format_comparison(comparison))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomically(args.out, json.dumps(comparison, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


def _run_options(args: argparse.Namespace) -> dict:
    """The lm-eval run options given on the command line, in EvaluatorConfig's terms."""
    options = {
        name: getattr(args, name)
        for name in (
            "include_path", "num_fewshot", "batch_size", "max_batch_size", "limit", "samples", "output_path", "log_samples",
            "predict_only", "apply_chat_template", "fewshot_as_multiturn", "system_instruction", "seed", "use_cache",
            "check_integrity", "write_out", "show_config", "confirm_run_unsafe_code",
        )
    }
    options["gen_kwargs"] = ",".join(args.gen_kwargs) if args.gen_kwargs else None
    options["metadata"] = _metadata(args.metadata)
    options["cache_requests"] = {
        "cache_requests": args.cache_requests in ("true", "refresh"),
        "rewrite_requests_cache": args.cache_requests == "refresh",
        "delete_requests_cache": args.cache_requests == "delete",
    } if args.cache_requests else None
    return {name: value for name, value in options.items() if value is not None}


def _metadata(values: list[str] | None) -> dict | str | None:
    if not values:
        return None
    text = " ".join(values)
    if text.lstrip().startswith("{"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"--metadata: {text!r} is not valid JSON: {error}") from None
    return ",".join(values)


class _Extend(argparse.Action):
    """``--tasks a b,c`` -> ["a", "b", "c"] (each value already split by ``_names``)."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, [name for group in values for name in group])


class _Refused(argparse.Action):
    """An lm-eval option this command does not take: a clear error naming it and the alternative."""

    def __init__(self, *args, reason: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.reason = reason

    def __call__(self, parser, namespace, values, option_string=None):
        parser.error(f"{option_string} is not taken by zerotuning lm-eval: {self.reason}")


def _names(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",")]
    if any(not name for name in names):
        raise argparse.ArgumentTypeError(f"expected task names separated by commas, got {text!r}")
    return names


def _batch_size(text: str) -> int | str:
    if text == "auto" or (text.startswith("auto:") and _is_positive_float(text[5:])):
        return text
    return _positive_int(text, "an integer >= 1, 'auto' or 'auto:N'")


def _positive_int(text: str, expected: str = "an integer >= 1") -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    if not _is_positive_float(text):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return float(text)


def _is_positive_float(text: str) -> bool:
    try:
        value = float(text)
    except ValueError:
        return False
    return math.isfinite(value) and value > 0  # inf would reach lm-eval's int(limit) after the model loads


def _boolean(text: str) -> bool:
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _seeds(text: str) -> list[int | None]:
    try:
        seeds = [None if item.strip() == "None" else int(item) for item in text.split(",")]
    except ValueError:
        seeds = []
    # numpy's seed (one of the four) must lie in [0, 2**32); lm-eval would fail on it after the model loads.
    in_range = all(seed is None or 0 <= seed < 2**32 for seed in seeds)
    if len(seeds) not in (1, 3, 4) or not in_range:
        raise argparse.ArgumentTypeError(
            f"expected one integer, or three or four comma-separated integers, in [0, 2**32) (None to leave one unset), got {text!r}"
        )
    return seeds
