"""bench/run.py's bare loop out of step does the same work as the plain one: the same
jobs, the same output files (only the order of its workers' steps differs)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent.parent / "bench"


@pytest.fixture
def bench_run(monkeypatch: pytest.MonkeyPatch) -> object:
    # Last on the path: bench/eventlog.py must not shadow the eventlog package.
    monkeypatch.setattr(sys, "path", [*sys.path, str(BENCH)])
    monkeypatch.setattr(sys, "argv", sys.argv[:1])
    import run

    return run


@pytest.mark.slow
def test_the_bare_loop_out_of_step_writes_the_same_outputs(
    bench_run: object, tmp_path: Path
) -> None:
    """Eight jobs on three machines (after one untimed job each), plain and out of step: the
    same files, byte for byte."""
    written = []
    for out_of_step in (False, True):
        out = tmp_path / str(out_of_step)
        out.mkdir()
        bench_run.run_on_mock(  # type: ignore[attr-defined]
            bench_run._bare_overhead,  # type: ignore[attr-defined]
            8,
            3,
            out,
            None,
            False,
            out_of_step,
        )
        written.append(
            {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
        )
    assert len(written[0]) == 8 + 3
    assert written[0] == written[1]
