"""The README's "Writing your own property" example runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"


def _example() -> str:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Writing your own property", 1)[1]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    assert blocks, "the README section has no python example"
    return blocks[0]


@pytest.mark.slow
def test_readme_budget_property_runs() -> None:
    """The README's budget property is defined and passes."""
    namespace: dict[str, object] = {}
    exec(compile(_example(), str(README), "exec"), namespace)
    test = namespace["test_budget_caps_spending"]
    assert callable(test)
    test()
