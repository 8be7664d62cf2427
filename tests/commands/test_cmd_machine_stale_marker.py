"""A launch record left by a `machine up` whose lost launch started nothing (kept: "it may
bill") must not match, much later, another machine of the account that happens to carry
the same marker (type, version, estimated_duration: 1 in 59 for the pool's own launches of
the same lease): `machine down` stopped it, `machine up` adopted it as the dev machine
(review of 0d524e6)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pytest
import trio
import trio.testing

from conjure_actors.clients.errors import LaunchError, TransportError
from conjure_actors.clock import TrioWallClock
from conjure_actors.commands.machine import machine_action, pending_path, read_pending_launch
from conjure_actors.config import Config, RunComfyConfig
from conjure_actors.sim.runcomfy import RunComfyFaults
from tests.clients.test_client_runcomfy import VERSION, open_client

CONFIG = Config(runcomfy=RunComfyConfig(workflow_version=VERSION))


def _args(action: str) -> argparse.Namespace:
    return argparse.Namespace(action=action, duration=3600.0, wait=600.0)


async def test_down_hours_later_does_not_stop_another_machine_with_the_same_marker(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    path = tmp_path / "dev.json"
    # RunComfy's clock is this machine's (the record's requested_at is time.time()).
    wall = TrioWallClock(epoch=time.time())
    wall.now()  # from now on
    async with open_client(faults=RunComfyFaults(launch_reject_rate=1.0), wall=wall) as (
        sim,
        client,
    ):
        # The launch answered 500 and started nothing: the search gives up, the record stays.
        with pytest.raises(LaunchError):
            await machine_action(_args("up"), CONFIG, path, client)
        assert sim.running() == []
        pending = read_pending_launch(path)
        assert pending is not None
        sim.faults = RunComfyFaults()
        await trio.sleep(6 * 3600)
        # Another machine of the account (a run's pool, same lease): the same marker.
        other = await client.launch(VERSION, "medium", pending.estimated_duration)
        await client.wait_until_ready(other.server_id, interval=5)
        await machine_action(_args("down"), CONFIG, path, client)
        assert sim.running() == [other.server_id], "another machine stopped by a stale marker"
    assert not pending_path(path).exists()


async def test_down_minutes_later_still_stops_the_interrupted_launchs_machine(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """The other side: the machine the lost launch did start, found by its marker well
    after the grace (it billed meanwhile), is still stopped."""
    path = tmp_path / "dev.json"
    wall = TrioWallClock(epoch=time.time())
    wall.now()  # from now on
    async with open_client(faults=RunComfyFaults(launch_ghost_rate=1.0), wall=wall) as (
        sim,
        client,
    ):
        real = client.list_servers
        listings = 0

        async def failing_after_the_first() -> object:
            nonlocal listings
            listings += 1
            if listings > 1:
                raise TransportError("GET /servers: connection reset")
            return await real()

        client.list_servers = failing_after_the_first  # type: ignore[method-assign]
        with pytest.raises(LaunchError):
            await machine_action(_args("up"), CONFIG, path, client)
        del client.list_servers
        (ghost,) = sim.running()
        sim.faults = RunComfyFaults()
        await trio.sleep(20 * 60)
        await machine_action(_args("down"), CONFIG, path, client)
        assert ghost not in sim.running()
    assert not pending_path(path).exists()
