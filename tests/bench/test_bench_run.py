"""bench/run.py's bare loop out of step does the same work as the plain one: the same
jobs, the same output files (only the order of its workers' steps differs)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import trio

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


async def _two_tasks(whole: object, names: tuple[str, str], steps: int) -> None:
    async def stepper() -> None:
        for _ in range(steps):
            await trio.lowlevel.checkpoint()

    whole.start()  # type: ignore[attr-defined]
    async with trio.open_nursery() as nursery:
        for name in names:
            nursery.start_soon(stepper, name=name)
    whole.stop()  # type: ignore[attr-defined]


def _counted(bench_run: object, names: tuple[str, str], steps: int) -> object:
    whole = bench_run.WholeThread()  # type: ignore[attr-defined]
    trio._core._run._r.seed(0)  # the scheduler's coin tosses alike in every run
    trio.run(_two_tasks, whole, names, steps, instruments=[whole])
    return whole


def test_whole_thread_counts_each_tasks_steps_and_the_schedulers_bytecodes(
    bench_run: object,
) -> None:
    """Two tasks of five checkpoints: six steps each (the last one ends the task), and the
    run loop's own bytecodes on the scheduler."""
    whole = _counted(bench_run, ("a", "b"), 5)
    assert whole.steps["a"] == whole.steps["b"] == 6  # type: ignore[attr-defined]
    assert whole.ops[bench_run.SCHEDULER] > 0  # type: ignore[attr-defined]
    assert whole.ops["a"] > 0  # type: ignore[attr-defined]
    assert whole.ops["b"] > 0  # type: ignore[attr-defined]


def test_whole_thread_does_not_count_its_own_hooks(bench_run: object) -> None:
    """A job's task name is folded (``<job>``) by a regular expression whose substitution
    calls back into Python: those bytecodes are the instrument's, not the run's."""
    # Warmed first: whatever a first run in the process does once (a cache filled, a
    # pattern compiled) is not what is compared (alone, this test read 6 bytecodes apart).
    _counted(bench_run, ("a", "b"), 5)
    _counted(bench_run, ("job-0a1b-submit", "job-2c3d-submit"), 5)
    plain = _counted(bench_run, ("a", "b"), 5)
    folded = _counted(bench_run, ("job-0a1b-submit", "job-2c3d-submit"), 5)
    assert folded.steps["<job>-submit"] == 12  # type: ignore[attr-defined]
    assert folded.total(folded.ops) == plain.total(plain.ops)  # type: ignore[attr-defined]


def _idle_of(bench_run: object, wait: object) -> object:
    counts = bench_run.Counts()  # type: ignore[attr-defined]

    async def main() -> None:
        counts.start()
        await wait()  # type: ignore[operator]
        counts.stop()

    trio.run(main, instruments=[counts])
    return counts


def test_counts_time_the_loop_idle_and_whether_a_worker_thread_was_in_flight(
    bench_run: object,
) -> None:
    """The idle rows of --counts: the loop blocked 20 ms on a worker thread (a durable
    write's) counts as idle with a thread in flight; blocked on a timer, as idle alone."""
    import functools
    import time

    on_thread = _idle_of(bench_run, functools.partial(trio.to_thread.run_sync, time.sleep, 0.02))
    assert on_thread.idle >= 0.015  # type: ignore[attr-defined]
    assert on_thread.idle_thread == on_thread.idle  # type: ignore[attr-defined]
    on_timer = _idle_of(bench_run, functools.partial(trio.sleep, 0.02))
    assert on_timer.idle >= 0.015  # type: ignore[attr-defined]
    assert on_timer.idle_thread == 0  # type: ignore[attr-defined]
