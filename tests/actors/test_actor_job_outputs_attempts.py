"""A job's outputs are those of the attempt that ran to its end (QA H1): the files an
abandoned attempt saved are removed from OUT/<job>/ when the next attempt starts, and the
log's paths are absolute whatever ``--out`` was given as."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from actor_support import open_test_cloud, run_conjure, sim_config, submit_sketches

import eventlog
from conjure_actors.actors import files
from conjure_actors.clients import errors as cerr
from conjure_actors.clients.comfyui import ComfyUIClient
from conjure_actors.clock import TrioWallClock
from conjure_actors.domain import events as ev
from conjure_actors.domain.events import Event


@pytest.mark.slow  # (just test <= 30 s: CI and just check run it)
async def test_a_retried_job_keeps_only_the_outputs_of_the_attempt_that_succeeded(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_download, real_path = ComfyUIClient.download_to, files.output_path
    calls = 0

    def output_path(job_dir: Path, subfolder: str, filename: str) -> Path:
        # Attempt 1's first file under a name of its own (a real machine's counter goes on:
        # the simulator's second attempt would save over the same names).
        name = f"attempt1_{filename}" if calls == 0 else filename
        return real_path(job_dir, subfolder, name)

    async def second_download_fails_once(self: Any, *args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 2:  # attempt 1 saved its first file; its second fails
            raise cerr.DownloadError("the connection dropped")
        return await real_download(self, *args, **kwargs)

    monkeypatch.setattr(files, "output_path", output_path)
    monkeypatch.setattr(ComfyUIClient, "download_to", second_download_fails_once)
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    out = tmp_path / "out"
    async with (
        open_test_cloud(wall.now) as cloud,
        run_conjure(cloud, log, out, sim_config(cloud), wall) as conjure,
    ):
        (job,) = await submit_sketches(conjure)
        with trio.fail_after(3600):
            await conjure.wait_until_idle()
        state = conjure.state
    assert state.jobs[job].status == "succeeded"
    assert state.jobs[job].attempt == 2
    saved = [r.event.path for r in log.records() if isinstance(r.event, ev.OutputSaved)]
    outputs = sorted(o.path for o in state.jobs[job].outputs)
    assert len(saved) == len(outputs) + 1  # attempt 1's file is not among them
    assert not any("attempt1_" in path for path in outputs)
    on_disk = sorted(str(p) for p in (out / job).rglob("*") if p.is_file())
    assert on_disk == outputs


async def test_outputs_are_logged_under_an_absolute_folder(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    async with (
        open_test_cloud(wall.now) as cloud,
        run_conjure(cloud, log, Path("out"), sim_config(cloud), wall) as conjure,
    ):
        (job,) = await submit_sketches(conjure)
        with trio.fail_after(3600):
            await conjure.wait_until_idle()
        outputs = conjure.state.jobs[job].outputs
    assert outputs
    assert all(Path(o.path).is_absolute() for o in outputs)
    assert all(Path(o.path).is_relative_to(tmp_path / "out" / job) for o in outputs)
