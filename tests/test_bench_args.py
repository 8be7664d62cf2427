"""The benchmarks' argument types (bench/_mockrun.py): a count or number out of range is
one argparse line and exit 2, never a run that measures nothing or a traceback."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

# Last on the path: bench/eventlog.py must not shadow the eventlog package for later tests.
sys.path.append(str(Path(__file__).resolve().parent.parent / "bench"))

import _mockrun


@pytest.mark.parametrize(
    ("kind", "good", "bad"),
    [
        (_mockrun.positive_int, ["1", "300"], ["0", "-2", "1.5"]),
        (_mockrun.non_negative_int, ["0", "4"], ["-1", "x"]),
        (_mockrun.positive_number, ["0.5", "2"], ["0", "-1", "nan", "inf"]),
        (_mockrun.non_negative_number, ["0", "60"], ["-0.1", "nan", "inf"]),
    ],
)
def test_each_type_takes_its_range_and_refuses_the_rest(
    kind: Callable[[str], Any], good: list[str], bad: list[str]
) -> None:
    """In range: the value; out of range or not a number: an argparse error (exit 2)."""
    parser = argparse.ArgumentParser(exit_on_error=False)
    parser.add_argument("--x", type=kind)
    for text in good:
        assert parser.parse_args(["--x", text]).x == kind(text)
    for text in bad:
        with pytest.raises(argparse.ArgumentError):
            parser.parse_args(["--x", text])
