"""The chat-template section of docs/RESULTS.md, from real (tiny-model) tuning runs with and without the template."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from generation_support import save_generation_model_folder

from scoring_support import sentiment_rows, write_jsonl
from zerotuning.cli import main

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from make_results_md import load_runs  # noqa: E402
from results_md_chat_template import chat_template_section  # noqa: E402


@pytest.fixture(scope="module")
def results_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("chatpage")
    model = save_generation_model_folder(root / "tiny-chat")
    data = write_jsonl(sentiment_rows(40, seed=1), root / "reviews.jsonl")
    folder = root / "results"
    for template in ("off", "on"):
        assert main(["tune", "--model", str(model), "--task", str(data), "--search", "levels", "--levels", "0", "--fixed-gamma", "3",
                     "--batch-size", "16", "--bootstrap-resamples", "200", "--chat-template", template,
                     "--out", str(folder / "chat_template" / f"tiny-reviews-{template}")]) == 0
    # One ordinary run beside them: the chat-template runs stay out of the main tables.
    assert main(["tune", "--model", str(model), "--task", str(data), "--search", "levels", "--levels", "0", "--batch-size", "16",
                 "--bootstrap-resamples", "200", "--out", str(folder / "tiny-reviews-supervised")]) == 0
    return folder


def test_every_number_comes_from_the_run_files(results_folder, tmp_path):
    text = "\n".join(chat_template_section(results_folder, tmp_path / "RESULTS.md"))
    for template, prompts in (("off", "plain"), ("on", "chat template")):
        results = json.loads((results_folder / "chat_template" / f"tiny-reviews-{template}" / "results.json").read_text())
        methods = results["test"]["methods"]
        row = next(line for line in text.splitlines() if line.startswith(f"| {results['model']['load']['spec']} | reviews | {prompts} |"))
        baseline, calibrated = methods["baseline"]["accuracy"], methods["baseline+label_bias"]["accuracy"]
        assert f"| {100 * baseline['estimate']:.1f} [{100 * baseline['low']:.1f}, {100 * baseline['high']:.1f}] |" in row
        assert f"| {100 * calibrated['estimate']:.1f} [{100 * calibrated['low']:.1f}, {100 * calibrated['high']:.1f}] |" in row
        comparison = results["test"]["comparisons"]["tuned+label_bias vs baseline+label_bias"]
        assert f"{100 * comparison['accuracy_difference']['estimate']:+.1f}" in row and f"{comparison['mcnemar']['p_value']:.3g}" in row
        assert f"| {results['task']['prompt_tokens']['test']['mean']:.0f} |" in row and "gamma 3 on every head" in row
    assert text.index("| reviews | plain |") < text.index("| reviews | chat template |")
    assert "- reviews: plain: untouched" in text and "; chat template: untouched" in text
    assert "--task TASK --objective supervised --chat-template off|on` with the default (budgeted) search, for reviews;" in text
    assert "also differ in" not in text


def test_a_pair_that_differs_in_more_than_the_template_says_so(results_folder):
    from results_md_chat_template import load_chat_template_runs, verdict_lines

    runs = load_chat_template_runs(results_folder)
    runs[1]["results"]["settings"] = {**runs[1]["results"]["settings"], "shots": 2}
    assert verdict_lines(runs)[0].endswith("(the two runs also differ in shots).")
    assert verdict_lines(runs[:1])[0].endswith("(no chat run here).")


def test_chat_template_runs_stay_out_of_the_main_tables(results_folder):
    assert [run["name"] for run in load_runs(results_folder)] == ["tiny-reviews-supervised"]


def test_runs_being_written_or_left_by_an_interruption_stay_off_the_page(results_folder, tmp_path):
    import shutil

    from results_md_chat_template import load_chat_template_runs

    folder = shutil.copytree(results_folder, tmp_path / "results")
    shutil.copytree(folder / "tiny-reviews-supervised", folder / ".tiny-reviews-supervised.0123456789ab.incomplete")
    shutil.copytree(folder / "chat_template" / "tiny-reviews-on", folder / "chat_template" / ".tiny-reviews-on.0123456789ab.replaced")
    assert [run["name"] for run in load_runs(folder)] == ["tiny-reviews-supervised"]
    assert [run["name"] for run in load_chat_template_runs(folder)] == ["tiny-reviews-off", "tiny-reviews-on"]
