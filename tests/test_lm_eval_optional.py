"""The lm-eval commands without the lm-eval extra: help works, ``lm-eval`` names the install command,
and task export and run comparison need no lm-eval (tests_lm_eval/ tests them with lm-eval)."""

from __future__ import annotations

import importlib.util

import pytest

from zerotuning.cli import main


@pytest.mark.parametrize("command", ["lm-eval", "lm-eval-task", "compare"])
def test_help_answers_without_lm_eval(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: zerotuning " + command in capsys.readouterr().out


def test_lm_eval_command_names_the_extra_to_install(monkeypatch, capsys):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *rest: None if name == "lm_eval" else real_find_spec(name, *rest))
    assert main(["lm-eval", "--neutral-profile", "--tasks", "anything"]) == 2
    assert "pip install 'zerotuning[lm-eval]'" in capsys.readouterr().err


def test_task_export_and_comparison_import_without_lm_eval(tmp_path, capsys):
    from zerotuning.lm_eval import compare_runs, export_task  # noqa: F401  (no lm_eval import behind them)

    assert main(["lm-eval-task", "--task", "capitals", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "zerotuning_capitals.yaml").read_text().startswith("# lm-eval task exported by zerotuning")
    assert main(["compare", str(tmp_path), str(tmp_path)]) == 2
    assert "expected a folder with exactly one lm-eval results_*.json, found none" in capsys.readouterr().err
