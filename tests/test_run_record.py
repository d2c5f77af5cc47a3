"""The run record (what a profile says about its run, read back by `evaluate`) and atomic writes."""

from __future__ import annotations

import json
import os
import stat

import pytest

from zerotuning import ModelIdentity, Profile
from zerotuning.atomic_files import replacing, write_text_atomically
from zerotuning.tasks import SplitPlan, TaskRequest
from zerotuning.tuning.run_record import RECORD_KEY, RecordedRun, evaluation_files, write_evaluation

IDENTITY = ModelIdentity("llama", 2, 4, 2)


def test_a_recorded_run_gives_its_settings_unless_an_option_overrides_them(tmp_path):
    request = TaskRequest(source="/data/reviews.jsonl", labels=("negative", "positive"), splits=SplitPlan(seed=3))
    record = {"level": 2, "gamma": 1.25, "model": "/models/tiny", "task_request": request.to_json(), "shots": 1, "seed": 3}
    path = Profile(IDENTITY, Profile.neutral(IDENTITY).gammas, {RECORD_KEY: record}).save(tmp_path / "profile.json")
    recorded = RecordedRun.of(Profile.load(path), path)
    assert recorded.setting("model", None) == "/models/tiny" and recorded.setting("model", "smollm2") == "smollm2"
    assert (recorded.setting("shots", None), recorded.setting("seed", None), recorded.setting("seed", 0)) == (1, 3, 0)
    assert recorded.task_request() == request
    assert recorded.describe() == "level 2, gamma 1.25"


def test_a_profile_made_by_hand_names_what_it_does_not_record(tmp_path):
    path = Profile.neutral(IDENTITY).save(tmp_path / "hand.json")
    recorded = RecordedRun.of(Profile.load(path), path)
    with pytest.raises(ValueError, match=r"--model is not given and the profile '.*hand.json' records none"):
        recorded.setting("model", None)
    with pytest.raises(ValueError, match="--task is not given and the profile '.*hand.json' records no task"):
        recorded.task_request()
    assert recorded.describe() == "level ?, gamma ?"


def test_an_evaluation_is_written_with_its_predictions_beside_it(tmp_path):
    results = {"test": {"examples": 1}, "predictions": [{"id": "a", "answer": 1}]}
    write_evaluation(results, evaluation_files(tmp_path / "sub" / "evaluation.json", overwrite=False))
    assert json.loads((tmp_path / "sub" / "evaluation.json").read_text(encoding="utf-8")) == {"test": {"examples": 1}}
    assert json.loads((tmp_path / "sub" / "evaluation_predictions.json").read_text(encoding="utf-8")) == [{"id": "a", "answer": 1}]


def test_a_failed_write_keeps_the_previous_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    profile_path = Profile.neutral(IDENTITY).save(tmp_path / "profile.json")
    before = profile_path.read_bytes()

    def full_disk(descriptor):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space left"):
        Profile.uniform(IDENTITY, 2.0).save(profile_path)
    with pytest.raises(OSError, match="No space left"):
        write_evaluation({"test": {}, "predictions": []}, evaluation_files(tmp_path / "profile.json", overwrite=True))
    assert profile_path.read_bytes() == before
    assert sorted(path.name for path in tmp_path.iterdir()) == ["profile.json"]


def test_replacing_removes_its_temporary_when_the_writer_fails(tmp_path):
    target = tmp_path / "plot.png"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="writer failed"), replacing(target) as temporary:
        temporary.write_bytes(b"half")
        raise RuntimeError("writer failed")
    assert target.read_bytes() == b"old" and sorted(tmp_path.iterdir()) == [target]
    with replacing(target) as temporary:
        temporary.write_bytes(b"new")
    assert target.read_bytes() == b"new" and sorted(tmp_path.iterdir()) == [target]


def test_atomic_writes_are_utf8_with_the_usual_permissions(tmp_path):
    path = write_text_atomically(tmp_path / "note.json", '"café"\n')
    assert path.read_bytes() == '"café"\n'.encode("utf-8")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
