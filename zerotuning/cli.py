"""The ``zerotuning`` console script: ``tune``, ``evaluate``, ``probe-heads``, ``export``, and (``zerotuning.lm_eval.cli``)
``lm-eval``, ``lm-eval-task`` and ``compare``.

It parses the options, calls the engine (``zerotuning.tuning``) and prints; what a run records and
writes is ``zerotuning.tuning.run_record``.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from . import cli_checks
from .evaluation.report import format_table
from .lm_eval.cli import add_commands as add_lm_eval_commands
from .models import load_model
from .output_paths import local_inputs
from .profile import Profile
from .tasks.columns import ANSWER_FORMATS, ColumnMapping
from .tasks.files import FILE_FORMATS
from .tasks.loader import TaskRequest, load_task
from .tasks.splits import SplitPlan
from .tasks.task import Task
from .tasks.task import GENERATION, TASK_KINDS
from .generation.formats import CHAT_TEMPLATE_CHOICES
from .tuning.head_probing import GRANULARITIES
from .evaluation.out_of_fold import DEFAULT_FOLDS
from .scoring.answer_tokens import ANSWER_FORMS
from .scoring.option_format import OPTION_TASK_DEFAULT
from .tuning.objectives import CALIBRATIONS, ENTROPY_CHOICES
from .tuning.fit_settings import FitSettings
from .tuning.tuner import DEFAULT_GAMMAS, DEFAULT_LEVELS, PROBES, SEARCHES, TuningConfig

if TYPE_CHECKING:
    from .generation.experiment import GenerationSettings
    from .tuning.experiment import RunSettings

DEFAULT_BATCH_SIZE = 8
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

DESCRIPTION = """ZeroTuning: rescale each attention head's attention to the initial (sink) token.
Gamma is tuned on the task's calibration split and judged on its disjoint test split."""


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a default only where the help text does not already explain it and there is one."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if "default" in (action.help or "") or action.default is None or action.default is False or action.default == () or action.default == argparse.SUPPRESS:
            return action.help or ""
        return super()._get_help_string(action)


class _OptionError(Exception):
    """An option argparse refused, already phrased for the user."""


