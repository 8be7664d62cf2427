"""The SSE stream of a job ends with the terminal status: a job whose output could not become
an asset reads ``failed`` once the AssetActor gave it up (``ApiJobOutputsNotStored``), and
its stream sends that and ends then (it held a stream slot open forever before)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio
from extras_support import open_extras_service, sse_events, wait_for

from conjure_actors.domain import state as st
from conjure_actors.service.blobs import BlobStore
from conjure_actors.sim.timings import ComfyTimings

WORKFLOWS = Path(__file__).resolve().parents[2] / "conjure_actors" / "workflows"


async def test_sse_ends_when_the_output_is_given_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, autojump_clock: Any
) -> None:
    def unreadable(self: BlobStore, path: Any) -> Any:
        raise OSError("the output file went")

    monkeypatch.setattr(BlobStore, "put_file", unreadable)
    monkeypatch.setattr(BlobStore, "stored_as", lambda self, path, limit: None)
    graph = json.loads((WORKFLOWS / "invert_save.json").read_text())
    with trio.fail_after(3600):
        async with open_extras_service(tmp_path) as run:
            answer = await run.client.post("/api/v2/jobs", json={"workflow": graph})
            assert answer.status_code == 201, answer.text
            job_id = answer.json()["id"]
            await wait_for(run.service, lambda s: s.jobs[job_id].status == st.SUCCEEDED)
            polled = (await run.client.get(f"/api/v2/jobs/{job_id}")).json()["status"]
            assert polled == "running"  # its output is still being tried
            got: list[Any] = []
            try:
                got = await sse_events(run.app, f"/api/v2/jobs/{job_id}/events", within=600)
            except trio.TooSlowError:
                got = [(0.0, "STREAM STILL OPEN after 600 s", None)]
            polled = (await run.client.get(f"/api/v2/jobs/{job_id}")).json()["status"]
    assert polled == "failed"
    names = [
        (name, data.get("status") if isinstance(data, dict) else None) for _, name, data in got
    ]
    assert names[-1] == ("status", "failed"), names


async def test_a_stream_open_at_sigterm_ends_with_the_terminal_status_of_a_drained_job(
    tmp_path: Path, autojump_clock: Any
) -> None:
    """SIGTERM while a job runs: its open event stream lasts through the drain and ends
    with the job's terminal status (it was closed at the signal, the job's end unsent)."""
    from conjure_actors.commands.serve import _drain, _stop_accepting

    graph = json.loads((WORKFLOWS / "invert_save.json").read_text())
    got: list[Any] = []
    with trio.fail_after(3600):
        async with open_extras_service(tmp_path, comfy=ComfyTimings(scale=100)) as run:
            job_id = (await run.client.post("/api/v2/jobs", json={"workflow": graph})).json()["id"]
            await wait_for(run.service, lambda s: s.jobs[job_id].status == st.RUNNING)

            async def watch() -> None:
                got.extend(await sse_events(run.app, f"/api/v2/jobs/{job_id}/events"))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch)
                await trio.sleep(0.1)  # the stream is open and has sent its snapshot
                _stop_accepting(run.service)  # what serve does on SIGTERM, then the drain
                await _drain(run.service)
                await run.service.conjure.shutdown("interrupted")
                run.service.stopping.set()  # serving stops (open_serve's exit)
    names = [(name, data.get("status")) for _, name, data in got if name == "status"]
    assert names[0] == ("status", "running")
    assert names[-1] == ("status", "succeeded"), names


@pytest.mark.slow
async def test_a_stream_ends_with_the_jobs_status_when_serving_stops_before_it_ends(
    tmp_path: Path, autojump_clock: Any
) -> None:
    """Serving stops with the job unfinished (interrupted, queued for the next start): the
    stream's last status is that non-terminal one, which a client tells from an end."""
    graph = json.loads((WORKFLOWS / "invert_save.json").read_text())
    got: list[Any] = []
    with trio.fail_after(3600):
        async with open_extras_service(tmp_path, comfy=ComfyTimings(scale=100)) as run:
            job_id = (await run.client.post("/api/v2/jobs", json={"workflow": graph})).json()["id"]
            await wait_for(run.service, lambda s: s.jobs[job_id].status == st.RUNNING)

            async def watch() -> None:
                got.extend(await sse_events(run.app, f"/api/v2/jobs/{job_id}/events"))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch)
                await trio.sleep(0.1)
                await run.service.conjure.shutdown("interrupted")  # no drain: cut short
                run.service.stopping.set()
    names = [(name, data.get("status")) for _, name, data in got if name == "status"]
    assert names[-1] == ("status", "queued"), names
    assert got[-1][1] == "status", [
        name for _, name, _ in got
    ]  # the last frame: no progress after it
