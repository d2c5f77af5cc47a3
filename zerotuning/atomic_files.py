"""Writing a file so that readers see the old content or the new, never a truncated mix."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
    """Yields a temporary path beside ``path``; on success it replaces ``path``, on failure it is deleted.

    The temporary file lives in the same folder, so the final ``os.replace`` is one rename on one file system.
    """
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        yield temporary
        os.replace(temporary, path)
        sync_folder(path.absolute().parent)
    finally:
        temporary.unlink(missing_ok=True)


def sync_folder(folder: str | Path) -> None:
    """Flush a folder's entries (a rename into it) to disk, where the platform can (not on Windows)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:  # some file systems refuse fsync on a folder; the rename itself is done
        pass
    finally:
        os.close(descriptor)


def write_text_atomically(path: str | Path, text: str) -> Path:
    """Write ``text`` as UTF-8 to ``path`` through ``replacing``; returns the path."""
    path = Path(path)
    with replacing(path) as temporary:
        with open(temporary, "x", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
    return path
