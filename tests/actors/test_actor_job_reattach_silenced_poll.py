"""A re-attached prompt followed over a socket under its old client id that P3 silences after
it connected (the dead process's handler closes on the server): once the server broadcasts a
``status`` the machine's own socket brings and that one does not, the socket is taken for
silenced and the prompt is polled at the fast interval (1 s), not every 10 s as over a
connected socket. A SaveImageWebsocket prompt's images sent meanwhile are lost: it runs again,
as before."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from actor_support import crash_when, open_test_cloud, run_conjure, sim_config, wait_for

import eventlog
from conjure_actors.clients.comfyui import ComfyUIClient
from conjure_actors.clock import TrioWallClock
from conjure_actors.domain import events as ev
from conjure_actors.domain.events import Event
from conjure_actors.sim.comfyui import ComfyTimings

WORKFLOWS = Path(__file__).parents[2] / "conjure_actors" / "workflows"
INVERT = json.loads((WORKFLOWS / "invert_save.json").read_text())


@pytest.mark.slow  # ~0.3 s or more: the inner loop runs without it, CI with it
async def test_a_reattach_socket_silenced_later_is_polled_fast(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two slots on the machine: after the restart, a second job's prompt is queued there
    (the server broadcasts ``status``), the old handler having closed: from then on the
    re-attached prompt's ``/history`` is looked at every second."""
    graph = json.loads((WORKFLOWS / "ws_preview.json").read_text())
    looks: list[tuple[float, str]] = []
    history = ComfyUIClient.history

    async def spy(self: ComfyUIClient, prompt_id: str) -> Any:
        looks.append((trio.current_time(), prompt_id))
        return await history(self, prompt_id)

    monkeypatch.setattr(ComfyUIClient, "history", spy)
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    timings = ComfyTimings(per_class={"EmptyImage": 600.0})  # node 1 runs 10 minutes
    async with open_test_cloud(wall.now, timings=timings) as cloud:
        config = sim_config(cloud, max_machines=1, jobs_per_machine=2)
        job = ""

        async def until_started(conjure: Any) -> None:
            nonlocal job
            job = await conjure.submit(graph)
            with trio.fail_after(3600):
                await wait_for(conjure, lambda s: s.jobs[job].execution == "started")

        await crash_when(cloud, log, tmp_path, config, wall, until_started)
        log = log.reopen()
        (submitted,) = [r.event for r in log.records() if isinstance(r.event, ev.PromptSubmitting)]
        sim = cloud.machine_sim(submitted.server_id)
        async with trio.open_nursery() as nursery:
            old = await sim.connect_ws_in_memory(nursery, f"/ws?clientId={submitted.client_id}")
            async with run_conjure(cloud, log, tmp_path, config, wall) as conjure:
                await trio.sleep(60)
                await old.aclose()  # P3: the re-attach socket is deaf from now on
                await trio.sleep(1)
                assert submitted.client_id not in sim._conns
                other = await conjure.submit(
                    json.loads((WORKFLOWS / "invert_save.json").read_text())
                )
                with trio.fail_after(3600):
                    await wait_for(conjure, lambda s: s.jobs[other].execution == "submitted")
                queued = trio.current_time()
                await trio.sleep(40)
                assert sim._running is not None
                assert sim._running.prompt_id == submitted.prompt_id  # still running
                window = [t for t, pid in looks if pid == submitted.prompt_id and queued + 10 < t]
                assert len(window) >= 20, window
                assert max(b - a for a, b in itertools.pairwise(window)) <= 1.5
                with trio.fail_after(20000):
                    await conjure.wait_until_idle()
                state = conjure.state
            nursery.cancel_scope.cancel()
    assert state.jobs[job].status == "succeeded", state.jobs[job].error
    assert state.jobs[other].status == "succeeded", state.jobs[other].error
