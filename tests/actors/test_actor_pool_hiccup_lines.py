"""serve's terminal during a RunComfy hiccup (QA F9): a listing that fails now and then is a
debug line each, said once when it lasts and once when it recovers; a stop RunComfy fails to
answer says once what happens while it is retried, without RunComfy's raw body."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import trio
import trio.testing
from test_actor_pool import Rig, pool_rig

from conjure_actors.actors.pool import POLL_FAILURES_SAID
from conjure_actors.clients.errors import RunComfyError
from conjure_actors.domain import events as ev

POOL_LOG = "conjure_actors.actors.pool"


def _failing_listings(rig: Rig) -> list[int]:
    """While the returned counter is above 0, each listing fails (an HTTP 500) and counts
    it down."""
    rc = rig.ctx.runcomfy
    real = rc.list_servers
    left = [0]

    async def list_servers() -> Any:
        if left[0] > 0:
            left[0] -= 1
            raise RunComfyError("RunComfy list servers answered HTTP 500: down", status=500)
        return await real()

    rc.list_servers = list_servers
    return left


async def _with_a_machine(rig: Rig) -> None:
    """A job holds a Ready machine: every poll lists the servers."""
    await rig.lease(await rig.job())


def _said(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


async def test_a_listing_hiccup_the_next_polls_recover_from_says_nothing(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Fewer failed listings in a row than POLL_FAILURES_SAID: no warning at all."""
    caplog.set_level(logging.DEBUG, logger=POOL_LOG)
    async with pool_rig(max_machines=1) as rig:
        await _with_a_machine(rig)
        left = _failing_listings(rig)
        left[0] = POLL_FAILURES_SAID - 1
        for _ in range(POLL_FAILURES_SAID + 1):
            await rig.poll()
    assert [line for line in _said(caplog) if "listing" in line] == []


async def test_a_lasting_listing_failure_is_said_once_and_its_recovery_once(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Ten failed listings in a row: one line when they start lasting, one when a listing
    answers again."""
    caplog.set_level(logging.DEBUG, logger=POOL_LOG)
    async with pool_rig(max_machines=1) as rig:
        await _with_a_machine(rig)
        left = _failing_listings(rig)
        left[0] = 10
        for _ in range(12):
            await rig.poll()
    lines = [line for line in _said(caplog) if "listing" in line]
    assert len(lines) == 2, lines
    assert f"failed {POLL_FAILURES_SAID} times in a row" in lines[0]
    assert "works again (after 10 failed listings)" in lines[1]


async def test_a_stop_retried_through_5xx_says_one_line_without_the_raw_body(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """RunComfy answers the stop 502 three times: one line naming the machine once, what
    RunComfy answers, how long it is retried and why; no JSON body; then it is stopped."""
    caplog.set_level(logging.DEBUG, logger=POOL_LOG)
    async with pool_rig(max_machines=1) as rig:
        await _with_a_machine(rig)
        rc = rig.ctx.runcomfy
        real = rc.stop
        failures = [3]

        async def stop(server_id: str, **kwargs: Any) -> Any:
            if failures[0] > 0:
                failures[0] -= 1
                raise RunComfyError(
                    f"RunComfy stop of server {server_id} answered HTTP 502: unavailable",
                    status=502,
                )
            return await real(server_id, **kwargs)

        rc.stop = stop
        await rig.stop_all()
        (server_id,) = [e.server_id for e in rig.events(ev.MachineStopped)]
    (line,) = [line for line in _said(caplog) if "stop" in line]
    said = f"RunComfy answers HTTP 502 to the stop of machine {server_id}; retrying for up to "
    assert line.startswith(said), line
    assert line.endswith(" s: it bills until stopped"), line
    assert "unavailable" not in line