class _Parser(argparse.ArgumentParser):
    """Reports a bad option as one line (the usage is one --help away), exit code 2 like every other input error.
    Options are taken only by their full names: an abbreviation such as --gamma would silently mean --gammas."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **{"allow_abbrev": False, **kwargs})

    def error(self, message: str):
        raise _OptionError(f"{self.prog}: error: {message} (see {self.prog} --help)")


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    try:
        args = build_parser().parse_args(argv)
    except _OptionError as error:
        print(error, file=sys.stderr)
        return 2
    if getattr(args, "batch_size", DEFAULT_BATCH_SIZE) is None and getattr(args, "engine", "transformers") == "transformers":
        args.batch_size = DEFAULT_BATCH_SIZE
    try:
        return args.command_function(args)
    # Bad input or environment: one line, not a traceback. TypeError included: the glue raises it
    # for a model it cannot patch (e.g. one without the attention interface).
    except (ValueError, TypeError, OSError, RuntimeError, ImportError) as error:
        message = " ".join(str(error).split()) or type(error).__name__
        print(f"zerotuning {args.command}: error: {message}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="zerotuning", description=DESCRIPTION, formatter_class=_HelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    tune = commands.add_parser(
        "tune",
        help="tune gamma on the calibration split, then compare with the baseline on the test split",
        description="Run the tuning levels on the calibration split, pick the best profile, and evaluate baseline vs tuned "
        "on the test split. Writes profile.json (selected), profile_level<N>.json, results.json, predictions.json, "
        "metric_vs_gamma.png and (with level 2) head_effects.png into --out.",
        formatter_class=_HelpFormatter,
    )
    _add_model_options(tune, model_default="smollm2")
    _add_task_options(tune, task_required=True)
    _add_run_options(tune)
    _add_tuning_options(tune)
    _add_generation_options(tune)
    _add_engine_options(tune)
    tune.add_argument("--out", type=Path, default=Path("zerotuning-out"), help="folder for the profile, results and plots (new or empty, unless --overwrite)")
    _add_overwrite_option(tune, "an earlier tuning run's folder: replaced whole once this run's files are all written (a folder holding other files is still refused)")
    tune.set_defaults(command_function=_tune)

    evaluate = commands.add_parser(
        "evaluate",
        help="apply a saved profile and print the baseline-vs-tuned table on the test split",
        description="Score the test split with and without a saved profile (calibration baselines are fitted on the "
        "calibration split). Model, task, shots and seed default to the ones recorded in the profile by `tune`.",
        formatter_class=_HelpFormatter,
    )
    evaluate.add_argument(
        "--profile", required=True, help="a profile written by `zerotuning tune`: its --out folder, a profile JSON file, "
        "a folder written by Profile.save_pretrained, or a hub id"
    )
    _add_model_options(evaluate, model_default=None)
    _add_task_options(evaluate, task_required=False)
    _add_run_options(evaluate, recorded_defaults=True)
    _add_generation_options(evaluate)
    _add_engine_options(evaluate)
    evaluate.add_argument(
        "--also-generation",
        default=None,
        metavar="TASK",
        help="collateral damage: also judge the profile on this generation task's test split (a built-in name or a "
        ".jsonl/.csv/.tsv file of generation rows): untouched model vs profile on every generation measure",
    )
    evaluate.add_argument("--max-generation-test", type=int, default=None, help="with --also-generation: keep at most this many of its test examples (seeded subsample)")
    evaluate.add_argument("--out", type=Path, default=None, help="also write the evaluation as JSON to this file (new, unless --overwrite), its predictions beside it")
    _add_overwrite_option(evaluate, "an earlier evaluation's --out file and its predictions files: deleted, then written anew")
    evaluate.set_defaults(command_function=_evaluate)

    probe = commands.add_parser(
        "probe-heads",
        help="probe each head's effect on the calibration objective (Level 2's first step) and plot it; tunes nothing",
        description="Scale the sink of one head index in every layer (or of one (layer, head)) by --probe-gamma and "
        "measure the change of the calibration objective, classifying each probe as up-effective, down-effective "
        "or neutral. Writes head_effects.json and head_effects.png into --out; writes no profile.",
        formatter_class=_HelpFormatter,
    )
    _add_model_options(probe, model_default="smollm2")
    _add_task_options(probe, task_required=True)
    _add_run_options(probe)
    _add_objective_options(probe)
    _add_probe_options(probe)
    probe.add_argument("--out", type=Path, default=Path("zerotuning-out"), help="folder for head_effects.json/.png (new or empty, unless --overwrite)")
    _add_overwrite_option(probe, "an earlier probe-heads run's folder: replaced whole once this run's files are written (a folder holding other files is still refused)")
    probe.set_defaults(command_function=_probe_heads)
    add_lm_eval_commands(commands, _HelpFormatter)

    export = commands.add_parser(
        "export",
        help="write the loaded model (GGUF included) as a HuggingFace folder that vLLM loads, with a profile beside it",
        description="Load --model as the other commands do (GGUF dequantised, BOS checked) and write it to the new "
        "folder --out: config.json, safetensors weights, the tokenizer, zerotuning_export.json and, with --profile, "
        "zerotuning_profile.json (read by the vLLM plugin, docs/vllm.md). The folder is checked by reloading it "
        "and comparing logits, and appears only when complete; an existing --out is refused.",
        formatter_class=_HelpFormatter,
    )
    export.add_argument("--model", default="smollm2", help="what zerotuning.models.load_model loads: smollm2, gemma3, a HuggingFace folder or a .gguf file")
    export.add_argument("--dtype", choices=tuple(DTYPES), default="float32", help="dtype of the written weights")
    export.add_argument("--profile", type=Path, default=None, help="a profile JSON for this model (e.g. written by `zerotuning tune`), copied into the folder")
    export.add_argument("--out", type=Path, required=True, help="the folder to create (must not exist)")
    export.set_defaults(command_function=_export)
    return parser


def _add_engine_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("engine", "what runs the scoring passes (docs/vllm.md, Tuning through vLLM)")
    group.add_argument(
        "--engine", choices=("transformers", "vllm"), default="transformers",
        help="transformers: the loaded model with zerotuning.apply; vllm: a vLLM engine started from an export of the loaded "
        "model, each candidate profile swapped into it (needs the zerotuning[vllm] environment; answer-position scoring, "
        "no gradient paths, no generation tasks)",
    )
    group.add_argument("--tensor-parallel-size", type=cli_checks.integer_at_least(1), default=None, help="with --engine vllm: vLLM's tensor_parallel_size; default: 1")
    group.add_argument("--vllm-model", type=Path, default=None, help="with --engine vllm: an existing `zerotuning export` folder of --model to serve (default: export to a temporary folder)")


def _add_overwrite_option(parser: argparse.ArgumentParser, replaces: str) -> None:
    parser.add_argument("--overwrite", action="store_true", help=f"allow --out to be {replaces}")


def _add_model_options(parser: argparse.ArgumentParser, model_default: str | None) -> None:
    group = parser.add_argument_group("model")
    group.add_argument(
        "--model",
        default=model_default,
        help="what zerotuning.models.load_model loads: a known name (smollm2, gemma3), a local HuggingFace model "
        "folder (config + weights + tokenizer) or a .gguf file" + ("; default: the one recorded in the profile" if model_default is None else ""),
    )
    group.add_argument(
        "--batch-size", type=cli_checks.integer_at_least(1), default=None,
        help=f"examples per forward pass (rows are left-padded and sorted by length); default: {DEFAULT_BATCH_SIZE} (not with --engine vllm, whose scheduler batches)",
    )
    group.add_argument("--dtype", choices=tuple(DTYPES), default="float32", help="weight and activation dtype")
    group.add_argument("--device", type=cli_checks.device, default="cpu", help="torch device to run on, e.g. cpu or cuda")


def _add_task_options(parser: argparse.ArgumentParser, task_required: bool) -> None:
    group = parser.add_argument_group(
        "task",
        "where the examples come from and how their columns and splits are read"
        + ("" if task_required else " (the other task options apply only together with --task)"),
    )
    group.add_argument(
        "--task",
        required=task_required,
        default=None,
        help="a built-in task name, a local .jsonl/.csv/.tsv file, or hf:<dataset> (needs `datasets` and a reachable hub)"
        + ("" if task_required else "; default: the task recorded in the profile"),
    )
    group.add_argument("--task-kind", choices=TASK_KINDS, default=None, help="task kind (default: from the task file, or inferred from the columns)")
    group.add_argument("--labels", type=_string_list, default=(), help="comma-separated label words in index order (classification); they are the answers the model is scored on")
    group.add_argument("--instruction", default=None, help="instruction line on top of each prompt (default: the task's, or the paper's classification instruction)")
    group.add_argument("--input-name", default=None, help="name before the input, as in 'Sentence: ...' (default: the task's, or Sentence)")
    group.add_argument("--text-column", default="text", help="column of the input text (classification)")
    group.add_argument("--label-column", default="label", help="column of the label: a label word, or an index into --labels")
    group.add_argument("--question-column", default="question", help="column of the question (multiple choice)")
    group.add_argument("--choices-column", default="choices", help="column holding the list of choices (a JSON list in CSV/TSV)")
    group.add_argument("--choice-columns", type=_string_list, default=(), help="comma-separated columns, one per option in order (instead of --choices-column)")
    group.add_argument("--answer-column", default="answer", help="column of the right answer (multiple choice)")
    group.add_argument("--answer-format", choices=ANSWER_FORMATS, default="auto", help="how the answer is written: 0-based index, 1-based index1, letter, the choice's text, or auto")
    group.add_argument("--prompt-column", default="prompt", help="column of the prompt, one user turn (generation)")
    group.add_argument("--messages-column", default="messages", help="column of the chat messages, a list of {role, content} ending with a user turn (generation; a JSON list in CSV/TSV)")
    group.add_argument("--references-column", default="references", help="column of the reference answer, or a list of them (generation)")
    group.add_argument("--pattern-column", default="pattern", help="optional column of a regular expression a right answer matches (generation)")
    group.add_argument("--id-column", default="id", help="column of example ids (row numbers when absent)")
    group.add_argument("--split-column", default=None, help="column naming each row's split (values demo/calibration/test, or see --split-map)")
    group.add_argument("--split-map", type=_mapping, default=None, help="source split -> split, e.g. train=demo,validation=calibration,test=test; unmapped values are left out")
    group.add_argument("--split-fractions", type=_fractions, default=None, help="random seeded split, e.g. demo=0.1,calibration=0.45,test=0.45 (default for local files without --split-column)")
    group.add_argument("--max-calibration", type=cli_checks.integer_at_least(1), default=None, help="keep at most this many calibration examples (seeded subsample)")
    group.add_argument("--max-test", type=cli_checks.integer_at_least(1), default=None, help="keep at most this many test examples (seeded subsample)")
    group.add_argument("--hub-config", default=None, help="dataset configuration name for hf:<dataset>")


def _add_run_options(parser: argparse.ArgumentParser, recorded_defaults: bool = False) -> None:
    group = parser.add_argument_group("run")
    recorded = "; default: as recorded in the profile" if recorded_defaults else ""
    group.add_argument("--shots", type=cli_checks.integer_at_least(0), default=None if recorded_defaults else 0, help="few-shot demonstrations drawn from the demo split" + recorded)
    group.add_argument("--seed", type=cli_checks.integer_at_least(0), default=None if recorded_defaults else 0, help="seed of the random split, the demonstration draw and the bootstrap" + recorded)
    group.add_argument("--bootstrap-resamples", type=cli_checks.integer_at_least(1), default=10_000, help="bootstrap resamples for the 95%% confidence intervals")
    group.add_argument(
        "--answer-forms",
        choices=ANSWER_FORMS,
        default=None if recorded_defaults else "auto",
        help="surface: an answer's probability is the mass of the first tokens of its surface forms (with/without the "
        "leading space, lower-case/capitalised words); first_token: its canonical first token only; full_sequence: the "
        "teacher-forced likelihood of its surface forms' whole token sequences (one extra prompt row per distinct "
        "continuation, for multi-token answers); auto: surface, or full_sequence where answers share their first token"
        + (recorded or "; default: auto"),
    )
    group.add_argument(
        "--chat-template",
        choices=CHAT_TEMPLATE_CHOICES,
        default=None,
        help="how prompts are rendered. on: through the tokenizer's chat template (an option task: instruction and example as "
        "the user turn, demonstrations as earlier user/assistant turns, the answer scored right after the assistant header "
        "without a leading space; a generation task: its conversation, the end-of-turn token ends the answer); off: plain "
        "text (an option task: the paper's 'Answer:' prompt; a generation task: Question:/Answer: lines); auto: on when the "
        "tokenizer has a template. Default: off for classification and multiple-choice tasks, auto for generation tasks"
        + ("; as recorded in the profile. With --also-generation it sets the generation task's rendering only: the "
           "evaluated task keeps the profile's" if recorded_defaults else ""),
    )


def _add_objective_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("objective")
    group.add_argument(
        "--objective",
        choices=("supervised", "unsupervised"),
        default="supervised",
        help="supervised: calibration accuracy, ties broken by the right answer's mean log-likelihood; "
        "unsupervised: minus the mean entropy at the answer position (labels unused)",
    )
    group.add_argument("--entropy-over", choices=ENTROPY_CHOICES, default="answers", help="unsupervised: entropy of the distribution over the answers, or over the whole vocabulary (both are reported)")
    group.add_argument("--layers", type=_int_ranges, default=None, help="tunable layers, e.g. 0-9 or 0,2,4 (default: all)")
    group.add_argument(
        "--objective-calibration",
        choices=CALIBRATIONS,
        default="label_bias",
        help="label_bias: judge each candidate after label-bias calibration fitted out of fold inside the calibration "
        "split (the selected method is tuned + label bias); none: the uncalibrated model's objective",
    )
    group.add_argument("--folds", type=cli_checks.integer_at_least(2), default=DEFAULT_FOLDS, help="folds of the out-of-fold calibration inside the calibration split")


def _add_probe_options(parser: argparse.ArgumentParser, levels_only: bool = False) -> None:
    """With ``levels_only`` (``tune``) the options default to None, so that giving them without --search levels is an error."""
    group = parser.add_argument_group("head probing" + (" (with --search levels)" if levels_only else ""))
    group.add_argument("--probe-gamma", type=cli_checks.probe_gamma, default=None if levels_only else 2.0, help="gamma each probe applies to the probed heads" + ("; default: 2" if levels_only else ""))
    group.add_argument("--granularity", choices=GRANULARITIES, default=None if levels_only else "head", help="head: one head index across all tunable layers per probe; layer_head: each (layer, head) alone (layers x heads probes)" + ("; default: head" if levels_only else ""))
    group.add_argument(
        "--probes",
        choices=PROBES,
        default=None if levels_only else "forward",
        help="forward: score the calibration split once per probe; gradient: every probe's first-order effect from one forward + "
        "backward pass (d surrogate / d log-gamma per head)" + ("; default: forward" if levels_only else ""),
    )


FIT_OPTIONS = {"fit_steps": FitSettings.steps, "fit_learning_rate": FitSettings.learning_rate, "fit_prior": FitSettings.prior}
LEVEL_OPTIONS = {
    "levels": DEFAULT_LEVELS, "fixed_gamma": 2.0, "gammas": DEFAULT_GAMMAS, "probe_gamma": 2.0, "granularity": "head", "probes": "forward",
    **FIT_OPTIONS,
}


def _add_generation_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("generation tasks", "only for a task of kind generation (or --also-generation)")
    group.add_argument("--max-new-tokens", type=int, default=None, help=f"greedy answer budget in tokens (default {_default_new_tokens()}; an answer without an end of turn by then counts as unfinished)")


def _default_new_tokens() -> int:
    from .generation.experiment import DEFAULT_MAX_NEW_TOKENS

    return DEFAULT_MAX_NEW_TOKENS


def _add_tuning_options(parser: argparse.ArgumentParser) -> None:
    _add_objective_options(parser)
    group = parser.add_argument_group("search")
    group.add_argument(
        "--search",
        choices=SEARCHES,
        default="budgeted",
        help="budgeted: successive halving over a candidate family (a gamma grid on every head, two gammas on the early and "
        "on the late half of the layers) on growing parts of the calibration split, within --budget x the published "
        "protocol's passes, then the one-standard-error rule towards gamma = 1; levels: the full Levels 0-2 "
        "(--levels, --fixed-gamma, --gammas, --probe-gamma, --granularity)",
    )
    group.add_argument("--budget", type=cli_checks.positive_number, default=None, help="budgeted: the share of the published protocol's passes (baseline + one probe per head index + a 7-point grid) the tuning may spend, baseline included; default: 0.25")
    group = parser.add_argument_group("levels (with --search levels)")
    group.add_argument("--levels", type=_int_list, default=None, help="levels to run: 0 fixed gamma on all heads, 1 gamma grid on all heads, 2 head probing + grid on the dominant kind, 3 a gamma per head fitted by gradient steps on the calibration split; default: 0,1,2")
    group.add_argument("--fixed-gamma", type=cli_checks.positive_number, default=None, help="level 0's gamma; default: 2")
    group.add_argument("--gammas", type=cli_checks.positive_numbers, default=None, help="gamma grid of levels 1 and 2 (level 2 uses the side of 1 its heads need); default: " + ",".join(f"{gamma:g}" for gamma in DEFAULT_GAMMAS))
    _add_probe_options(parser, levels_only=True)
    group = parser.add_argument_group("level 3 (with --search levels --levels ...3)", "a log-gamma per (layer, head) of --layers, fitted by Adam on the answers' cross-entropy (unsupervised: their entropy) on three quarters of the calibration split, kept at the step with the lowest loss on the other quarter")
    group.add_argument("--fit-steps", type=cli_checks.integer_at_least(1), default=None, help=f"most gradient steps (each a forward and a backward pass over the fit fold); default: {FitSettings.steps}")
    group.add_argument("--fit-learning-rate", type=cli_checks.positive_number, default=None, help=f"Adam's learning rate (about the change of each log-gamma per step); default: {FitSettings.learning_rate:g}")
    group.add_argument("--fit-prior", type=cli_checks.non_negative_number, default=None, help=f"strength of the L2 prior on log-gamma towards gamma = 1 (0: none, inf: every gamma stays 1); default: {FitSettings.prior:g}")


def _tuning_config(args: argparse.Namespace) -> TuningConfig:
    given = [name for name in LEVEL_OPTIONS if getattr(args, name) is not None]
    if args.search != "levels" and given:
        options = ", ".join("--" + name.replace("_", "-") for name in given)
        raise ValueError(f"{options}: only used with --search levels, but --search is {args.search!r}")
    fit_given = [name for name in FIT_OPTIONS if getattr(args, name) is not None]
    if args.search == "levels" and fit_given and 3 not in (args.levels or DEFAULT_LEVELS):
        options = ", ".join("--" + name.replace("_", "-") for name in fit_given)
        raise ValueError(f"{options}: only used with level 3, but --levels is {','.join(map(str, args.levels or DEFAULT_LEVELS))}")
    if args.search != "budgeted" and args.budget is not None:
        raise ValueError(f"--budget: only used with --search budgeted, but --search is {args.search!r}")
    values = {name: default if getattr(args, name) is None else getattr(args, name) for name, default in LEVEL_OPTIONS.items()}
    try:
        return TuningConfig(
            args.search, 0.25 if args.budget is None else args.budget, tuple(values["levels"]), values["fixed_gamma"], tuple(values["gammas"]), values["probe_gamma"], values["granularity"],
            values["probes"], values["fit_steps"], values["fit_learning_rate"], values["fit_prior"],
        )
    except ValueError as error:  # TuningConfig's fields are the options' names: say the option
        field, separator, rest = str(error).partition(": ")
        if separator and field in TuningConfig.__dataclass_fields__:
            raise ValueError(f"--{field.replace('_', '-')}: {rest}") from None
        raise


# The HF glue (transformers) and matplotlib take seconds to import: each command imports them when
# it runs, so that `--help` answers at once.


def _tune(args: argparse.Namespace) -> int:
    from .tuning import run_record
    from .tuning.experiment import run_tuning

    tuning_config = _tuning_config(args)
    request = _task_request(args)
    task = load_task(request)  # before the model: a bad task fails fast
    generation = task.spec.kind == GENERATION
    settings = _generation_settings(args, tuning_config) if generation else _settings(args, tuning_config)
    out = run_record.tuning_run_folder(args.out, args.overwrite)
    out.check(local_inputs(**{"--task": request.source, "--model": args.model}))  # before the model loads
    cli_checks.check_task_fits(task, shots=settings.shots, folds=_objective_folds(settings))
    cli_checks.check_gradient_paths(tuning_config, answer_forms=getattr(settings, "answer_forms", None), generation=generation)
    vllm_options = cli_checks.vllm_options(args, tuning_config, generation=generation)
    model, tokenizer = _load_model(args)
    cli_checks.check_model_fits(model, layers=settings.layers)
    if generation:
        from .generation.experiment import run_generation_tuning
        from .generation.report import format_generation_table

        results, tuning = run_generation_tuning(model, tokenizer, task, settings, run_record.describe_model(model))
    else:
        results, tuning = run_tuning(model, tokenizer, task, settings, run_record.describe_model(model), vllm_options)
    run_record.write_tuning_run(out, results, tuning, request, settings, run_record.model_spec_for_record(args.model))
    if tuning.selected.fit is not None and tuning.selected.heads is None:
        print(f"selected {tuning.selected.name}: {tuning.selected.note}")
    else:
        print(f"selected {tuning.selected.name}: gamma {tuning.selected.gamma:g} on {_heads_text(tuning.selected.heads)}")
    if generation:
        print(format_generation_table(results["test"]))
    else:
        print(_scoring_text(results))
        print(format_table(results["test"]))
        tuning_cost, selection = results["cost"]["tuning"], results["selection"]
        print(
            f"selection: {selection['method']} vs {selection['reference']}: calibration gain {selection['calibration_gain']:+.3f}, "
            f"test gain {selection['test_gain']:+.3f}, optimism {selection['optimism']:+.3f}"
        )
        print(
            f"tuning cost: {tuning_cost['split_passes']:.2f} passes over the calibration split "
            f"({tuning_cost['fraction_of_published']:.2f} of the published protocol's {tuning_cost['published_protocol_passes']}), "
            f"{tuning_cost['seconds']:.1f} s"
            + (f"; whole-answer scoring: {tuning_cost['rows_per_example']} prompt rows per example, "
               f"{tuning_cost['example_equivalent_passes']:.2f} example-equivalents" if tuning_cost["rows_per_example"] > 1 else "")
        )
    print(f"cost: {results['cost']['total']['forward_passes']} forward passes, {results['cost']['total']['seconds']:.1f} s")
    print(f"wrote {args.out}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from .tuning import run_record
    from .tuning.experiment import run_evaluation

    try:
        profile = Profile.from_pretrained(args.profile)
    except (ValueError, OSError) as error:
        raise type(error)(f"--profile: {error}") from None
    recorded = run_record.RecordedRun.of(profile, args.profile)
    for option in ("model", "shots", "seed"):
        setattr(args, option, recorded.setting(option, getattr(args, option)))
    if args.answer_forms is None:
        args.answer_forms = recorded.fields.get("settings", {}).get("answer_forms", "surface")
    request = _task_request(args) if args.task is not None else recorded.task_request()
    task = load_task(request)
    generation = task.spec.kind == GENERATION
    if generation and args.also_generation is not None:
        raise ValueError(f"--also-generation: the evaluated task {task.spec.name!r} is itself a generation task; drop the option")
    if args.max_generation_test is not None and args.also_generation is None:
        raise ValueError("--max-generation-test applies only with --also-generation")
    recorded_generation = recorded.fields.get("settings", {}).get("generation", {}) if generation else {}
    chat_template = _evaluated_chat_template(args, recorded) if not generation else None
    settings = _generation_settings(args, TuningConfig(), recorded_generation) if generation else _settings(args, TuningConfig(), chat_template)
    collateral = _collateral_task(args) if args.also_generation is not None else None  # before the model: fails fast
    # Zero-shot: the shots recorded for the profile's own task say nothing about the generation task.
    collateral_settings = replace(_generation_settings(args, TuningConfig(), check=False), shots=0) if collateral is not None else None
    out = None
    if args.out is not None:
        out = run_record.evaluation_files(args.out, args.overwrite)
        inputs = {"--profile": args.profile, "--task": request.source, "--model": args.model, "--also-generation": args.also_generation}
        out.check(local_inputs(**inputs))
    elif args.overwrite:
        raise ValueError("--overwrite applies only with --out")
    cli_checks.check_task_fits(task, shots=settings.shots, folds=None)
    if collateral is not None:
        cli_checks.check_task_fits(collateral, shots=0, folds=None, needs=("test",))
    if collateral is not None and args.engine == "vllm":
        raise ValueError("--also-generation: generation tasks are scored with --engine transformers only; drop --also-generation or --engine vllm")
    vllm_options = cli_checks.vllm_options(args, None, generation=generation)
    model, tokenizer = _load_model(args)
    cli_checks.check_model_fits(model, profile=profile, profile_source=repr(args.profile))
    from .generation.experiment import run_generation_evaluation
    from .generation.report import format_generation_table

    if generation:
        results = run_generation_evaluation(model, tokenizer, task, profile, settings, run_record.describe_model(model))
    else:
        results = run_evaluation(model, tokenizer, task, profile, settings, run_record.describe_model(model), vllm_options)
    print(f"profile {args.profile}: {recorded.describe()}")
    if not generation:
        print(_scoring_text(results))
    print(format_generation_table(results["test"]) if generation else format_table(results["test"]))
    if collateral is not None:
        also = run_generation_evaluation(model, tokenizer, collateral, profile, collateral_settings, run_record.describe_model(model))
        results["also_generation"] = {key: also[key] for key in ("task", "splits", "settings", "test", "cost")}
        results["also_generation_predictions"] = also["predictions"]
        print(f"\ncollateral: generation task {collateral.spec.name!r}")
        print(format_generation_table(also["test"]))
    if not generation:
        results["overrides"] = run_record.overrides(recorded, {"chat_template": settings.chat_template})
    if out is not None:
        run_record.write_evaluation(results, out, results.pop("also_generation_predictions", None))
        print(f"wrote {args.out}")
    return 0


def _evaluated_chat_template(args: argparse.Namespace, recorded) -> str:
    """The evaluated option task's --chat-template: given (not with --also-generation, where it is the generation task's), else the profile's."""
    if args.chat_template is not None and args.also_generation is None:
        return args.chat_template
    return recorded.recorded_setting("chat_template", OPTION_TASK_DEFAULT)  # profiles from before the option: plain


