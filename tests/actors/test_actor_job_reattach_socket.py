"""A prompt re-attached after a restart is followed over a WebSocket under the client id it
was submitted with (ComfyUI sends a prompt's frames only to that id's socket): its progress
reaches the log again. P3: if the dead process's socket handler still lives on the server,
the new socket goes deaf once that handler ends; the job still ends right, by polling."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from actor_support import (
    crash_when,
    crash_while_running,
    open_test_cloud,
    run_conjure,
    sim_config,
    wait_for,
)

import eventlog
from conjure_actors.clock import TrioWallClock
from conjure_actors.domain import events as ev
from conjure_actors.domain.events import Event
from conjure_actors.sim.comfyui import ComfyTimings

WORKFLOWS = Path(__file__).parents[2] / "conjure_actors" / "workflows"
SLOW = ComfyTimings(scale=200.0)


def _submitting(log: eventlog.MemoryLog[Any]) -> list[ev.PromptSubmitting]:
    return [r.event for r in log.records() if isinstance(r.event, ev.PromptSubmitting)]


@pytest.mark.slow
async def test_a_reattached_prompts_progress_reaches_the_log(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """After the restart the job's node progress is logged as the prompt runs (before, the
    machine's new socket, under a fresh id, got none of it: nothing until the end)."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    async with open_test_cloud(wall.now, timings=SLOW) as cloud:
        config = sim_config(cloud, max_machines=1)
        job = await crash_while_running(cloud, log, tmp_path, config, wall)
        log = log.reopen()
        before = len(list(log.records()))
        async with run_conjure(cloud, log, tmp_path, config, wall) as conjure:
            with trio.fail_after(7200):
                await conjure.wait_until_idle()
            state = conjure.state
    after = [r.event for r in list(log.records())[before:]]
    progress = [e for e in after if isinstance(e, ev.NodeProgress | ev.NodeStarted)]
    assert state.jobs[job].status == "succeeded", state.jobs[job].error
    assert state.jobs[job].attempt == 1
    assert progress, "no progress logged for the re-attached prompt"
    assert all(e.job_id == job for e in progress)


@pytest.mark.slow  # ~0.2 s or more: the inner loop runs without it, CI with it
async def test_a_reattach_socket_silenced_by_the_old_handler_still_ends_right(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """The dead process's socket (client id C) still open on the server when the job
    re-attaches under C; it closes a minute later, which silences the new socket (P3): the
    job still succeeds on attempt 1, its prompt run once, by polling ``/history``."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    async with open_test_cloud(wall.now, timings=SLOW) as cloud:
        config = sim_config(cloud, max_machines=1)
        job = await crash_while_running(cloud, log, tmp_path, config, wall)
        log = log.reopen()
        (submitted,) = _submitting(log)
        sim = cloud.machine_sim(submitted.server_id)
        async with trio.open_nursery() as nursery:
            old = await sim.connect_ws_in_memory(nursery, f"/ws?clientId={submitted.client_id}")
            old_conn = sim._conns[submitted.client_id]
            async with run_conjure(cloud, log, tmp_path, config, wall) as conjure:
                await trio.sleep(60)
                # The job's socket, under the same id, has replaced the old one's entry.
                assert sim._conns[submitted.client_id] is not old_conn
                await old.aclose()
                await trio.sleep(1)
                assert submitted.client_id not in sim._conns  # P3: the new one is deaf now
                with trio.fail_after(7200):
                    await conjure.wait_until_idle()
                state = conjure.state
            nursery.cancel_scope.cancel()
    assert state.jobs[job].status == "succeeded", state.jobs[job].error
    assert state.jobs[job].attempt == 1
    assert len(_submitting(log)) == 1
    assert len(sim.prompts_run) == 1


async def test_a_reattached_prompts_websocket_images_are_saved_without_a_rerun(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """A SaveImageWebsocket workflow re-attached before its save node ran: the images come
    to the socket under the prompt's client id and are saved; the job succeeds on attempt 1
    with its one prompt (before: "images lost", and the prompt ran again)."""
    graph = json.loads((WORKFLOWS / "ws_preview.json").read_text())  # node 2 sends 2 images
    graph["1"]["inputs"].update(width=512, height=512)  # node 1 runs past the restart
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    async with open_test_cloud(wall.now, timings=ComfyTimings(scale=1_000_000.0)) as cloud:
        config = sim_config(cloud, max_machines=1)
        job = ""

        async def until_started(conjure: Any) -> None:
            nonlocal job
            job = await conjure.submit(graph)
            with trio.fail_after(3600):
                await wait_for(conjure, lambda s: s.jobs[job].execution == "started")

        await crash_when(cloud, log, tmp_path, config, wall, until_started)
        log = log.reopen()
        saved = [r.event for r in log.records() if isinstance(r.event, ev.OutputSaved)]
        assert saved == []  # the save node had not run at the crash
        async with run_conjure(cloud, log, tmp_path, config, wall) as conjure:
            with trio.fail_after(7200):
                await conjure.wait_until_idle()
            state = conjure.state.jobs[job]
    assert state.status == "succeeded", state.error
    assert state.attempt == 1
    assert len(_submitting(log)) == 1
    assert sorted(Path(o.path).name for o in state.outputs) == ["2_00000.png", "2_00001.png"]
