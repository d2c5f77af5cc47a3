"""Every error a user can cause through the console script: exit code 2, one line on stderr naming the
option or file, no traceback; and what can be checked before the model loads is (a loader that fails
the test if called), what needs the model is checked before anything is scored."""

from __future__ import annotations

import importlib.util

import pytest
import transformers

import zerotuning.cli
import zerotuning.models
import zerotuning.tuning.experiment
from zerotuning.cli import main
from zerotuning.profile import Profile

from scoring_support import save_tiny_model_folder, sentiment_rows, write_jsonl
from tiny_models import tiny_model


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The tiny model folder and one file per kind of bad input, by name."""
    root = tmp_path_factory.mktemp("cli-errors")
    rows = sentiment_rows(40, seed=1)
    csv_lines = [f"{row['id']},{row['text']},{row['label']}\n" for row in rows]
    paths = {
        "model": save_tiny_model_folder(root / "tiny-llama"),
        "data": write_jsonl(sentiment_rows(64, seed=4), root / "reviews.jsonl"),
        "small": write_jsonl(sentiment_rows(6, seed=2), root / "small.jsonl"),
        "bools": write_jsonl([{**row, "label": row["label"] == "positive"} for row in rows], root / "bools.jsonl"),
        "comma": root / "comma.csv",
        "comma_first": root / "comma_first.csv",
        "latin": root / "latin.csv",
        "folder": root / "folder",
        "plain_file": root / "plain_file",
        "other_profile": root / "qwen2-profile.json",
        "bare_profile": root / "bare-profile.json",
        "bad_results": root / "results_2026-01-01T00-00-00.json",
        "busy": root / "busy",
    }
    paths["comma"].write_text("id,text,label\n" + "".join(csv_lines[:5]) + "n6,so bad, really,negative\n" + "".join(csv_lines[5:]), encoding="utf-8")
    paths["comma_first"].write_text("id,text,label\nn6,so bad, really,negative\n" + "".join(csv_lines), encoding="utf-8")
    paths["latin"].write_bytes(("id,text,label\n" + "".join(f"{row['id']},{row['text']} caf\xe9,{row['label']}\n" for row in rows)).encode("latin-1"))
    paths["folder"].mkdir()
    paths["busy"].mkdir()
    (paths["busy"] / "notes.txt").write_text("someone's notes\n", encoding="utf-8")
    paths["plain_file"].write_text("not a folder\n", encoding="utf-8")
    Profile.uniform(tiny_model("qwen2"), 2.0).save(paths["other_profile"])
    model = transformers.AutoModelForCausalLM.from_pretrained(paths["model"])
    Profile.uniform(model, 2.0).save(paths["bare_profile"])  # records no run: no shots, seed or task
    paths["bad_results"].write_bytes(b'{"configs": "caf\xe9"}')
    return {name: str(path) for name, path in paths.items()}


def _tune(*options: str) -> list[str]:
    return ["tune", "--model", "{model}", "--task", "{data}", "--out", "{folder}/never", *options]


# (case id, command line, what the one line must say). None of these may load the model.
BEFORE_THE_MODEL = [
    ("task-missing", ["tune", "--task", "{folder}/missing.jsonl"], "missing.jsonl' does not exist"),
    ("task-directory", ["tune", "--task", "{folder}"], "folder' is a directory"),
    ("csv-extra-field", ["tune", "--task", "{comma}"], "comma.csv', line 7: 4 fields"),
    ("csv-extra-field-first-and-wrong-text-column", ["tune", "--task", "{comma_first}", "--text-column", "txt"], "comma_first.csv', line 2: 4 fields"),
    ("boolean-labels", ["tune", "--task", "{bools}", "--labels", "negative,positive"], "bools.jsonl': row 0: label"),
    ("latin-1-file", ["tune", "--task", "{latin}"], "latin.csv' is not UTF-8"),
    ("wrong-text-column", ["tune", "--task", "{data}", "--text-column", "sentence"], "cannot tell the task kind"),
    ("split-map-without-column", _tune("--split-map", "train=demo"), "--split-column"),
    ("seed-negative", _tune("--seed", "-1"), "argument --seed: expected an integer >= 0, got -1"),
    ("shots-negative", _tune("--shots", "-2"), "argument --shots"),
    ("shots-too-many", _tune("--shots", "500"), "--shots: asked for 500"),
    ("batch-size-zero", _tune("--batch-size", "0"), "argument --batch-size"),
    ("bootstrap-zero", _tune("--bootstrap-resamples", "0"), "argument --bootstrap-resamples"),
    ("max-test-zero", _tune("--max-test", "0"), "argument --max-test"),
    ("folds-one", _tune("--folds", "1"), "argument --folds"),
    ("data-too-small-for-folds", ["tune", "--model", "{model}", "--task", "{small}"], "--folds: 5 folds need at least 5"),
    ("device-absent", _tune("--device", "cuda:99"), "argument --device"),
    ("device-unknown", _tune("--device", "abacus"), "argument --device"),
    ("layers-reversed", _tune("--layers", "3-1"), "argument --layers"),
    ("budget-zero", _tune("--budget", "0"), "argument --budget"),
    ("budget-nan", _tune("--budget", "nan"), "argument --budget"),
    ("budget-with-levels", _tune("--search", "levels", "--budget", "0.5"), "--budget: only used with --search budgeted"),
    ("gammas-without-levels", _tune("--gammas", "0.5,2"), "--gammas: only used with --search levels"),
    ("gammas-zero", _tune("--search", "levels", "--gammas", "0,2"), "argument --gammas"),
    ("gammas-one-side-with-level-2", _tune("--search", "levels", "--levels", "2", "--gammas", "1"), "--gammas: level 2"),
    ("fixed-gamma-infinite", _tune("--search", "levels", "--fixed-gamma", "inf"), "argument --fixed-gamma"),
    ("probe-gamma-zero", _tune("--search", "levels", "--probe-gamma", "0"), "argument --probe-gamma"),
    ("probe-gamma-one", ["probe-heads", "--model", "{model}", "--task", "{data}", "--probe-gamma", "1"], "argument --probe-gamma"),
    ("levels-unknown", _tune("--search", "levels", "--levels", "0,4"), "--levels"),
    ("fit-steps-without-level-3", _tune("--search", "levels", "--fit-steps", "3"), "--fit-steps: only used with level 3"),
    ("fit-prior-negative", _tune("--search", "levels", "--levels", "3", "--fit-prior", "-0.5"), "argument --fit-prior"),
    ("level-3-full-sequence", _tune("--search", "levels", "--levels", "3", "--answer-forms", "full_sequence"), "level 3 (--levels): needs answer-position scoring"),
    ("gradient-probes-full-sequence", _tune("--search", "levels", "--levels", "2", "--probes", "gradient", "--answer-forms", "full_sequence"), "--probes gradient: needs answer-position scoring"),
    ("tensor-parallel-without-vllm", _tune("--tensor-parallel-size", "2"), "--tensor-parallel-size: only used with --engine vllm, but --engine is 'transformers'"),
    ("vllm-model-without-vllm", _tune("--vllm-model", "{folder}"), "--vllm-model: only used with --engine vllm"),
    ("tensor-parallel-zero", _tune("--engine", "vllm", "--tensor-parallel-size", "0"), "argument --tensor-parallel-size"),
    ("unknown-option", _tune("--gamma", "2"), "unrecognized arguments: --gamma"),
    ("evaluate-profile-missing", ["evaluate", "--profile", "{folder}/nothing-here"], "--profile: "),
    ("evaluate-profile-folder-without-profile", ["evaluate", "--profile", "{folder}"], "folder' has no profile.json"),
    ("evaluate-profile-records-no-shots", ["evaluate", "--profile", "{bare_profile}", "--task", "{data}"], "--model is not given"),
    ("evaluate-seed-negative", ["evaluate", "--profile", "{bare_profile}", "--seed", "-1"], "argument --seed"),
    ("out-is-a-file", _tune("--out", "{plain_file}"), "--out: '{plain_file}' is a file"),
    ("out-not-empty", _tune("--out", "{busy}"), "--out: '{busy}' is not empty"),
    ("out-holds-an-input", _tune("--out", "{model}/.."), "holds the input"),
    ("evaluate-out-is-the-profile", ["evaluate", "--profile", "{other_profile}", "--model", "{model}", "--task", "{data}", "--shots", "0", "--seed", "0", "--out", "{other_profile}"], "--out: '{other_profile}' is the input --profile"),
    ("probe-heads-out-not-empty", ["probe-heads", "--model", "{model}", "--task", "{data}", "--out", "{busy}"], "--out: '{busy}' is not empty"),
    ("export-out-exists", ["export", "--model", "{model}", "--out", "{folder}"], "--out: "),
    ("export-profile-missing", ["export", "--model", "{model}", "--profile", "{folder}/none.json", "--out", "{folder}/new"], "--profile: "),
    ("lm-eval-task-latin-1", ["lm-eval-task", "--task", "{latin}", "--out", "{folder}/lm"], "latin.csv' is not UTF-8"),
    ("lm-eval-task-seed-negative", ["lm-eval-task", "--task", "{data}", "--seed", "-1", "--out", "{folder}/lm"], "argument --seed"),
    ("compare-not-utf-8", ["compare", "{bad_results}", "{bad_results}"], "results_2026-01-01T00-00-00.json' is not UTF-8"),
    ("compare-missing", ["compare", "{folder}/a", "{folder}/b"], "folder/a"),
]

# Cases that need the loaded model: refused right after it loads, before anything is scored.
AFTER_THE_MODEL = [
    ("layers-outside-the-model", _tune("--layers", "99"), "--layers: [99] are not layers of the model"),
    ("probe-layers-outside-the-model", ["probe-heads", "--model", "{model}", "--task", "{data}", "--layers", "0-5", "--out", "{folder}/p"], "--layers: [2, 3, 4, 5]"),
    ("evaluate-another-models-profile", ["evaluate", "--profile", "{other_profile}", "--model", "{model}", "--task", "{data}", "--shots", "0", "--seed", "0"], "profile is for qwen2"),
]


def _argv(template: list[str], files: dict) -> list[str]:
    return [part.format(**files) for part in template]


def _one_line(capsys) -> str:
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("zerotuning") and " error: " in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def quiet_loading():
    transformers.utils.logging.disable_progress_bar()
    yield
    transformers.utils.logging.enable_progress_bar()


def _refuse(*args, **kwargs):
    pytest.fail("the model was loaded before the input was checked")


@pytest.mark.parametrize("template, expected", [case[1:] for case in BEFORE_THE_MODEL], ids=[case[0] for case in BEFORE_THE_MODEL])
def test_refused_before_the_model_loads(files, template, expected, capsys, monkeypatch):
    monkeypatch.setattr(zerotuning.cli, "load_model", _refuse)
    monkeypatch.setattr(zerotuning.models, "load_model", _refuse)
    assert main(_argv(template, files)) == 2
    assert expected.format(**files) in _one_line(capsys)


@pytest.mark.parametrize("template, expected", [case[1:] for case in AFTER_THE_MODEL], ids=[case[0] for case in AFTER_THE_MODEL])
def test_refused_after_loading_before_scoring(files, template, expected, capsys, monkeypatch, quiet_loading):
    monkeypatch.setattr(zerotuning.tuning.experiment, "Session", _refuse_scoring)
    assert main(_argv(template, files)) == 2
    assert expected in _one_line(capsys)


def _refuse_scoring(*args, **kwargs):
    pytest.fail("scoring started before the model-dependent checks")


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is importable here (tests_vllm covers its refusals)")
def test_engine_vllm_without_vllm_is_refused_before_the_model_loads(files, capsys, monkeypatch):
    monkeypatch.setattr(zerotuning.cli, "load_model", _refuse)
    assert main(_argv(_tune("--engine", "vllm"), files)) == 2
    assert "--engine vllm: vllm is not importable in this Python" in _one_line(capsys)


def test_type_errors_from_the_glue_are_one_line_too(files, capsys, monkeypatch):
    def unpatchable(*args, **kwargs):
        raise TypeError("model: MadeUpForCausalLM has no attention interface;\nexpected a transformers decoder")

    monkeypatch.setattr(zerotuning.cli, "load_model", unpatchable)
    assert main(_argv(_tune(), files)) == 2
    assert _one_line(capsys) == "zerotuning tune: error: model: MadeUpForCausalLM has no attention interface; expected a transformers decoder"


def test_help_still_exits_zero(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["tune", "--help"])
    assert exit_info.value.code == 0 and "--task" in capsys.readouterr().out

