"""Where a command writes: checked before any work starts, never over an input, a run folder replaced whole.

A run folder (``tune --out``, ``probe-heads --out``) is written into a hidden sibling folder and
renamed into place once every file is in it, so a reader sees the earlier run or the new one,
never a mix, and an interrupted run leaves the earlier folder as it was. A non-empty folder is
refused unless ``overwrite``; even then a folder holding anything the command does not write is
refused, since replacing the folder would lose it. An output equal to, inside or holding one of
the command's inputs is refused whatever ``overwrite`` says. A symbolic link given as an output
is followed: its target is written (replaced whole, beside the target) and the link is kept.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from .atomic_files import sync_folder

INCOMPLETE_SUFFIX = ".incomplete"


def local_inputs(**named: str | Path | None) -> dict[str, Path]:
    """The named inputs that are local paths (a model name or hub id is no path); keys are option names."""
    return {option: Path(value) for option, value in named.items() if value is not None and Path(value).exists()}


def check_not_an_input(option: str, output: Path, inputs: Mapping[str, Path]) -> None:
    """Refuse ``output`` when it is an input, lies inside an input folder, or is a folder holding an input."""
    target = output.resolve()
    for input_option, path in inputs.items():
        source = path.resolve()
        if target == source:
            relation = "is"
        elif source in target.parents:
            relation = "is inside"
        elif target in source.parents:
            relation = "holds"
        else:
            continue
        raise ValueError(
            f"{option}: {str(output)!r} {relation} the input {input_option} {str(path)!r}; "
            "expected an output apart from every input (nothing is written over or into an input)"
        )


def followed(option: str, path: Path) -> Path:
    """``path`` absolute with its symbolic links followed (a dangling link: where it points); a link loop is refused."""
    try:
        os.path.realpath(path, strict=True)
    except FileNotFoundError:
        pass  # nothing there yet (or a link to a path not made yet): written where it points
    except OSError as error:
        raise OSError(f"{option}: {str(path)!r} cannot be followed ({error.strerror}); expected a path or a link to one") from None
    return Path(os.path.realpath(path))


def check_writable_parent(option: str, output: Path) -> None:
    """The folder that ``output`` will be created in (its nearest existing ancestor) must be a writable folder."""
    ancestor = output.absolute().parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise NotADirectoryError(f"{option}: {str(output)!r} cannot be created: {str(ancestor)!r} is a file, expected a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise PermissionError(f"{option}: {str(output)!r} cannot be written: the folder {str(ancestor)!r} is not writable")


@dataclass(frozen=True)
class RunFolder:
    """The output folder of one run of a command that writes the files ``owns`` accepts (by name)."""

    option: str
    path: Path
    owns: Callable[[str], bool]
    overwrite: bool = False

    def check(self, inputs: Mapping[str, Path] = {}) -> None:
        """Everything that can be checked before the run: call it before the model loads."""
        followed(self.option, self.path)  # first: a link loop cannot be resolved below
        check_not_an_input(self.option, self.path, inputs)
        self._check_contents()
        check_writable_parent(self.option, self._absolute)

    @contextlib.contextmanager
    def writing(self) -> Iterator[Path]:
        """Yields an empty hidden sibling folder to write into; on success it replaces ``path``, on failure it is deleted."""
        self._check_contents()  # again: the folder may have changed during the run
        self._absolute.parent.mkdir(parents=True, exist_ok=True)
        staging = self._sibling(INCOMPLETE_SUFFIX)
        staging.mkdir()
        try:
            yield staging
            self._move_into_place(staging)
        finally:
            if staging.exists():
                shutil.rmtree(staging)

    def _check_contents(self) -> None:
        if not self.path.exists():
            return
        shown = repr(str(self.path))
        if not self.path.is_dir():
            raise NotADirectoryError(f"{self.option}: {shown} is a file; expected a folder (a new one, or an earlier run's)")
        entries = sorted(os.listdir(self.path))
        if not entries:
            return
        if not self.overwrite:
            raise FileExistsError(
                f"{self.option}: {shown} is not empty ({_some(entries)}); expected a new or empty folder, "
                "or give --overwrite to replace an earlier run's files"
            )
        foreign = [name for name in entries if not (self.owns(name) and (self.path / name).is_file())]
        if foreign:
            raise FileExistsError(
                f"{self.option}: {shown} holds what this command does not write ({_some(foreign)}); even with "
                "--overwrite such a folder is not replaced: move those out or choose another folder"
            )

    def _move_into_place(self, staging: Path) -> None:
        try:
            self._check_contents()
        except OSError as error:  # something else wrote there during the run: keep this run's files apart
            kept = self._absolute.with_name(f"{self._absolute.name}-{uuid.uuid4().hex[:8]}")
            os.rename(staging, kept)
            raise type(error)(f"{error}; this run's files were written to {str(kept)!r} instead") from None
        target = self._absolute
        if not target.exists() or not any(target.iterdir()):
            os.replace(staging, target)  # a missing or empty folder is replaced in one rename
            sync_folder(target.parent)
            return
        # An earlier run's folder (only its own files, checked above): swap it out, swap the new one in.
        replaced = self._sibling(".replaced")
        os.rename(target, replaced)
        try:
            os.rename(staging, target)
        except BaseException:
            os.rename(replaced, target)
            raise
        sync_folder(target.parent)
        shutil.rmtree(replaced)

    @property
    def _absolute(self) -> Path:
        """The folder as an absolute path, links followed (renames need its real name and parent)."""
        return followed(self.option, self.path)

    def _sibling(self, suffix: str) -> Path:
        return self._absolute.with_name(f".{self._absolute.name}.{uuid.uuid4().hex[:12]}{suffix}")


@dataclass(frozen=True)
class OutputFiles:
    """Files one command writes side by side (``evaluate --out FILE`` and its predictions).

    Every new file is written to a temporary beside it first, so a failed write leaves the earlier
    files as they were. Then the earlier ``main`` is deleted, the companions renamed into place (an
    earlier companion this run does not write is deleted) and ``main`` renamed in last: an
    interruption in between leaves companions without ``main``, never ``main`` with another run's.
    """

    option: str
    main: Path
    companions: tuple[Path, ...]
    overwrite: bool = False

    def check(self, inputs: Mapping[str, Path] = {}) -> None:
        """Everything that can be checked before the run: call it before the model loads."""
        for path in (self.main, *self.companions):
            followed(self.option, path)  # first: a link loop cannot be resolved below
            check_not_an_input(self.option, path, inputs)
        self._check_existing()
        check_writable_parent(self.option, followed(self.option, self.main))

    @contextlib.contextmanager
    def writing(self) -> Iterator[Callable[[Path], Path]]:
        """Yields ``temporary(path)``: the file to write for the output ``path`` (``main`` must be written)."""
        self._check_existing()  # again: files may have appeared during the run
        targets = {path: followed(self.option, path) for path in (self.main, *self.companions)}  # links: their targets
        main = targets[self.main]
        main.parent.mkdir(parents=True, exist_ok=True)
        token = uuid.uuid4().hex[:12]
        temporaries = {path: target.with_name(f".{target.name}.{token}.tmp") for path, target in targets.items()}
        try:
            yield temporaries.__getitem__
            if not temporaries[self.main].is_file():
                raise RuntimeError(f"{self.option}: {str(self.main)!r} was not written")
            main.unlink(missing_ok=True)
            for path in self.companions:
                if temporaries[path].exists():
                    os.replace(temporaries[path], targets[path])
                else:
                    targets[path].unlink(missing_ok=True)
            os.replace(temporaries[self.main], main)
            sync_folder(main.parent)
        finally:
            for temporary in temporaries.values():
                temporary.unlink(missing_ok=True)

    def _check_existing(self) -> None:
        for path in (self.main, *self.companions):
            if path.is_dir():
                raise IsADirectoryError(f"{self.option}: {str(path)!r} is a folder; expected a file name")
        existing = [path for path in (self.main, *self.companions) if path.exists()]
        if existing and not self.overwrite:
            raise FileExistsError(
                f"{self.option}: {_some([repr(str(path)) for path in existing])} {'already exists' if len(existing) == 1 else 'already exist'}; "
                "expected new files, or give --overwrite to replace an earlier run's"
            )


def _some(names: list[str], shown: int = 5) -> str:
    listed = ", ".join(names[:shown])
    return f"{len(names)} entries: {listed}, ..." if len(names) > shown else listed
