"""Output folders and files: refused when they would mix or lose runs, replaced whole, never over an input."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from zerotuning import output_paths
from zerotuning.output_paths import OutputFiles, RunFolder, check_not_an_input, check_writable_parent, local_inputs


def _owns(name: str) -> bool:
    return name in {"a.json", "b.json"}


def _tree(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def _earlier_run(folder: Path) -> Path:
    folder.mkdir()
    (folder / "a.json").write_text("old a")
    (folder / "b.json").write_text("old b")
    return folder


def test_a_new_folder_appears_only_once_complete(tmp_path):
    out = RunFolder("--out", tmp_path / "sub" / "run", _owns)
    out.check()
    with out.writing() as staging:
        assert staging.parent == tmp_path / "sub" and staging.name.startswith(".run.") and not out.path.exists()
        (staging / "a.json").write_text("new a")
    assert _tree(out.path) == {"a.json": b"new a"} and os.listdir(tmp_path / "sub") == ["run"]


def test_an_empty_folder_is_used(tmp_path):
    (tmp_path / "run").mkdir()
    out = RunFolder("--out", tmp_path / "run", _owns)
    out.check()
    with out.writing() as staging:
        (staging / "a.json").write_text("new a")
    assert _tree(tmp_path / "run") == {"a.json": b"new a"} and os.listdir(tmp_path) == ["run"]


def test_a_non_empty_folder_is_refused_without_overwrite(tmp_path):
    earlier = _earlier_run(tmp_path / "run")
    with pytest.raises(FileExistsError, match=r"--out: '.*run' is not empty \(a.json, b.json\); .*--overwrite"):
        RunFolder("--out", earlier, _owns).check()
    with pytest.raises(FileExistsError, match="is not empty"), RunFolder("--out", earlier, _owns).writing():
        pytest.fail("writing must check the folder again")
    assert _tree(earlier) == {"a.json": b"old a", "b.json": b"old b"}


def test_overwrite_replaces_the_earlier_run_whole(tmp_path):
    earlier = _earlier_run(tmp_path / "run")
    out = RunFolder("--out", earlier, _owns, overwrite=True)
    out.check()
    with out.writing() as staging:
        (staging / "a.json").write_text("new a")
    # b.json was the earlier run's only: it does not survive beside the new files.
    assert _tree(earlier) == {"a.json": b"new a"} and os.listdir(tmp_path) == ["run"]


@pytest.mark.parametrize("foreign", ["notes.txt", "sub/"])
def test_overwrite_refuses_a_folder_holding_other_files(tmp_path, foreign):
    earlier = _earlier_run(tmp_path / "run")
    (earlier / "sub").mkdir() if foreign.endswith("/") else (earlier / foreign).write_text("mine")
    with pytest.raises(FileExistsError, match=rf"holds what this command does not write \({foreign.rstrip('/')}\); even with --overwrite"):
        RunFolder("--out", earlier, _owns, overwrite=True).check()


def test_a_file_is_refused_as_a_folder(tmp_path):
    (tmp_path / "run").write_text("x")
    with pytest.raises(NotADirectoryError, match="--out: '.*run' is a file; expected a folder"):
        RunFolder("--out", tmp_path / "run", _owns, overwrite=True).check()


@pytest.mark.parametrize("failure", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_a_failed_or_interrupted_run_leaves_the_earlier_folder(tmp_path, failure):
    earlier = _earlier_run(tmp_path / "run")
    with pytest.raises(type(failure)), RunFolder("--out", earlier, _owns, overwrite=True).writing() as staging:
        (staging / "a.json").write_text("half")
        raise failure
    assert _tree(earlier) == {"a.json": b"old a", "b.json": b"old b"} and os.listdir(tmp_path) == ["run"]
    with pytest.raises(type(failure)), RunFolder("--out", tmp_path / "new", _owns).writing() as staging:
        raise failure
    assert os.listdir(tmp_path) == ["run"]


def test_a_failed_swap_puts_the_earlier_folder_back(tmp_path, monkeypatch):
    earlier = _earlier_run(tmp_path / "run")
    real_rename = os.rename

    def rename(source, target):
        if Path(source).name.endswith(output_paths.INCOMPLETE_SUFFIX):
            raise OSError("rename failed")
        real_rename(source, target)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(OSError, match="rename failed"), RunFolder("--out", earlier, _owns, overwrite=True).writing() as staging:
        (staging / "a.json").write_text("new a")
    assert _tree(earlier) == {"a.json": b"old a", "b.json": b"old b"} and os.listdir(tmp_path) == ["run"]


def test_a_folder_filled_during_the_run_keeps_the_new_files_apart(tmp_path):
    out = RunFolder("--out", tmp_path / "run", _owns)
    out.check()
    with pytest.raises(FileExistsError, match=r"is not empty .*; this run's files were written to '.*run-[0-9a-f]{8}' instead"):
        with out.writing() as staging:
            (staging / "a.json").write_text("new a")
            _earlier_run(tmp_path / "run")  # another process, meanwhile
    kept = next(path for path in tmp_path.iterdir() if path.name.startswith("run-"))
    assert _tree(kept) == {"a.json": b"new a"} and _tree(tmp_path / "run") == {"a.json": b"old a", "b.json": b"old b"}


def test_outputs_equal_to_inside_or_holding_an_input_are_refused(tmp_path):
    data = tmp_path / "data" / "rows.jsonl"
    data.parent.mkdir()
    data.write_text("{}\n")
    model = tmp_path / "model"
    model.mkdir()
    inputs = local_inputs(**{"--task": data, "--model": model, "--profile": "someone/hub-id", "--also-generation": None})
    assert inputs == {"--task": data, "--model": model}
    for output, relation, option in [
        (data, "is", "--task"),
        (tmp_path / "data" / ".." / "data" / "rows.jsonl", "is", "--task"),
        (model / "eval.json", "is inside", "--model"),
        (tmp_path / "data", "holds", "--task"),
        (tmp_path, "holds", "--task"),
    ]:
        with pytest.raises(ValueError, match=rf"--out: '.*' {relation} the input {option} '.*'; expected an output apart"):
            check_not_an_input("--out", output, inputs)
    check_not_an_input("--out", tmp_path / "data" / "rows_eval.json", inputs)  # a sibling is fine
    (tmp_path / "link").symlink_to(model)
    with pytest.raises(ValueError, match="is inside the input --model"):
        check_not_an_input("--out", tmp_path / "link" / "eval.json", inputs)


def test_the_parent_must_be_a_writable_folder(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match=r"--out: '.*file/a/b' cannot be created: '.*file' is a file"):
        check_writable_parent("--out", tmp_path / "file" / "a" / "b")
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != tmp_path)  # (root may write anywhere)
    with pytest.raises(PermissionError, match=r"--out: '.*new/run' cannot be written: the folder '.*' is not writable"):
        check_writable_parent("--out", tmp_path / "new" / "run")
    with pytest.raises(PermissionError, match="is not writable"):
        RunFolder("--out", tmp_path / "run", _owns).check()


def _evaluation(tmp_path: Path, overwrite: bool) -> OutputFiles:
    return OutputFiles("--out", tmp_path / "eval.json", (tmp_path / "eval_predictions.json", tmp_path / "eval_generation.json"), overwrite)


def test_output_files_are_refused_when_any_exists_unless_overwrite(tmp_path):
    (tmp_path / "eval_predictions.json").write_text("old")
    with pytest.raises(FileExistsError, match=r"--out: '.*eval_predictions.json' already exists; expected new files, or give --overwrite"):
        _evaluation(tmp_path, overwrite=False).check()
    (tmp_path / "eval.json").mkdir()
    with pytest.raises(IsADirectoryError, match="--out: '.*eval.json' is a folder; expected a file name"):
        _evaluation(tmp_path, overwrite=True).check()


def test_output_files_replace_the_earlier_set_and_drop_its_stale_companion(tmp_path):
    for name in ("eval.json", "eval_predictions.json", "eval_generation.json"):
        (tmp_path / name).write_text("old")
    files = _evaluation(tmp_path, overwrite=True)
    files.check()
    with files.writing() as temporary:
        temporary(tmp_path / "eval_predictions.json").write_text("new predictions")
        temporary(tmp_path / "eval.json").write_text("new")
    assert _tree(tmp_path) == {"eval.json": b"new", "eval_predictions.json": b"new predictions"}


@pytest.mark.parametrize("failure", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_a_failed_write_of_output_files_keeps_the_earlier_set(tmp_path, failure):
    for name in ("eval.json", "eval_predictions.json"):
        (tmp_path / name).write_text("old")
    with pytest.raises(type(failure)), _evaluation(tmp_path, overwrite=True).writing() as temporary:
        temporary(tmp_path / "eval_predictions.json").write_text("half")
        raise failure
    assert _tree(tmp_path) == {"eval.json": b"old", "eval_predictions.json": b"old"}


def test_output_files_without_their_main_file_are_an_error(tmp_path):
    with pytest.raises(RuntimeError, match="--out: '.*eval.json' was not written"), _evaluation(tmp_path, False).writing() as temporary:
        temporary(tmp_path / "eval_predictions.json").write_text("new")
    assert os.listdir(tmp_path) == []


def test_a_linked_run_folder_is_written_at_the_link_target_and_the_link_kept(tmp_path):
    (tmp_path / "disk").mkdir()
    target = _earlier_run(tmp_path / "disk" / "run")
    (tmp_path / "link").symlink_to(target)
    out = RunFolder("--out", tmp_path / "link", _owns, overwrite=True)
    out.check()
    with out.writing() as staging:
        assert staging.parent == target.parent  # renamed in beside the target, on its file system
        (staging / "a.json").write_text("new a")
    assert (tmp_path / "link").is_symlink() and (tmp_path / "link").resolve() == target
    assert _tree(target) == {"a.json": b"new a"} and sorted(os.listdir(tmp_path / "disk")) == ["run"]
    with pytest.raises(FileExistsError, match=r"--out: '.*link' is not empty \(a.json\)"):
        RunFolder("--out", tmp_path / "link", _owns).check()


def test_a_dangling_link_gets_its_folder_made_where_it_points(tmp_path):
    (tmp_path / "disk").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "disk" / "run")
    out = RunFolder("--out", tmp_path / "link", _owns)
    out.check()
    with out.writing() as staging:
        (staging / "a.json").write_text("new a")
    assert _tree(tmp_path / "disk" / "run") == {"a.json": b"new a"} and (tmp_path / "link").is_symlink()


def test_a_link_loop_is_refused_before_any_work(tmp_path):
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    with pytest.raises(OSError, match=r"--out: '.*a' cannot be followed \(.*\); expected a path or a link to one"):
        RunFolder("--out", tmp_path / "a", _owns).check()
    with pytest.raises(OSError, match=r"--out: '.*a' cannot be followed"):
        OutputFiles("--out", tmp_path / "a", ()).check()
    assert sorted(os.listdir(tmp_path)) == ["a", "b"]


def test_linked_output_files_are_replaced_at_their_targets_and_the_links_kept(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    for name in ("eval.json", "eval_predictions.json"):
        (disk / name).write_text("old")
        (tmp_path / name).symlink_to(disk / name)
    files = _evaluation(tmp_path, overwrite=True)
    files.check()
    with files.writing() as temporary:
        assert temporary(tmp_path / "eval.json").parent == disk
        temporary(tmp_path / "eval_predictions.json").write_text("new predictions")
        temporary(tmp_path / "eval.json").write_text("new")
    assert _tree(disk) == {"eval.json": b"new", "eval_predictions.json": b"new predictions"}
    assert all((tmp_path / name).is_symlink() for name in ("eval.json", "eval_predictions.json"))
    assert (tmp_path / "eval.json").read_text() == "new"
