"""A machine a restart finds gone with no stop of it in the log (``serve`` stopped it
without logging it, its disk full; or the run went down and it went otherwise): nothing
tells when its bill ended, so it is billed to when the restart found it gone and every
surface of the bill says "at most" (QA8 Q4: ``ledger_at_most`` was false, the bill called
exact, its overcharge growing with the downtime)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio
from extras_support import open_extras_service, wait_for

from conjure_actors.clock import TrioWallClock
from conjure_actors.commands import status
from conjure_actors.domain import state as st

WORKFLOWS = Path(__file__).resolve().parents[2] / "conjure_actors" / "workflows"
BODY = {"workflow": json.loads((WORKFLOWS / "slow_blur_chain.json").read_text())}
DOWN: float = 120.0
"""Seconds serve is down: its machine went meanwhile (a new simulated cloud has none)."""


async def _gone_while_down(tmp_path: Path) -> tuple[str, dict[str, Any]]:
    """A job runs on a machine, serve dies (no stop logged), and starts again ``DOWN`` s
    later on a cloud that no longer has the machine; its id and ``/api/conjure/costs``."""
    log, wall = str(tmp_path / "serve.log"), TrioWallClock()
    with trio.CancelScope() as killed:  # as a kill -9: nothing of the stop is logged
        async with open_extras_service(tmp_path, log=log, wall=wall) as run:
            r = await run.client.post("/api/v2/jobs", json=BODY)
            job_id = r.json()["id"]
            await wait_for(run.service, lambda s: s.jobs[job_id].status == st.RUNNING)
            (server_id,) = run.service.state.machines
            killed.cancel()
    await trio.sleep(DOWN)
    async with open_extras_service(tmp_path, log=log, wall=wall) as run:
        await wait_for(run.service, lambda s: s.machines[server_id].status == st.M_STOPPED)
        costs = (await run.client.get("/api/conjure/costs")).json()
    return server_id, costs


async def test_the_costs_of_a_machine_found_gone_with_no_stop_logged_say_at_most(
    tmp_path: Path, autojump_clock: Any
) -> None:
    """``/api/conjure/costs``: the machine's ``cost_at_most`` and the ledger's are true."""
    with trio.fail_after(3600):
        server_id, costs = await _gone_while_down(tmp_path)
    (machine,) = [m for m in costs["machines"] if m["id"] == server_id]
    assert machine["cost_at_most"] is True, machine
    assert costs["ledger_at_most"] is True


async def test_status_says_at_most_for_a_machine_found_gone_with_no_stop_logged(
    tmp_path: Path, autojump_clock: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """``status LOG``: the machine's cost and the total say "at most"."""
    with trio.fail_after(3600):
        server_id, _ = await _gone_while_down(tmp_path)
    capsys.readouterr()
    status._show_log(tmp_path / "serve.log")
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if f"machine {server_id}" in x)
    assert "stopped, at most $" in line, line
    assert "no stop of it in the log" in line, line
    assert "  cost: at most " in out, out
