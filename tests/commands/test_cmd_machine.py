"""``machine up|status|down`` against a simulated RunComfy account on loopback; ``run``
attaches to the dev machine while it is alive."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import pytest
import trio

import eventlog
from conjure_actors.domain.events import Event
from conjure_actors.domain.state import apply, initial_state
from conjure_actors.sim.cloud import CloudTimings
from conjure_actors.sim.runcomfy import RunComfyFaults, RunComfyTimings
from conjure_actors.sim.serve import ServedCloud, serve_cloud

pytestmark = pytest.mark.slow


@asynccontextmanager
async def served() -> AsyncIterator[ServedCloud]:
    timings = CloudTimings(
        runcomfy=RunComfyTimings(ready_delay=0.5, deleting_delay=0.2, rate_per_second=20, burst=20)
    )
    async with trio.open_nursery() as nursery:
        cloud: ServedCloud = await nursery.start(partial(serve_cloud, timings=timings, seed=9))
        yield cloud
        nursery.cancel_scope.cancel()


async def _cli(cloud: ServedCloud, cwd: Path, *args: str) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNCOMFY_", "CONJURE_"))}
    env.update(
        RUNCOMFY_API_BASE_URL=cloud.base_url,
        RUNCOMFY_USER_ID=cloud.user_id,
        RUNCOMFY_API_TOKEN=cloud.token,
        CONJURE_DEV_STATE_FILE=str(cwd / "dev.json"),
        CONJURE_POOL_POLL_INTERVAL="0.2",
    )
    with trio.fail_after(90):
        proc = await trio.run_process(
            [sys.executable, "-m", "conjure_actors", *args],
            cwd=cwd,
            env=env,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    return proc.returncode, proc.stdout.decode(), proc.stderr.decode()


async def test_dev_machine_up_run_attaches_down(tmp_path: Path) -> None:
    """machine up records a Ready machine (0600, no URL printed); run uses it without
    launching; machine down stops it and the state file goes away."""
    async with served() as cloud:
        code, out, err = await _cli(
            cloud, tmp_path, "machine", "up", "--workflow-version", "wv-conjure-flux-mesh-1"
        )
        assert code == 0, err
        state_file = tmp_path / "dev.json"
        assert state_file.stat().st_mode & 0o777 == 0o600
        assert "127.0.0.1" not in out.replace(cloud.base_url, "")
        code, out, err = await _cli(cloud, tmp_path, "machine", "status")
        assert code == 0, err
        assert "Ready" in out
        code, out, err = await _cli(
            cloud,
            tmp_path,
            "run",
            "--json",
            "--log",
            "r.log",
            "--workflow-version",
            "wv-conjure-flux-mesh-1",
        )
        assert code == 0, err
        state = eventlog.fold(eventlog.read(tmp_path / "r.log", Event), apply, initial_state())
        kinds = {m.kind for m in state.machines.values()}
        assert kinds == {"dev"}
        assert [j.status for j in state.jobs.values()] == ["succeeded"]
        assert len(cloud.runcomfy.billing()) == 1
        assert cloud.runcomfy.running() != []
        code, out, err = await _cli(cloud, tmp_path, "machine", "down")
        assert code == 0, err
        assert "stopped" in out
        assert not state_file.exists()
        assert cloud.runcomfy.running() == []


def test_machine_without_credentials_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without RunComfy credentials, machine up says what to set (one line, exit 2)."""
    from conjure_actors.cli import main

    for name in list(os.environ):
        if name.startswith(("RUNCOMFY_", "CONJURE_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    assert main(["machine", "up"]) == 2
    err = capsys.readouterr().err
    assert "RUNCOMFY_USER_ID" in err
    assert err.count("\n") == 1


async def test_machine_up_with_a_lost_launch_answer_adopts_the_machine(tmp_path: Path) -> None:
    """The launch answered 502 after RunComfy launched (a ghost): `machine up` finds the
    machine by listing, waits until it is Ready and records it; `machine down` stops it, so
    nothing bills unrecorded."""
    async with served() as cloud:
        cloud.runcomfy.faults = RunComfyFaults(launch_ghost_rate=1.0)
        code, out, err = await _cli(
            cloud, tmp_path, "machine", "up", "--workflow-version", "wv-conjure-flux-mesh-1"
        )
        assert code == 0, err
        assert "looking for the machine it may have started" in out
        (billed,) = cloud.runcomfy.billing()
        assert f"dev machine {billed.server_id} is Ready; recorded" in out
        cloud.runcomfy.faults = RunComfyFaults()
        code, out, err = await _cli(cloud, tmp_path, "machine", "down")
        assert code == 0, err
        assert f"dev machine {billed.server_id} stopped" in out
        assert cloud.runcomfy.running() == []
