"""SIGTERM to ``serve`` while its journal holds appends on a full disk (or on a disk that
filled with no hold in progress yet): the machines are stopped within a second or two of the
signal, without the drain and without waiting for answers a refused event never gives (a
deploy's SIGKILL comes 10 s after its SIGTERM)."""

from __future__ import annotations

import functools
import signal
from pathlib import Path
from typing import Any

import pytest
import trio
from extras_support import Running, wait_for
from test_service_disk_full_hold import (
    FullDisk,
    _graph,
    _running_job_then_full,
    _serving,
    _stopped,
)

from conjure_actors.actors.conjure import RunStoppedError
from conjure_actors.commands import serve
from conjure_actors.domain import state as st
from conjure_actors.errgroups import meaningful


async def _sigterm(run: Running) -> None:
    """serve's answer to one SIGTERM: the drain, then every machine stopped."""
    send, receive = trio.open_memory_channel[int](1)
    send.send_nowait(signal.SIGTERM)
    await serve._stop_on_signals(
        receive,
        drain_timeout=30,
        stop_accepting=functools.partial(serve._stop_accepting, run.service),
        drain=functools.partial(serve._drain, run.service),
        shutdown=functools.partial(serve.shut_down, run.service),
        held=lambda: run.service.held_since is not None,
    )


async def _stopped_after_sigterm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fill: Any
) -> float:
    """``fill(run, disk)`` until the journal holds, then SIGTERM: the seconds from the
    signal until the cloud's last machine stopped (the cloud's own bill says when)."""
    seen: dict[str, Any] = {}

    async def body() -> None:
        async with _serving(tmp_path, monkeypatch, patience=600) as (run, disk):
            await fill(run, disk)
            assert run.cloud.runcomfy.running() != []
            seen["cloud"], seen["signalled"] = run.cloud, run.wall.now()
            await _sigterm(run)

    with trio.fail_after(3600):
        stopped = await _stopped(body)
    # Stopped without a log: serve ends with the full-disk stop's line.
    assert isinstance(meaningful(stopped), RunStoppedError), stopped
    runcomfy = seen["cloud"].runcomfy
    assert runcomfy.running() == []
    stopped: float = max(record.stopped_at for record in runcomfy.billing())
    return stopped - seen["signalled"]


async def test_a_sigterm_while_a_running_jobs_event_is_held_stops_the_machine_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, autojump_clock: Any
) -> None:
    """A running job's event held: its machine is stopped within 2 s of the SIGTERM (the
    shutdown waited 25 s for the job's interruption, which the disk refused)."""
    took = await _stopped_after_sigterm(tmp_path, monkeypatch, _running_job_then_full)
    assert took <= 2


async def _idle_machine_then_full(run: Running, disk: FullDisk) -> None:
    """A job succeeds; the disk fills as it ends: the runtime's next record is held."""
    r = await run.client.post("/api/v2/jobs", json={"workflow": _graph()})
    assert r.status_code == 201, r.text
    job_id = r.json()["id"]
    await wait_for(run.service, lambda state: state.jobs[job_id].status == st.SUCCEEDED)
    disk.full = True
    with trio.fail_after(600):
        while run.service.held_since is None:  # noqa: ASYNC110 - the journal has no event for it
            await trio.sleep(0.1)


async def test_a_sigterm_while_a_record_of_no_job_is_held_stops_the_machine_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, autojump_clock: Any
) -> None:
    """No job running, the runtime's own record held: the idle machine is stopped within
    2 s of the SIGTERM (the shutdown waited for the pool's answer, up to its stop patience
    plus 25 s: 10 minutes)."""
    took = await _stopped_after_sigterm(tmp_path, monkeypatch, _idle_machine_then_full)
    assert took <= 2


async def _idle_machine_then_full_unheld(run: Running, disk: FullDisk) -> None:
    """A job succeeds, its machine idles; the disk fills with nothing to write yet: no hold
    is in progress when the signal comes."""
    r = await run.client.post("/api/v2/jobs", json={"workflow": _graph()})
    assert r.status_code == 201, r.text
    job_id = r.json()["id"]
    await wait_for(run.service, lambda state: state.jobs[job_id].status == st.SUCCEEDED)
    await trio.sleep(5)
    disk.full = True
    assert run.service.held_since is None


async def test_a_sigterm_on_a_disk_full_with_no_hold_yet_stops_the_machine_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, autojump_clock: Any
) -> None:
    """The shutdown's first record is the pool's stop intent, refused: the idle machine is
    stopped within 2 s of the SIGTERM (the shutdown waited for the pool's answer for 10
    minutes, and the machine, never DELETEd, billed until its lease ran out)."""
    took = await _stopped_after_sigterm(tmp_path, monkeypatch, _idle_machine_then_full_unheld)
    assert took <= 2


async def test_the_line_of_a_sigterm_during_a_hold_says_no_drain(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, autojump_clock: Any, capsys: Any
) -> None:
    """The signal's line says the machines stop now, not that running jobs get the drain's
    seconds (QA8 Q3 saw "running jobs get 30 s to finish" during a hold)."""
    await _stopped_after_sigterm(tmp_path, monkeypatch, _running_job_then_full)
    err = capsys.readouterr().err
    assert "stopping: the disk of the log is full: no drain" in err, err
    assert "s to finish" not in err, err
