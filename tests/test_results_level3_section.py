"""The Level 3 section of docs/RESULTS.md, from real (tiny-model) run files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from scoring_support import save_tiny_model_folder, sentiment_rows, write_jsonl
from zerotuning.cli import main

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from results_md_level3 import is_level3_run  # noqa: E402

COMMON = ["--batch-size", "16", "--bootstrap-resamples", "200", "--gammas", "0.5,2"]


@pytest.fixture(scope="module")
def results_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("level3page")
    model = save_tiny_model_folder(root / "tiny-llama")
    data = write_jsonl(sentiment_rows(64, seed=4), root / "reviews.jsonl")
    folder = root / "results"
    assert main(["tune", "--model", str(model), "--task", str(data), "--search", "levels", "--levels", "0,1,2,3", "--probes", "gradient",
                 "--fit-steps", "3", "--fit-learning-rate", "0.3", "--out", str(folder / "level3" / "tiny-reviews-supervised"), *COMMON]) == 0
    assert main(["tune", "--model", str(model), "--task", str(data), "--search", "levels", "--levels", "0,1",
                 "--out", str(folder / "tiny-reviews-supervised"), *COMMON]) == 0
    return folder


def test_every_number_comes_from_the_run_files_and_level3_runs_stay_out_of_the_levels_tables(results_folder, tmp_path):
    page = tmp_path / "RESULTS.md"
    subprocess.run([sys.executable, "scripts/make_results_md.py", str(results_folder), "--out", str(page)], cwd=ROOT, check=True, capture_output=True)
    text = page.read_text()
    head, section = text.split("## Level 3 (fitted per-head gammas) and gradient-profiled Level 2")
    assert "level 3" not in head.lower().split("## runs")[0]  # the Levels 0-2 tables hold the other run only
    assert "Of 1 runs" in head  # the Levels 0-2 verdict counts the levels-only run alone
    results = json.loads((results_folder / "level3" / "tiny-reviews-supervised" / "results.json").read_text())
    assert is_level3_run(results)
    rows = section.splitlines()
    for name in ("0", "1", "2", "3"):
        calibrated = results["test_per_level"][name]["label_bias"]
        row = next(line for line in rows if line.startswith(f"| | | | {name}"))
        accuracy = calibrated["accuracy"]
        assert f"{100 * accuracy['estimate']:.1f} [{100 * accuracy['low']:.1f}, {100 * accuracy['high']:.1f}]" in row
        assert f"p={calibrated['vs_baseline_label_bias']['mcnemar']['p_value']:.2g}" in row
        stage = results["cost"]["stages"][f"level{name}"]
        assert f"| {stage['forward_passes']} / {stage['backward_passes']} |" in row
    assert "(selected)" in next(line for line in rows if line.startswith(f"| | | | {results['tuning']['selected_level']}"))
    fit = results["tuning"]["levels"]["3"]["fit"]
    fit_row = next(line for line in rows if line.startswith("| ") and f"| {fit['steps_run']} ({fit['steps']}) | {fit['best_step']} |" in line)
    assert f"{fit['peak_rss_mib']:.0f} |" in fit_row
    assert "significantly better in" in section and "Selected by the calibration rule" in section
    assert "[fitted_gammas.png](" in text
