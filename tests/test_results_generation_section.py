"""The generation section of docs/RESULTS.md, from real (tiny-model) generation and collateral run files."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from generation_support import arithmetic_rows, save_generation_model_folder

from scoring_support import sentiment_rows, write_jsonl
from zerotuning.cli import main

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from results_md_generation import generation_section  # noqa: E402

COMMON = ["--batch-size", "16", "--bootstrap-resamples", "200", "--max-new-tokens", "4"]


@pytest.fixture(scope="module")
def results_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("genpage")
    model = save_generation_model_folder(root / "tiny-chat")
    generation = write_jsonl(arithmetic_rows(40), root / "sums.jsonl")
    classification = write_jsonl(sentiment_rows(40, seed=1), root / "reviews.jsonl")
    folder = root / "results"
    assert main(["tune", "--model", str(model), "--task", str(generation), "--search", "levels", "--levels", "0,1", "--gammas", "0.5,2",
                 "--out", str(folder / "generation" / "tiny-sums-supervised"), *COMMON]) == 0
    profile = root / "cls"
    assert main(["tune", "--model", str(model), "--task", str(classification), "--search", "levels", "--levels", "0", "--fixed-gamma", "3",
                 "--batch-size", "16", "--bootstrap-resamples", "200", "--out", str(profile)]) == 0
    assert main(["evaluate", "--profile", str(profile), "--also-generation", str(generation), "--max-generation-test", "9", *COMMON,
                 "--out", str(folder / "collateral" / "tiny-reviews-supervised.json")]) == 0
    return folder


def test_every_number_comes_from_the_run_files(results_folder, tmp_path):
    page = tmp_path / "RESULTS.md"
    text = "\n".join(generation_section(results_folder, page, []))
    tuned = json.loads((results_folder / "generation" / "tiny-sums-supervised" / "results.json").read_text())
    row = next(line for line in text.splitlines() if "| sums | supervised |" in line)
    test = tuned["test"]
    for measure in ("contains", "exact_match", "degenerate"):
        baseline, new = test["methods"]["baseline"][measure], test["methods"]["tuned"][measure]
        assert f"{100 * baseline['estimate']:.1f} [{100 * baseline['low']:.1f}, {100 * baseline['high']:.1f}] -> {100 * new['estimate']:.1f}" in row
        assert f"p {test['tuned_vs_baseline'][measure]['mcnemar']['p_value']:.3g}" in row
    assert f"{test['tuned_vs_baseline']['reference_log_likelihood']['difference']['estimate']:+.2f}" in row
    assert f"| {tuned['splits']['calibration']} / {tuned['splits']['test']} |" in row

    collateral = json.loads((results_folder / "collateral" / "tiny-reviews-supervised.json").read_text())
    row = next(line for line in text.splitlines() if line.startswith("| tiny-reviews-supervised |"))
    assert "gamma 3 on all" in row and f"| sums ({collateral['also_generation']['test']['examples']}) |" in row
    contains = collateral["also_generation"]["test"]["tuned_vs_baseline"]["contains"]["difference"]
    assert f"{100 * contains['estimate']:+.1f} [{100 * contains['low']:+.1f}, {100 * contains['high']:+.1f}]" in row
    assert "Collateral damage (1 profile tuned" in text and "Tuned on the generation task itself (1 run)" in text
    assert "--max-generation-test 9" in text
    assert "[tiny-reviews-supervised.json](" in text and "[results.json](" in text


def test_no_section_without_generation_runs_and_a_wrong_file_is_refused(results_folder, tmp_path):
    assert generation_section(tmp_path, tmp_path / "RESULTS.md", []) == []
    broken = tmp_path / "broken"
    shutil.copytree(results_folder / "collateral", broken / "collateral")
    (broken / "collateral" / "other.json").write_text(json.dumps({"model": {}}))
    with pytest.raises(SystemExit, match="other.json: no also_generation field"):
        generation_section(broken, broken / "RESULTS.md", [])


def test_the_page_generator_keeps_generation_runs_out_of_the_classification_tables(results_folder, tmp_path):
    page = tmp_path / "RESULTS.md"
    completed = subprocess.run([sys.executable, "scripts/make_results_md.py", str(results_folder), "--out", str(page)], cwd=ROOT, capture_output=True, text=True)
    # Only generation runs: the classification loader finds none and says so, rather than misreading them.
    assert completed.returncode != 0 and "no */results.json found" in completed.stderr
