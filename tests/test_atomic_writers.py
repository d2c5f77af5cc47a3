"""Every writer of the package: a write that fails half-way leaves the earlier file(s) as they were, and no temporary."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib.pyplot as plt
import pytest

from zerotuning import ModelIdentity, Profile
from zerotuning.atomic_files import write_text_atomically
from zerotuning.lm_eval.task_export import export_task
from zerotuning.plots import _save as save_figure
from zerotuning.tasks import TaskRequest, load_task
from zerotuning.tuning.run_record import evaluation_files, write_evaluation

IDENTITY = ModelIdentity("llama", 2, 4, 2)


def _figure(value: float):
    figure, axes = plt.subplots()
    axes.plot([0, 1], [0, value])
    return figure


def _profile_save(folder: Path, version: int) -> None:
    Profile.uniform(IDENTITY, float(version)).save(folder / "profile.json")


def _profile_folder(folder: Path, version: int) -> None:
    Profile.uniform(IDENTITY, float(version)).save_pretrained(folder)  # profile.json and README.md, as a pair


def _plot(folder: Path, version: int) -> None:
    save_figure(_figure(version), folder / "metric_vs_gamma.png")


def _evaluation(folder: Path, version: int) -> None:
    results = {"test": {"version": version}, "predictions": [{"id": str(version)}]}
    write_evaluation(results, evaluation_files(folder / "evaluation.json", overwrite=True))


def _lm_eval_task(folder: Path, version: int) -> None:
    task = load_task(TaskRequest(source="capitals"))
    export_task(task, folder, name="capitals", overwrite=True)  # the same rows each time: the test checks the names


def _text(folder: Path, version: int) -> None:  # results.json, predictions.json, compare --out, the export record
    write_text_atomically(folder / "comparison.json", f'{{"version": {version}}}\n')


WRITERS = {"Profile.save": _profile_save, "Profile.save_pretrained": _profile_folder, "plots": _plot,
           "evaluate --out": _evaluation, "lm-eval-task": _lm_eval_task, "text": _text}


def _tree(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


@pytest.mark.parametrize("writer", WRITERS.values(), ids=WRITERS.keys())
def test_a_write_that_fails_half_way_keeps_the_earlier_files(tmp_path, monkeypatch, writer):
    writer(tmp_path, 1)
    before = _tree(tmp_path)
    assert before
    real_fsync = os.fsync
    written: list[int] = []

    def full_disk_after_the_first_file(descriptor):
        # The first file of a set is written in full (a pair must not end up half new), the next one fails;
        # a one-file writer fails on its only file. Either way the data is already in the temporary.
        if written or len(before) == 1:
            raise OSError(28, "No space left on device")
        written.append(descriptor)
        real_fsync(descriptor)

    monkeypatch.setattr(os, "fsync", full_disk_after_the_first_file)
    with pytest.raises(OSError, match="No space left on device"):
        writer(tmp_path, 2)
    monkeypatch.undo()
    assert _tree(tmp_path) == before  # byte for byte, and no temporary file beside them
    writer(tmp_path, 3)  # and the next write goes through
    assert set(_tree(tmp_path)) == set(before)


def test_a_plot_that_fails_while_rendering_keeps_the_earlier_png(tmp_path, monkeypatch):
    _plot(tmp_path, 1)
    before = _tree(tmp_path)
    from matplotlib.figure import Figure

    real_savefig = Figure.savefig

    def render_half(self, handle, **kwargs):
        handle.write(b"\x89PNG half")
        raise RuntimeError("renderer failed")

    monkeypatch.setattr(Figure, "savefig", render_half)
    with pytest.raises(RuntimeError, match="renderer failed"):
        _plot(tmp_path, 2)
    monkeypatch.setattr(Figure, "savefig", real_savefig)
    assert _tree(tmp_path) == before
