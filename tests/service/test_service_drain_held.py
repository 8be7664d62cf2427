"""serve stopped by a signal during start-up: the jobs a resumed log had running are left
for the next start (no actor runs them), so the stop's drain does not wait on them (it
waited ``--drain-timeout`` for nothing while the machines the reconcile adopted billed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import trio
from extras_support import open_extras_service, wait_for

import eventlog
from conjure_actors.commands.serve import _drain
from conjure_actors.domain import state as st
from conjure_actors.domain.events import Event

WORKFLOWS = Path(__file__).resolve().parents[2] / "conjure_actors" / "workflows"


async def test_the_drain_does_not_wait_on_running_jobs_held_at_start_up(
    tmp_path: Path, autojump_clock: Any
) -> None:
    graph = json.loads((WORKFLOWS / "slow_blur_chain.json").read_text())
    log = eventlog.MemoryLog(Event)
    with trio.fail_after(3600):
        async with (
            trio.open_nursery() as killed,  # cancelled: as after a kill -9
            open_extras_service(tmp_path, log=log) as run,
        ):
            await run.client.post("/api/v2/jobs", json={"workflow": graph})
            await wait_for(
                run.service, lambda s: any(j.status == st.RUNNING for j in s.jobs.values())
            )
            killed.cancel_scope.cancel()
        async with open_extras_service(tmp_path, log=log, hold_resumed=lambda: True) as run:
            (job,) = run.service.state.jobs.values()
            assert job.status == st.RUNNING  # left as the log has it, for the next start
            start = trio.current_time()
            with trio.move_on_after(30.0):  # serve's default --drain-timeout
                await _drain(run.service)
            assert trio.current_time() - start < 1.0
            assert run.service.state.jobs[job.job_id].status == st.RUNNING