def _probe_heads(args: argparse.Namespace) -> int:
    from .tuning import run_record
    from .tuning.experiment import run_head_probing

    settings = _settings(args, TuningConfig(probe_gamma=args.probe_gamma, granularity=args.granularity, probes=args.probes))
    request = _task_request(args)
    task = load_task(request)
    out = run_record.head_probing_run_folder(args.out, args.overwrite)
    out.check(local_inputs(**{"--task": request.source, "--model": args.model}))
    cli_checks.check_task_fits(task, shots=settings.shots, folds=_objective_folds(settings), needs=("calibration",))
    model, tokenizer = _load_model(args)
    cli_checks.check_model_fits(model, layers=settings.layers)
    results, head_probes = run_head_probing(model, tokenizer, task, settings, run_record.describe_model(model))
    run_record.write_head_probing_run(out, results, head_probes, settings)
    counts = results["head_profile"]["counts"]
    print(f"{counts['up']} up-effective, {counts['down']} down-effective, {counts['neutral']} neutral probes; dominant: {results['head_profile']['dominant_kind']}")
    print(f"wrote {args.out}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from .export import export_model

    if args.out.exists():  # before the model loads
        raise FileExistsError(f"--out: {str(args.out)!r} already exists; expected a new folder")
    profile = None
    if args.profile is not None:
        if not args.profile.is_file():
            raise FileNotFoundError(f"--profile: {str(args.profile)!r} does not exist")
        profile = Profile.load(args.profile)
    model, tokenizer = load_model(args.model, dtype=DTYPES[args.dtype])
    export_model(model, tokenizer, args.out, profile)
    print(f"wrote {args.out}" + (f" with the profile {args.profile}" if profile is not None else ""))
    return 0


def _settings(args: argparse.Namespace, tuning: TuningConfig, chat_template: str | None = None) -> RunSettings:
    """Settings of an answer-token run; ``chat_template``, when given, wins over --chat-template (evaluate's recorded one)."""
    from .tuning.experiment import RunSettings

    if getattr(args, "also_generation", None) is None and getattr(args, "max_new_tokens", None) is not None:
        raise ValueError("--max-new-tokens applies only to generation tasks (or with --also-generation); the task is not one")
    return RunSettings(
        shots=args.shots,
        seed=args.seed,
        batch_size=args.batch_size,
        layers=getattr(args, "layers", None),
        objective=getattr(args, "objective", "supervised"),
        entropy_over=getattr(args, "entropy_over", "answers"),
        tuning=tuning,
        resamples=args.bootstrap_resamples,
        answer_forms=args.answer_forms,
        calibration=getattr(args, "objective_calibration", "label_bias"),
        folds=getattr(args, "folds", DEFAULT_FOLDS),
        chat_template=chat_template or args.chat_template or OPTION_TASK_DEFAULT,
    )


def _generation_settings(args: argparse.Namespace, tuning: TuningConfig, recorded: dict | None = None, *, check: bool = True) -> GenerationSettings:
    """Settings of a generation run; answer-token-only options are refused rather than ignored."""
    from .generation.experiment import DEFAULT_MAX_NEW_TOKENS, GenerationSettings

    if check and getattr(args, "entropy_over", "answers") != "answers":
        raise ValueError("--entropy-over applies to answer-token tasks only; a generation task's unsupervised objective is the entropy over its own greedy answer")
    if check and tuning.search != "levels" and hasattr(args, "search"):
        raise ValueError(
            f"--search: a generation task is tuned with --search levels only (got {tuning.search!r}: the budgeted search "
            "scores answer tokens on growing parts of the split); add --search levels"
        )
    answer_token_options = {"objective_calibration": "label_bias", "folds": DEFAULT_FOLDS}
    if hasattr(args, "search"):  # tune; evaluate's --answer-forms is filled from the record
        answer_token_options["answer_forms"] = "auto"
    for option, default in answer_token_options.items():
        if check and getattr(args, option, default) != default:
            raise ValueError(f"--{option.replace('_', '-')} applies to answer-token tasks only; the task is a generation task")
    recorded = recorded or {}
    max_new_tokens = args.max_new_tokens if args.max_new_tokens is not None else recorded.get("max_new_tokens", DEFAULT_MAX_NEW_TOKENS)
    if max_new_tokens < 1:
        raise ValueError(f"--max-new-tokens: got {max_new_tokens}, expected a positive number of tokens")
    return GenerationSettings(
        shots=args.shots,
        seed=args.seed,
        batch_size=args.batch_size,
        layers=getattr(args, "layers", None),
        objective=getattr(args, "objective", "supervised"),
        tuning=tuning,
        resamples=args.bootstrap_resamples,
        max_new_tokens=max_new_tokens,
        chat_template=args.chat_template or recorded.get("chat_template", "auto"),
    )


def _collateral_task(args: argparse.Namespace) -> Task:
    """The --also-generation task: every row of its file or built-in, split as usual, test capped if asked."""
    if args.max_generation_test is not None and args.max_generation_test < 1:
        raise ValueError(f"--max-generation-test: got {args.max_generation_test}, expected a positive count")
    source = args.also_generation
    path = Path(source)
    limits = {"test": args.max_generation_test} if args.max_generation_test is not None else {}
    request = TaskRequest(
        source=str(path.resolve()) if path.suffix.lower() in FILE_FORMATS and path.is_file() else source,
        kind=GENERATION,
        splits=SplitPlan(seed=args.seed, max_examples=limits),
    )
    try:
        return load_task(request)
    except (ValueError, OSError) as error:
        raise type(error)(f"--also-generation: {error}") from error


def _objective_folds(settings: RunSettings) -> int | None:
    """The folds the objective cuts the calibration split into, None when it cuts none."""
    calibration = getattr(settings, "calibration", "none")  # generation settings have none
    return settings.folds if calibration != "none" else None


def _task_request(args: argparse.Namespace) -> TaskRequest:
    limits = {name: limit for name, limit in (("calibration", args.max_calibration), ("test", args.max_test)) if limit is not None}
    task_path = Path(args.task)
    is_file = task_path.suffix.lower() in FILE_FORMATS and task_path.is_file()
    return TaskRequest(
        source=str(task_path.resolve()) if is_file else args.task,  # absolute: `evaluate` may run elsewhere
        kind=args.task_kind,
        columns=ColumnMapping(
            text=args.text_column,
            label=args.label_column,
            question=args.question_column,
            choices=args.choices_column,
            choice_columns=tuple(args.choice_columns),
            answer=args.answer_column,
            answer_format=args.answer_format,
            id=args.id_column,
            prompt=args.prompt_column,
            messages=args.messages_column,
            references=args.references_column,
            pattern=args.pattern_column,
        ),
        labels=tuple(args.labels),
        instruction=args.instruction,
        input_name=args.input_name,
        splits=SplitPlan(column=args.split_column, mapping=args.split_map, fractions=args.split_fractions, seed=args.seed, max_examples=limits),
        hub_config=args.hub_config,
    )


def _load_model(args: argparse.Namespace):
    return load_model(args.model, dtype=DTYPES[args.dtype], device=args.device)


def _scoring_text(results: dict) -> str:
    scoring, prompt_format = results["task"]["answer_scoring"], results["task"]["prompt_format"]
    rendering = "the tokenizer's chat template" if prompt_format["name"] == "chat" else "plain text"
    return f"prompts: {rendering} (--chat-template {prompt_format['chat_template']}); answers scored by: {scoring['mode']} ({scoring['reason']})"


def _heads_text(heads) -> str:
    return "all heads of the tunable layers" if heads is None else f"{len(heads)} heads"


def _string_list(text: str) -> tuple[str, ...]:
    items = tuple(item.strip() for item in text.split(","))
    if any(not item for item in items):
        raise argparse.ArgumentTypeError(f"expected comma-separated non-empty names, got {text!r}")
    return items


def _int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(item) for item in text.split(","))
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from error


def _int_ranges(text: str) -> tuple[int, ...]:
    """"0-3,8" -> (0, 1, 2, 3, 8)."""
    values: list[int] = []
    try:
        for item in text.split(","):
            first, _, last = item.partition("-")
            first, last = int(first), int(last or first)
            if last < first:
                raise ValueError(item)
            values.extend(range(first, last + 1))
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected layers like 0-9 or 0,2,4 (non-negative, ranges low-high), got {text!r}") from error
    return tuple(values)


def _mapping(text: str) -> dict[str, str]:
    pairs = [item.split("=", 1) for item in text.split(",")]
    if any(len(pair) != 2 or not pair[0].strip() or not pair[1].strip() for pair in pairs):
        raise argparse.ArgumentTypeError(f"expected source=split pairs like train=demo,validation=calibration, got {text!r}")
    return {source.strip(): target.strip() for source, target in pairs}


def _fractions(text: str) -> dict[str, float]:
    try:
        return {name: float(value) for name, value in _mapping(text).items()}
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected split=fraction pairs like demo=0.1,calibration=0.45,test=0.45, got {text!r}") from error


if __name__ == "__main__":
    sys.exit(main())
