"""The recorded run files a results page is made from: never one in a hidden folder or file.

A run still being written lives in a hidden sibling (``.NAME.<random>.incomplete``) and an
interrupted ``--overwrite`` can leave ``.NAME.<random>.replaced`` behind (docs/outputs.md); the
page must show neither, and pathlib's globbing, unlike the shell's, matches hidden names.
"""

from __future__ import annotations

from pathlib import Path


def recorded(folder: Path, pattern: str, *, recursive: bool = False) -> list[Path]:
    """``folder.glob(pattern)`` (``rglob`` with ``recursive``), sorted, without paths with a hidden part below ``folder``."""
    found = folder.rglob(pattern) if recursive else folder.glob(pattern)
    return sorted(path for path in found if not any(part.startswith(".") for part in path.relative_to(folder).parts))
