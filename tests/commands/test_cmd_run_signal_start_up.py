"""``run`` as a subprocess, signalled as soon as it prints its banner (before or while it
opens its log, replays and reconciles): it does not die at the signal's default action but
stops once start-up is done, every machine stopped, the documented exit code."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

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
from test_cmd_run_signals import _stopped_everything

import eventlog
from conjure_actors.domain.events import Event, MachineLaunchRequested, SystemStarted

pytestmark = pytest.mark.slow


def _launches_since_the_last_start(log: Path) -> int:
    """The launches asked for since the log's last SystemStarted (the last run's)."""
    launches = 0
    for record in eventlog.read(log, Event):
        if isinstance(record.event, SystemStarted):
            launches = 0
        elif isinstance(record.event, MachineLaunchRequested):
            launches += 1
    return launches


async def test_sigterm_at_the_banner_of_a_resume_stops_its_machines(tmp_path: Path) -> None:
    """A resumed run (its jobs would relaunch during start-up) SIGTERMed at its banner: exit
    143, SystemStopped 'terminated', no machine launched for its jobs (a paid start the stop
    would only stop), every machine stopped, the jobs still left for --resume."""
    log = tmp_path / "r.log"
    async with served_cloud() as cloud:
        run = await start_run(
            cloud, tmp_path, "--log", str(log), "--jobs", "2", "--set", "20.steps=200"
        )
        with trio.fail_after(60):
            await run.until(_is("exec.node_progress"))
        run.process.send_signal(signal.SIGTERM)
        with trio.fail_after(60):
            assert await run.finish() == 128 + signal.SIGTERM, run.stderr.decode()

        resumed = await start_run(cloud, tmp_path, "--resume", str(log))
        with trio.fail_after(60):
            await resumed.until(_is("run.banner"))
        resumed.process.send_signal(signal.SIGTERM)
        with trio.fail_after(60):
            code = await resumed.finish()
        assert code == 128 + signal.SIGTERM, resumed.stderr.decode()
        assert b"terminated: " in resumed.stderr
        state = _state(log)
        assert _stopped_everything(state, cloud) == []
        assert state.system.stop_reason == "terminated"
        assert {j.status for j in state.jobs.values()} == {"interrupted"}
        assert _launches_since_the_last_start(log) == 0
        assert b"--resume" in resumed.stderr
        assert _crashes(log) == []


async def test_sigint_at_the_banner_of_a_fresh_run_exits_130_with_the_log_closed(
    tmp_path: Path,
) -> None:
    """Ctrl-C at the banner of a fresh run: exit 130 (no KeyboardInterrupt traceback), no
    machine left running, and the log ends with SystemStopped 'interrupted' (or, when the
    signal came before the run recorded a job or a machine, there is no log: nothing to
    resume, and the same command runs again)."""
    log = tmp_path / "r.log"
    async with served_cloud() as cloud:
        run = await start_run(cloud, tmp_path, "--log", str(log))
        with trio.fail_after(60):
            await run.until(_is("run.banner"))
        run.process.send_signal(signal.SIGINT)
        with trio.fail_after(60):
            code = await run.finish()
        assert code == 128 + signal.SIGINT, run.stderr.decode()
        assert b"Traceback" not in run.stderr
        assert b"interrupted: " in run.stderr
        if not log.exists():
            assert cloud.runcomfy.running() == []
            return
        state = _state(log)
        assert _stopped_everything(state, cloud) == []
        assert state.system.stop_reason == "interrupted"


async def test_sigint_while_runcomfy_does_not_answer_stops_a_fresh_run_at_once(
    tmp_path: Path,
) -> None:
    """A fresh run whose RunComfy refuses connections retries its start-up listing (2, 4,
    8, 16 s apart): Ctrl-C then stops it at once, nothing being launched yet, exit 130, no
    log left, and the summary says there is none."""
    import socket
    from types import SimpleNamespace

    with socket.socket() as sock:  # a loopback port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    nowhere: Any = SimpleNamespace(base_url=f"http://127.0.0.1:{port}", user_id="u", token="t")
    log = tmp_path / "r.log"
    run = await start_run(nowhere, tmp_path, "--log", str(log))
    with trio.fail_after(60):
        await run.until_stderr(b"start-up: listing servers failed")
    run.process.send_signal(signal.SIGINT)
    with trio.fail_after(10):  # the retries alone would take 30 s more
        summary = await run.until(_is("run.summary"))
        code = await run.finish()
    assert code == 128 + signal.SIGINT, run.stderr.decode()
    assert b"interrupted: stopping now (nothing was launched yet)" in run.stderr
    assert not log.exists()
    assert b"log: none" in run.stderr
    assert summary["log"] is None
