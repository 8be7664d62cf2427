"""SaveImageWebsocket images come only as binary frames to the socket of the prompt's
client_id, while the node runs, and ComfyUI keeps no copy (issue 14). So the socket is
connected before ``POST /prompt``, and a prompt that succeeded short of its images (the socket
was down while the node ran) is run again, which sends them again (the node always re-runs;
the nodes before it come from the cache), or fails with one precise line."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import msgspec
import trio
import trio.testing
from actor_support import open_test_cloud, run_conjure, sim_config, wait_for
from PIL import Image

import eventlog
from conjure_actors.actors.conjure import open_conjure
from conjure_actors.actors.job import ws_images_lost
from conjure_actors.clock import TrioWallClock
from conjure_actors.domain import events as ev
from conjure_actors.domain.events import Event
from conjure_actors.domain.state import apply, initial_state
from conjure_actors.sim.cloud import CloudFaults
from conjure_actors.sim.comfyui import ComfyFaults

WORKFLOWS = Path(__file__).parents[2] / "conjure_actors" / "workflows"
GRAPH = json.loads((WORKFLOWS / "ws_preview.json").read_text())  # node 2 sends 2 images
DROP_IN_THE_SAVE = 11
"""ws_drop_after: every socket drops while node 2 sends its images (found by trying)."""


def _events(log: eventlog.MemoryLog[Any], kind: type) -> list[Any]:
    return [r.event for r in log.records() if isinstance(r.event, kind)]


def _colours(outputs: Any) -> list[Any]:
    """The colour of each saved image (its first pixel)."""
    return [
        Image.open(io.BytesIO(Path(o.path).read_bytes())).convert("RGB").getpixel((0, 0))
        for o in outputs
    ]


def test_images_lost_is_said_per_node_with_the_count_announced() -> None:
    """Fewer frames than the node's progress max, or none at all: lost; all of them: not."""
    assert ws_images_lost({"2"}, {"2": 2}, {"2": 2}) is None
    assert ws_images_lost({"2"}, {"2": 1}, {}) is None
    assert ws_images_lost(set(), {}, {}) is None
    some = ws_images_lost({"2"}, {"2": 1}, {"2": 2})
    assert some is not None
    assert some.startswith(
        "node 2 (SaveImageWebsocket): 1 of 2 images sent while the WebSocket was down are"
        " lost: ComfyUI keeps no copy of SaveImageWebsocket output; rerun"
    )
    none = ws_images_lost({"2", "9"}, {"9": 1}, {})
    assert none is not None
    assert none.startswith("node 2 (SaveImageWebsocket): its images sent while")


