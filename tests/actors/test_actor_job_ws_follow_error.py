"""A prompt with SaveImageWebsocket nodes keeps following its socket after a follow error
(an HTTP answer it could not use, past the client's own retries): the error is HTTP's, the
socket is fine, and its images come only over it. Before, the follow went on by polling, the
images sent afterwards went to nobody, and the prompt ran (and was paid for) again."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from actor_support import open_test_cloud, run_conjure, sim_config, wait_for

import eventlog
from conjure_actors.clients.comfyui import ComfyUIClient
from conjure_actors.clients.errors import ComfyUIResponseError
from conjure_actors.clock import TrioWallClock
from conjure_actors.domain import events as ev
from conjure_actors.domain.events import Event
from conjure_actors.sim.comfyui import ComfyTimings

WORKFLOWS = Path(__file__).parents[2] / "conjure_actors" / "workflows"
GRAPH = json.loads((WORKFLOWS / "ws_preview.json").read_text())  # node 2 sends 2 images
GRAPH["1"]["inputs"].update(width=512, height=512)
SLOW = ComfyTimings(scale=1_000_000.0)  # node 1 runs ~40 s, then node 2 sends its images


async def test_a_follow_error_before_the_save_keeps_the_images(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    fail_once: list[bool] = []
    history = ComfyUIClient.history

    async def failing_history(self: ComfyUIClient, prompt_id: str) -> Any:
        if fail_once:
            fail_once.pop()
            raise ComfyUIResponseError("GET /history answered something unexpected")
        return await history(self, prompt_id)

    monkeypatch.setattr(ComfyUIClient, "history", failing_history)
    async with (
        open_test_cloud(wall.now, timings=SLOW) as cloud,
        run_conjure(cloud, log, tmp_path, sim_config(cloud), wall) as conjure,
    ):
        job = await conjure.submit(GRAPH)
        with trio.fail_after(3600):
            # Node 1 runs ~40 s before node 2 sends its images: the follow's next look at
            # /history (every 10 s with a live socket) fails before they come.
            await wait_for(conjure, lambda s: s.jobs[job].execution == "started")
            assert not conjure.state.jobs[job].outputs
            fail_once.append(True)
            await conjure.wait_until_idle()
        state = conjure.state.jobs[job]
    assert not fail_once  # the error happened
    assert (state.status, state.attempt) == ("succeeded", 1), state.error
    assert sorted(Path(o.path).name for o in state.outputs) == ["2_00000.png", "2_00001.png"]
    assert [e for e in log.records() if isinstance(e.event, ev.JobRetrying)] == []
