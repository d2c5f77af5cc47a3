"""docs/RESULTS.md is exactly what the generator makes from the committed run files."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_results_page_is_generated_from_the_committed_runs(tmp_path):
    page = tmp_path / "RESULTS.md"
    subprocess.run(
        [sys.executable, "scripts/make_results_md.py", "docs/results", "--out", str(page)],
        cwd=ROOT, check=True, capture_output=True,
    )
    # Links are relative to the page: written elsewhere, they start with another prefix.
    prefix = Path(os.path.relpath(ROOT / "docs" / "results", tmp_path)).as_posix()
    generated = page.read_text().replace(f"]({prefix}/", "](results/")
    assert generated == (ROOT / "docs" / "RESULTS.md").read_text()