async def test_images_lost_in_a_drop_are_had_again_by_running_the_prompt_again(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """The socket drops while node 2 sends its images: the attempt is not a success short of
    them; once the socket holds, the prompt runs again (node 1 from the cache, node 2 again)
    and both images are saved, each once."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    drop = ComfyFaults(ws_drop_after=DROP_IN_THE_SAVE)
    async with (
        open_test_cloud(wall.now, comfy_faults=drop) as cloud,
        run_conjure(cloud, log, tmp_path, sim_config(cloud), wall) as conjure,
    ):
        job = await conjure.submit(GRAPH)
        with trio.fail_after(3600):
            await wait_for(conjure, lambda s: s.jobs[job].failures >= 1)
            cloud.set_faults(CloudFaults())
            await conjure.wait_until_idle()
        state = conjure.state.jobs[job]
    assert state.status == "succeeded", state.error
    retried = _events(log, ev.JobRetrying)
    assert retried
    for retry in retried:
        assert retry.reason.startswith("node 2 (SaveImageWebsocket): ")
        assert " sent while the WebSocket was down are lost: " in retry.reason
    assert sorted(Path(o.path).name for o in state.outputs) == ["2_00000.png", "2_00001.png"]
    assert state.attempt == len(retried) + 1
    for output in state.outputs:
        data = await trio.to_thread.run_sync(Path(output.path).read_bytes)
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
    cached = _events(log, ev.NodeCached)
    assert "1" in cached[-1].nodes  # the second prompt re-ran only the save


async def test_images_lost_on_every_attempt_fail_the_job_with_one_line(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """A socket that drops in the save every time: the job fails (not a success with one
    image, not "no output") with the precise line."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    drop = ComfyFaults(ws_drop_after=DROP_IN_THE_SAVE)
    async with (
        open_test_cloud(wall.now, comfy_faults=drop) as cloud,
        run_conjure(cloud, log, tmp_path, sim_config(cloud), wall) as conjure,
    ):
        job = await conjure.submit(GRAPH)
        with trio.fail_after(3600):
            await conjure.wait_until_idle()
        state = conjure.state.jobs[job]
    assert state.status == "failed"
    assert state.error is not None
    assert "images sent while the WebSocket was down are lost: ComfyUI keeps no copy" in (
        state.error.message
    )
    assert "\n" not in state.error.message


async def test_the_prompt_is_posted_only_once_its_socket_is_connected(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """The machine's first WebSocket attempt fails and the next one hangs: the started job
    does not POST its prompt until the socket connects, then submits with that socket's
    client id and gets both images."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    started = trio.Event()
    urls: list[str] = []
    async with open_test_cloud(wall.now) as cloud:

        @asynccontextmanager
        async def late_socket(url: str) -> AsyncIterator[Any]:
            urls.append(url)
            if len(urls) == 1:
                raise ConnectionRefusedError("not yet")
            await started.wait()
            async with cloud.ws_connect(url) as ws:
                yield ws

        async with (
            eventlog.open_journal(
                log, Event, apply=apply, initial=initial_state(), clock=wall.now
            ) as journal,
            open_conjure(
                sim_config(cloud),
                journal=journal,
                http=cloud.http_transport(),
                ws_connect=late_socket,
                wall=wall,
                out_dir=tmp_path,
                seed=1,
            ) as conjure,
        ):
            job = await conjure.submit(GRAPH)
            with trio.fail_after(3600):
                await wait_for(conjure, lambda s: s.jobs[job].status == "running")
                assert _events(log, ev.PromptSubmitting) == []
                started.set()
                await conjure.wait_until_idle()
            state = conjure.state.jobs[job]
    assert state.status == "succeeded", state.error
    assert len(state.outputs) == 2
    (submitting,) = _events(log, ev.PromptSubmitting)
    assert urls[-1].endswith(f"clientId={submitting.client_id}")


async def test_a_stall_notice_in_the_save_keeps_the_follow_on_the_socket(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """A stall notice after node 2's first image used to make the job follow by polling,
    which cannot see the second: the prompt ran again for it. Now the follow stays on the
    socket (it polls /history all the same): both images, one attempt, no retry."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    async with (
        open_test_cloud(wall.now) as cloud,
        run_conjure(cloud, log, tmp_path, sim_config(cloud), wall) as conjure,
    ):
        job = await conjure.submit(GRAPH)
        with trio.fail_after(3600):
            await wait_for(conjure, lambda s: len(s.jobs[job].outputs) == 1)
            conjure._notify_stall(job)
            await conjure.wait_until_idle()
        state = conjure.state.jobs[job]
    assert (state.status, state.attempt) == ("succeeded", 1), state.error
    assert sorted(Path(o.path).name for o in state.outputs) == ["2_00000.png", "2_00001.png"]
    assert _events(log, ev.JobRetrying) == []


async def test_a_foreign_prompts_ws_images_are_not_saved_as_ours(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """On the user's own (shared) ComfyUI another script queues, right behind our prompt and
    without a client_id, a prompt that broadcasts its images as legacy frames (no prompt id);
    they come while our job reads its history. Only our two (green) images are saved."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    foreign = json.loads(json.dumps(GRAPH))
    foreign["1"]["inputs"]["color"] = 255  # blue; ours are green
    async with open_test_cloud(wall.now) as cloud:
        url, sim = cloud.standalone_comfyui()
        http, send_binary = sim._http, sim._send_binary
        broadcast = trio.Event()  # the foreign prompt sent both its images to every socket
        sent: list[bytes] = []
        ours: list[str] = []

        async def with_foreign_traffic(method: str, path: str, *args: Any) -> Any:
            if (method, path) == ("GET", f"/history/{ours[0] if ours else ''}") and (
                ours[0] in sim.prompts_run
            ):
                await broadcast.wait()  # our history is read once the foreign images came
            answer = await http(method, path, *args)
            if (method, path) == ("POST", "/prompt") and not ours:
                ours.append(msgspec.json.decode(args[2])["prompt_id"])
                await http(method, path, {}, {}, msgspec.json.encode({"prompt": foreign}))
            return answer

        def counting(data: bytes, sid: str | None) -> None:
            send_binary(data, sid)
            if sid is None:
                sent.append(data)
                if len(sent) == 2:
                    broadcast.set()

        sim._http = with_foreign_traffic  # type: ignore[method-assign]
        sim._send_binary = counting  # type: ignore[method-assign]
        config = attrs.evolve(sim_config(cloud), comfyui_url=url)
        async with run_conjure(cloud, log, tmp_path, config, wall, mode="comfyui") as conjure:
            job = await conjure.submit(GRAPH)
            with trio.fail_after(3600):
                await conjure.wait_until_idle()
            state = conjure.state.jobs[job]
    assert broadcast.is_set()
    assert state.status == "succeeded", state.error
    assert _colours(state.outputs) == [(0, 255, 0)] * 2
