"""``compare`` on two real lm-eval runs of a tiny model: the numbers of a direct computation, and refusals."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from scipy import stats

from zerotuning import Profile
from zerotuning.lm_eval import compare_runs, evaluate, find_run, format_comparison

from conftest import TASK_NAMES

TASKS = [TASK_NAMES["loglikelihood"], TASK_NAMES["generate_until"], TASK_NAMES["loglikelihood_rolling"]]
RESAMPLES = 2_000


@pytest.fixture(scope="module")
def runs(tmp_path_factory, task_dir):
    from scoring_support import tiny_lm, word_tokenizer

    root = tmp_path_factory.mktemp("runs")
    tokenizer = word_tokenizer()
    model = tiny_lm(tokenizer)
    for name, profile in (("neutral", Profile.neutral(model)), ("tuned", Profile.uniform(model, 4.0))):
        evaluate(model, tokenizer, profile, TASKS, include_path=str(task_dir), batch_size=4, log_samples=True, output_path=str(root / name))
    return root


def _samples(run_dir, task: str) -> dict[int, dict]:
    (path,) = run_dir.rglob(f"samples_{task}_*.jsonl")
    return {sample["doc_id"]: sample for sample in map(json.loads, path.read_text().splitlines())}


def _bootstrap(values: np.ndarray, resamples: int, seed: int) -> tuple[float, float]:
    """A percentile bootstrap written out here, independently of zerotuning.evaluation."""
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(resamples, len(values)))].mean(axis=1)
    return tuple(np.quantile(means, [0.025, 0.975]))


def test_comparison_equals_a_direct_computation(runs):
    comparison = compare_runs(find_run(runs / "neutral"), find_run(runs / "tuned"), resamples=RESAMPLES, seed=3)
    assert set(comparison["tasks"]) == set(TASKS)
    for task, metric in ((TASK_NAMES["loglikelihood"], "acc"), (TASK_NAMES["generate_until"], "exact_match")):
        neutral, tuned = _samples(runs / "neutral", task), _samples(runs / "tuned", task)
        doc_ids = sorted(neutral)
        a = np.array([neutral[d][metric] for d in doc_ids], dtype=float)
        b = np.array([tuned[d][metric] for d in doc_ids], dtype=float)
        row = comparison["tasks"][task]["metrics"][f"{metric},none"]
        assert comparison["tasks"][task]["samples"] == len(doc_ids)
        assert row["kind"] == "binary"
        assert row["a"]["estimate"] == pytest.approx(a.mean()) and row["b"]["estimate"] == pytest.approx(b.mean())
        assert row["difference"]["estimate"] == pytest.approx((b - a).mean())
        assert (row["difference"]["low"], row["difference"]["high"]) == pytest.approx(_bootstrap(b - a, RESAMPLES, 3))
        assert (row["a"]["low"], row["a"]["high"]) == pytest.approx(_bootstrap(a, RESAMPLES, 3))
        only_b, only_a = int(((b == 1) & (a == 0)).sum()), int(((a == 1) & (b == 0)).sum())
        test = row["mcnemar"]
        assert (test["only_second_correct"], test["only_first_correct"]) == (only_b, only_a)
        expected_p = 1.0 if only_a + only_b == 0 else stats.binomtest(min(only_a, only_b), only_a + only_b, 0.5).pvalue
        assert test["p_value"] == pytest.approx(expected_p)
    rolling = comparison["tasks"][TASK_NAMES["loglikelihood_rolling"]]
    assert rolling["metrics"] == {} and "word_perplexity,none" in rolling["not_compared"]
    table = format_comparison(comparison)
    assert "acc,none" in table and "not compared" in table


def test_the_runs_differ_somewhere(runs):
    """Otherwise the comparison above would check nothing but zeros."""
    task = TASK_NAMES["loglikelihood"]
    neutral, tuned = _samples(runs / "neutral", task), _samples(runs / "tuned", task)
    assert any(neutral[d]["filtered_resps"] != tuned[d]["filtered_resps"] for d in neutral)


def _copy(runs, name, tmp_path):
    return shutil.copytree(runs / name, tmp_path / name)


def _edit_samples(run_dir, task: str, edit) -> None:
    (path,) = run_dir.rglob(f"samples_{task}_*.jsonl")
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    path.write_text("".join(json.dumps(sample) + "\n" for sample in edit(lines)))


def test_runs_with_different_documents_are_refused_naming_the_files(runs, tmp_path):
    task = TASK_NAMES["loglikelihood"]
    dropped = _copy(runs, "tuned", tmp_path / "dropped")
    _edit_samples(dropped, task, lambda samples: samples[1:])
    with pytest.raises(ValueError, match=r"samples do not match: .*samples_zt_test_choice_.*has 12 .*has 11.*only in the first: \[\(0, 'none'\)\]"):
        compare_runs(find_run(runs / "neutral"), find_run(dropped))
    changed = _copy(runs, "tuned", tmp_path / "changed")

    def new_document(samples):
        samples[3]["doc_hash"] = "0" * 64
        return samples

    _edit_samples(changed, task, new_document)
    with pytest.raises(ValueError, match="doc_id 3 .*different doc_hash"):
        compare_runs(find_run(runs / "neutral"), find_run(changed))


def test_runs_of_different_tasks_or_without_samples_are_refused(runs, tmp_path, task_dir):
    from scoring_support import tiny_lm, word_tokenizer

    tokenizer = word_tokenizer()
    model = tiny_lm(tokenizer)
    other = tmp_path / "other"
    evaluate(model, tokenizer, Profile.neutral(model), [TASKS[0]], include_path=str(task_dir), log_samples=True, output_path=str(other))
    with pytest.raises(ValueError, match="evaluate different tasks"):
        compare_runs(find_run(runs / "neutral"), find_run(other))
    no_samples = tmp_path / "no_samples"
    evaluate(model, tokenizer, Profile.neutral(model), [TASKS[0]], include_path=str(task_dir), output_path=str(no_samples))
    with pytest.raises(FileNotFoundError, match="was the run written with --log_samples"):
        find_run(no_samples)
    with pytest.raises(ValueError, match="exactly one lm-eval results_"):
        find_run(tmp_path)  # holds two runs
    with pytest.raises(FileNotFoundError, match="no such results file"):
        find_run(tmp_path / "missing.json")
