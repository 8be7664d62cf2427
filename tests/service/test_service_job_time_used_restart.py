"""serve restarted on its log (a deploy, a crash loop, systemd after an OOM) gives a job the
time it had left of ``retry.total_timeout``, not its whole time again: a job that used it
fails at the restart, before a machine is launched for it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio
from extras_support import open_extras_service, wait_for

import eventlog
from conjure_actors.clock import TrioWallClock
from conjure_actors.config import Config, RetryConfig
from conjure_actors.domain import events as ev
from conjure_actors.domain import state as st
from conjure_actors.domain.events import Event

WORKFLOWS = Path(__file__).resolve().parents[2] / "conjure_actors" / "workflows"
BODY = {"workflow": json.loads((WORKFLOWS / "invert_save.json").read_text())}
DAY = 86_400.0


@pytest.mark.slow  # (just test <= 30 s: CI and just check run it)
async def test_a_job_that_used_its_time_gets_no_machine_after_a_serve_restart(
    tmp_path: Path, autojump_clock: Any
) -> None:
    """1000 s waiting in the first serve, 600 s allowed in the next: failed at once."""
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    wall = TrioWallClock()  # one clock for both: the restart's time goes on
    with trio.fail_after(3 * DAY):
        first = Config(retry=RetryConfig(total_timeout=2100.0))
        async with open_extras_service(
            tmp_path, log=log, config=first, ready_delay=DAY, wall=wall, poll_interval=5.0
        ) as run:
            job_id = (await run.client.post("/api/v2/jobs", json=BODY)).json()["id"]
            await trio.sleep(1000.0)  # its machine boots for a day
        log.close()
        log = log.reopen()
        then = Config(retry=RetryConfig(total_timeout=600.0))
        async with open_extras_service(
            tmp_path, log=log, config=then, ready_delay=DAY, wall=wall, poll_interval=5.0
        ) as run:
            await wait_for(run.service, lambda s: s.jobs[job_id].status in st.TERMINAL_STATUSES)
            view = (await run.client.get(f"/api/v2/jobs/{job_id}")).json()
    events = [r.event for r in log.records()]
    restart = max(i for i, e in enumerate(events) if isinstance(e, ev.SystemStarted))
    assert [e for e in events[restart:] if isinstance(e, ev.MachineLaunchRequested)] == []
    assert view["status"] == "failed", view
    assert "retry.total_timeout" in view["error"]["message"]
