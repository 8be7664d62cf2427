"""``run`` as a subprocess against a simulated RunComfy account served on loopback: SIGTERM
and SIGHUP (the terminal closed) run the ordered shutdown: every machine stopped, unfinished
jobs left ``interrupted``, the documented exit code; ``run --resume`` from another directory
then runs them to the end."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import trio
from test_cmd_run_cloud import (  # kill_leftover_runs: an autouse fixture, used by name
    _crashes,
    _is,
    _state,
    kill_leftover_runs,  # noqa: F401
    served_cloud,
    start_run,
)

pytestmark = pytest.mark.slow


def _stopped_everything(state: object, cloud: object) -> list[str]:
    """Problems: a machine the log or the cloud still has running, no SystemStopped."""
    problems = []
    running = [
        m.server_id
        for m in state.machines.values()  # type: ignore[attr-defined]
        if m.kind == "runcomfy" and m.status != "stopped"
    ]
    if running:
        problems.append(f"the log has machines not stopped: {running}")
    if cloud.runcomfy.running():  # type: ignore[attr-defined]
        problems.append(f"the cloud still runs {cloud.runcomfy.running()}")  # type: ignore[attr-defined]
    if state.system.stop_reason is None:  # type: ignore[attr-defined]
        problems.append("no SystemStopped")
    return problems


async def test_sigterm_leaves_jobs_interrupted_and_resume_finishes_them(tmp_path: Path) -> None:
    """SIGTERM mid-run: exit 143, every machine stopped, jobs interrupted (not cancelled);
    ``run --resume LOG`` from another directory runs them to the end, its outputs where the
    run's went (the run's --out, recorded in the log: not the other directory's ./out)."""
    log = tmp_path / "r.log"
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    async with served_cloud() as cloud:
        run = await start_run(
            cloud, first, "--log", str(log), "--jobs", "2", "--set", "20.steps=200"
        )
        with trio.fail_after(60):
            await run.until(_is("exec.node_progress"))
        run.process.send_signal(signal.SIGTERM)
        with trio.fail_after(60):
            code = await run.finish()
        assert code == 128 + signal.SIGTERM, run.stderr.decode()
        state = _state(log)
        assert _stopped_everything(state, cloud) == []
        assert state.system.stop_reason == "terminated"
        assert {j.status for j in state.jobs.values()} == {"interrupted"}
        assert b"--resume" in run.stderr

        resumed = await start_run(cloud, second, "--resume", str(log))
        with trio.fail_after(120):
            code = await resumed.finish()
        assert code == 0, resumed.stderr.decode()
        state = _state(log)
        assert {j.status for j in state.jobs.values()} == {"succeeded"}
        assert _stopped_everything(state, cloud) == []
        assert _crashes(log) == []
        outputs = [p for p in (first / "out").glob("job-*/**/*") if p.is_file()]
        assert len(outputs) == 4, outputs
        assert not (second / "out").exists()


async def test_sighup_with_the_terminal_gone_stops_every_machine(tmp_path: Path) -> None:
    """The terminal closes (its pipes gone, then SIGHUP): exit 129, every machine stopped and
    logged, SystemStopped logged, the jobs left for --resume."""
    log = tmp_path / "r.log"
    async with served_cloud() as cloud:
        run = await start_run(
            cloud, tmp_path, "--log", str(log), "--jobs", "2", "--set", "20.steps=200"
        )
        with trio.fail_after(60):
            await run.until(_is("exec.node_progress"))
        await run.process.stdout.aclose()
        await run.process.stderr.aclose()
        run.process.send_signal(signal.SIGHUP)
        with trio.fail_after(60):
            code = await run.process.wait()
        assert code == 128 + signal.SIGHUP
        state = _state(log)
        assert _stopped_everything(state, cloud) == []
        assert state.system.stop_reason == "hangup"
        assert {j.status for j in state.jobs.values()} == {"interrupted"}
        assert _crashes(log) == []
