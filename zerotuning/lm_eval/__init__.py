"""ZeroTuning in lm-evaluation-harness (the optional extra: ``pip install 'zerotuning[lm-eval]'``).

* ``ZeroTuningLM(model, tokenizer, profile, ...)``: lm-eval's own HF model class (``HFLM``) on a
  loaded model, with the profile applied during its requests and the BOS as the sink in every row.
* ``evaluate(model, tokenizer, profile, tasks, **options)``: ``lm-eval run`` on that model, with
  lm-eval's options, tasks, metrics and output files.
* ``export_task(task, out_dir)``: a zerotuning task as an lm-eval task (YAML + JSONL).
* ``find_run`` / ``compare_runs`` / ``format_comparison``: the paired comparison of two runs
  written with ``log_samples``.

The first two need lm-eval; the others read and write plain files. See docs/lm_eval.md.
"""

from importlib import import_module

_EXPORTS = {
    "ZeroTuningLM": "model",
    "evaluate": "harness",
    "export_task": "task_export",
    "find_run": "compare",
    "compare_runs": "compare",
    "format_comparison": "compare",
}


def __getattr__(name: str):
    # Imported on first use: lm-eval (and transformers under it) take seconds to import, and are
    # not needed by the file-only functions.
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = list(_EXPORTS)
