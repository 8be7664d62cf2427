"""A launch record (``STATE.launching``) of a machine that RunComfy does not show yet (its
404 right after a launch, its listing's lag) is not taken for "nothing launched": a later
``machine down``/``up`` in a new process that drops it would leave that machine billing,
recorded nowhere, until its lease ends (review of 0d524e6)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from conjure_actors.clients.runcomfy import RunComfyClient
from conjure_actors.commands.machine import (
    PendingLaunch,
    launch_or_find,
    machine_action,
    pending_path,
    read_dev_machine,
    read_pending_launch,
    write_pending_launch,
)
from conjure_actors.config import Config, RunComfyConfig
from conjure_actors.domain.machines_policy import NOT_VISIBLE_GRACE
from conjure_actors.sim.runcomfy import RunComfyFaults
from tests.clients.test_client_runcomfy import BASE, TOKEN, USER, VERSION, open_client

CONFIG = Config(runcomfy=RunComfyConfig(workflow_version=VERSION))


def _args(action: str) -> argparse.Namespace:
    return argparse.Namespace(action=action, duration=3600.0, wait=600.0)


def _new_process(client: Any) -> RunComfyClient:
    """The same account seen by a new ``python -m conjure_actors machine ...`` (nothing in
    memory of the launch: no 404 grace for it)."""
    return RunComfyClient(BASE, USER, TOKEN, http=client._http)


class _ListingLags:
    """``GET /servers`` without the machines in ``hidden`` for the next ``lag`` seconds
    (RunComfy's listing lags a launch by up to NOT_VISIBLE_GRACE)."""

    def __init__(self, client: Any, hidden: set[str], lag: float = NOT_VISIBLE_GRACE) -> None:
        self._client = client
        self.hidden = hidden
        self.until = trio.current_time() + lag

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    async def list_servers(self) -> Any:
        listed = await self._client.list_servers()
        if trio.current_time() >= self.until:
            return listed
        return [s for s in listed if s.server_id not in self.hidden]


async def _killed_after_the_launch(client: Any, path: Path) -> str:
    """``machine up`` killed (SIGKILL, the terminal closed) right after POST /servers
    answered: its record holds the server's id; nothing else is on disk."""
    server, how = await launch_or_find(
        client,
        VERSION,
        "medium",
        3600,
        say=lambda text: None,
        record=lambda launch: write_pending_launch(path, launch),
    )
    assert how == "launched"
    pending = read_pending_launch(path)
    assert pending is not None
    assert pending.server_id == server.server_id
    return str(server.server_id)


async def test_down_right_after_a_killed_up_does_not_drop_a_machine_still_404(
    autojump_clock: trio.testing.MockClock,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """RunComfy answers 404 for a machine just launched (the client's not_found_grace):
    `machine down` from a new process took that for "no machine of it is up" and removed
    the record, the machine left billing with nothing that finds it."""
    path = tmp_path / "dev.json"
    async with open_client(faults=RunComfyFaults(not_found_polls_after_launch=3)) as (
        sim,
        client,
    ):
        sid = await _killed_after_the_launch(client, path)
        await trio.sleep(5)
        await machine_action(_args("down"), CONFIG, path, _new_process(client))
        assert sim.running() == [], f"machine {sid} left billing, its launch record removed"
    assert f"machine {sid} (launched by an interrupted `machine up`) stopped" in (
        capsys.readouterr().out
    )
    assert not pending_path(path).exists()


async def test_down_does_not_drop_a_marker_only_launch_not_listed_yet(
    autojump_clock: trio.testing.MockClock,
    tmp_path: Path,
) -> None:
    """The launch's answer lost (a ghost), `machine up` killed during the search: the record
    has the marker only. `machine down` seconds later, the listing not showing the new
    machine yet, removed the record: the machine billed unrecorded."""
    path = tmp_path / "dev.json"
    async with open_client(faults=RunComfyFaults(launch_ghost_rate=1.0)) as (sim, client):
        with trio.move_on_after(1):  # killed during the search for the ghost
            rc = _ListingLags(client, hidden=set())
            real = client.list_servers

            async def hide_new() -> Any:
                listed = await real()
                return [s for s in listed if s.server_id not in sim.running()]

            rc.list_servers = hide_new  # type: ignore[method-assign]
            await launch_or_find(
                rc,
                VERSION,
                "medium",
                3600,
                say=lambda text: None,
                record=lambda launch: write_pending_launch(path, launch),
            )
        (ghost,) = sim.running()
        pending = read_pending_launch(path)
        assert pending is not None
        assert pending.server_id is None
        sim.faults = RunComfyFaults()
        lagging = _ListingLags(_new_process(client), hidden={ghost})
        await machine_action(_args("down"), CONFIG, path, lagging)
        assert sim.running() == [], f"machine {ghost} left billing, its launch record removed"
    assert not pending_path(path).exists()


async def test_up_does_not_launch_a_second_machine_over_a_launch_still_landing(
    autojump_clock: trio.testing.MockClock,
    tmp_path: Path,
) -> None:
    """`machine up` again right after a killed one: its machine still 404 (or not listed),
    the record was removed and a second machine launched; the first billed unrecorded."""
    path = tmp_path / "dev.json"
    async with open_client(faults=RunComfyFaults(not_found_polls_after_launch=3)) as (
        sim,
        client,
    ):
        first = await _killed_after_the_launch(client, path)
        sim.faults = RunComfyFaults()
        assert await machine_action(_args("up"), CONFIG, path, _new_process(client)) == 0
        assert sim.running() == [first], "two machines up, the first recorded nowhere"
        recorded = read_dev_machine(path)
        assert recorded is not None
        assert recorded.server_id == first
        assert not pending_path(path).exists()


async def test_a_launch_record_older_than_the_landing_grace_is_dropped_when_not_found(
    autojump_clock: trio.testing.MockClock,
    tmp_path: Path,
) -> None:
    """The other side: a record whose launch is long past the landing grace and whose
    machine is nowhere goes (nothing of it will appear)."""
    path = tmp_path / "dev.json"
    async with open_client() as (sim, client):
        old = PendingLaunch(
            server_type="medium",
            workflow_version=VERSION,
            estimated_duration=3581,
            known_server_ids=[],
            requested_at=time.time() - 3600,
        )
        write_pending_launch(path, old)
        write_pending_launch(path, attrs.evolve(old, server_id="srv-never"))
        await machine_action(_args("down"), CONFIG, path, client)
        assert not pending_path(path).exists()
        assert sim.running() == []


async def test_a_launch_record_from_the_future_is_waited_for_no_longer_than_the_grace(
    autojump_clock: trio.testing.MockClock,
    tmp_path: Path,
) -> None:
    """The clock was set back since the record was written: `machine down` looks for its
    machine no longer than the landing grace, not until the record's time comes."""
    from conjure_actors.domain.machines_policy import LAUNCH_LAND_GRACE

    path = tmp_path / "dev.json"
    async with open_client() as (_sim, client):
        ahead = PendingLaunch(
            server_type="medium",
            workflow_version=VERSION,
            estimated_duration=3581,
            known_server_ids=[],
            requested_at=time.time() + 86_400,
        )
        write_pending_launch(path, ahead)
        with trio.fail_after(LAUNCH_LAND_GRACE + 30):
            await machine_action(_args("down"), CONFIG, path, client)
        assert not pending_path(path).exists()
