"""Why two first-rung keys of the budgeted search differ between the engines (docs/vllm.md, Tuning through vLLM).

    .venv-vllm/bin/python scripts/engine_rung_check.py --vllm-model FOLDER --out docs/results/engine_vllm/first_rung_check.json

Scores the budgeted search's first rung (the first 16 calibration examples of its seed-0 order) of
the built-in sentiment task on smollm2 under the two candidates whose keys differ, through both
engines, and records per candidate the largest difference of the answers' log-probabilities, of the
label-bias-calibrated ones, and the two objective keys (which add temperature scaling on 12 examples per fold).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from zerotuning.evaluation.out_of_fold import out_of_fold_label_bias
from zerotuning.models import load_model
from zerotuning.profile import Profile
from zerotuning.tasks.loader import TaskRequest, load_task
from zerotuning.tuning.experiment import RunSettings, Session
from zerotuning.vllm.scoring_engine import VllmOptions

RUNG_EXAMPLES = 16


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vllm-model", type=Path, required=True, help="a `zerotuning export` folder of smollm2")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    model, tokenizer = load_model("smollm2")
    task = load_task(TaskRequest("sentiment"))
    candidates = {"late layers 15-29, gamma 2": Profile.uniform(model, 2.0, layers=range(15, 30)), "all heads, gamma 2": Profile.uniform(model, 2.0)}
    scored = {}
    for engine, options in (("transformers", None), ("vllm", VllmOptions(model_folder=args.vllm_model))):
        session = Session(model, tokenizer, task, RunSettings(batch_size=None if options else 8), options)
        try:
            count = len(session.prepared.sets["calibration"].example_ids)
            order = np.random.default_rng(0).permutation(count)[:RUNG_EXAMPLES]  # budgeted.py: prefixes of one seeded order
            scored[engine] = {name: session.score_subset["calibration"](profile, order, name) for name, profile in candidates.items()}
            objective = session.objective
        finally:
            session.close()
    record = {"examples": RUNG_EXAMPLES, "candidates": {}}
    for name in candidates:
        first, second = scored["transformers"][name], scored["vllm"][name]
        record["candidates"][name] = {
            "max_answer_log_prob_difference": float(np.abs(first.vocab_log_probs() - second.vocab_log_probs()).max()),
            "max_label_bias_log_prob_difference": float(np.abs(out_of_fold_label_bias(first, objective.folds, objective.seed) - out_of_fold_label_bias(second, objective.folds, objective.seed)).max()),
            "key": {"transformers": list(objective.key(first)), "vllm": list(objective.key(second))},
        }
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
