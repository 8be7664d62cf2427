"""A launch in flight when the log ended (kill -9, a power cut, a lost POST answer) is
matched against the account's servers by its marker (type, version, estimated_duration):
the first listing of a resumed process shows every server "for the first time", so only
what the servers say can rule one out (QA session 29, H9).

- A server Ready before the launch was asked for is not its machine: it was adopted, used,
  and stopped (another client's machine, stopped under it).
- Two servers that echo the marker: neither is adopted, said once (it was said at every
  listing for the landing grace), and the launch closes naming both with the command that
  stops the one that is ours ("no server found" while two were found; ours billed on,
  named nowhere)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from actor_support import crash_while_running, open_test_cloud, run_conjure, sim_config
from test_actor_pool import Rig, pool_rig
from test_actor_pool_resume_cut_log import _rewritten

import eventlog
from conjure_actors.clock import TrioWallClock
from conjure_actors.domain import events as ev
from conjure_actors.domain.events import Event

_BODY = b'{"workflow_version_id": "v1", "server_type": "medium", "estimated_duration": 583}'


async def _intent_in_flight(rig: Rig, key: str = "k1", marker: int = 583) -> None:
    """A launch intent as a crashed run left it: logged, its POST's outcome unknown to
    this process (nothing of it was listed by this process before)."""
    await rig.ctx.emit(
        ev.MachineLaunchRequested(
            request_key=key,
            server_type="medium",
            workflow_version="v1",
            estimated_duration=marker,
            at=rig.ctx.now(),
        )
    )


async def test_a_server_ready_before_the_launch_was_asked_for_is_not_adopted_for_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Another client's machine echoing marker 583 has been Ready for minutes when an
    intent of ours asking for 583 is logged; this process lists the account only after
    that. It was adopted (the lone match) and the idle timeout stopped it."""
    async with pool_rig(idle_timeout=30.0, lease_seconds=600.0) as rig:
        foreign = rig.sim._launch(_BODY)["server_id"]
        await trio.sleep(240)  # Ready at 60 s, listed by nobody
        await _intent_in_flight(rig)
        await rig.poll()
        await trio.sleep(300)
        assert foreign not in rig.state.machines
        assert foreign in rig.sim.running()
        assert rig.state.launch_requests == {}


async def test_two_servers_echoing_a_launch_in_flight_are_named_and_neither_adopted(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Ours and another client's both echo the marker: neither is adopted (nor stopped),
    the ambiguity is said once, and the launch's failure names both with the command that
    stops one, as does ``pool.unknown_listed`` (run's summary) and the log."""
    async with pool_rig(idle_timeout=30.0, lease_seconds=600.0) as rig:
        await _intent_in_flight(rig)
        ours = rig.sim._launch(_BODY)["server_id"]
        theirs = rig.sim._launch(_BODY)["server_id"]
        with caplog.at_level(logging.WARNING):
            await rig.poll()
            await trio.sleep(300)
        assert rig.state.launch_requests == {}
        assert {ours, theirs} <= set(rig.sim.running())
        assert ours not in rig.state.machines
        assert theirs not in rig.state.machines
        named = {u.server_id for u in rig.pool.unknown_listed}
        logged = {e.server_id for e in rig.events(ev.MachineUnknownListed)}
        (failed,) = rig.events(ev.MachineLaunchFailed)
    said = [r for r in caplog.records if "all match it; adopting none" in r.getMessage()]
    assert len(said) == 1
    reason = failed.reason
    assert reason.startswith("2 servers matched; not provably ours")
    assert ours in reason
    assert theirs in reason
    assert "machine down --server-id" in reason
    assert named == {ours, theirs}
    assert logged == {ours, theirs}


@pytest.mark.slow
async def test_a_resume_whose_launch_in_flight_two_servers_echo_adopts_neither_and_names_both(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """Crash while the prompt runs, the log cut right after its launch intent; another
    client launched a machine with the same marker. The resume adopts neither (nor stops
    either), the launch closes naming both, and both are kept for run to name."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    async with open_test_cloud(wall.now) as cloud:
        config = sim_config(cloud)
        await crash_while_running(cloud, log, tmp_path, config, wall)
        (ours,) = cloud.running()
        intent = next(r for r in log.records() if isinstance(r.event, ev.MachineLaunchRequested))
        body = {
            "workflow_version_id": intent.event.workflow_version,
            "server_type": intent.event.server_type,
            "estimated_duration": intent.event.estimated_duration,
        }
        theirs = cloud.runcomfy._launch(json.dumps(body).encode())["server_id"]
        log = _rewritten(log, lambda r: r.seq <= intent.seq)
        resumed_at = log.last_seq
        async with run_conjure(cloud, log, tmp_path, config, wall) as conjure:
            with trio.fail_after(3600):
                await conjure.wait_until_idle()
            named = {u.server_id for u in conjure.pool.unknown_listed}
        assert {ours, theirs} <= set(cloud.running())
    after = [r.event for r in log.records() if r.seq > resumed_at]
    adopted = [e.server_id for e in after if isinstance(e, ev.MachineAdopted)]
    assert ours not in adopted
    assert theirs not in adopted
    (failed,) = [e for e in after if isinstance(e, ev.MachineLaunchFailed)]
    assert failed.request_key == intent.event.request_key
    assert failed.reason.startswith("2 servers matched; not provably ours")
    assert named == {ours, theirs}
