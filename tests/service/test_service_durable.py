"""``serve`` is durable: a restart on the same log serves every job, asset and claimed key;
jobs left unfinished run to the end; kill -9 with jobs in flight loses nothing and runs no
prompt twice; SIGTERM exits 0 with every machine stopped."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from service_helpers import serving, wait_terminal, workflow

import eventlog
from conjure_actors.actors.example import example_sketch_png
from conjure_actors.domain import events as ev
from conjure_actors.domain import service_events as se
from conjure_actors.domain.events import Event
from conjure_actors.domain.prices import billed_seconds, cost_micros
from conjure_actors.domain.state import apply, initial_state
from conjure_actors.sim.cloud import CloudTimings
from conjure_actors.sim.runcomfy import RunComfyTimings
from conjure_actors.sim.serve import ServedCloud, serve_cloud

pytestmark = pytest.mark.slow

PNG = example_sketch_png()
VERSION = "wv-conjure-flux-mesh-1"


async def test_restart_serves_jobs_assets_and_keeps_keys_claimed(
    sim_config: Any, tmp_path: Path
) -> None:
    """After a restart on the same log: the job with its outputs, the asset and its bytes
    are there, and the Idempotency-Key stays claimed."""
    body = {"workflow": workflow("invert_save.json"), "metadata": {"run": "1"}}
    async with serving(sim_config, tmp_path) as served, httpx.AsyncClient() as http:
        asset = (
            await http.post(
                f"{served.url}/api/v2/assets",
                files={"file": ("a.png", PNG, "image/png")},
                data={"content_type": "image/png", "file_path": "a.png"},
            )
        ).json()
        job = await http.post(
            f"{served.url}/api/v2/jobs", json=body, headers={"Idempotency-Key": "once"}
        )
        with trio.fail_after(60):
            (before,) = await wait_terminal(http, served.url, [job.json()["id"]])
    async with serving(sim_config, tmp_path) as served, httpx.AsyncClient() as http:
        after = (await http.get(f"{served.url}/api/v2/jobs/{before['id']}")).json()
        again = await http.post(
            f"{served.url}/api/v2/jobs", json=body, headers={"Idempotency-Key": "once"}
        )
        content = await http.get(f"{served.url}/api/v2/assets/{asset['id']}/content")
        output = await http.get(after["outputs"][0]["url"])
        listed = (await http.get(f"{served.url}/api/v2/jobs?metadata[run]=1")).json()
    assert before["status"] == after["status"] == "succeeded"
    assert [o["hash"] for o in after["outputs"]] == [o["hash"] for o in before["outputs"]]
    assert again.status_code == 422
    assert again.json()["error"]["code"] == "idempotency_key_reuse"
    assert content.content == PNG
    assert output.content.startswith(b"\x89PNG")
    assert [j["id"] for j in listed["jobs"]] == [before["id"]]


async def test_jobs_left_unfinished_run_after_restart(sim_config: Any, tmp_path: Path) -> None:
    """Jobs still queued or running when serve stopped run to the end after a restart."""
    body = {"workflow": workflow("invert_save.json")}
    async with serving(sim_config, tmp_path) as served, httpx.AsyncClient() as http:
        ids = [(await http.post(f"{served.url}/api/v2/jobs", json=body)).json()["id"] for _ in "ab"]
        assert all(j.status != "succeeded" for j in served.service.state.jobs.values())
    async with serving(sim_config, tmp_path) as served, httpx.AsyncClient(timeout=30) as http:
        with trio.fail_after(120):
            done = await wait_terminal(http, served.url, ids)
    assert [j["status"] for j in done] == ["succeeded", "succeeded"]


async def test_a_restart_stopping_during_start_up_launches_nothing_for_unfinished_jobs(
    sim_config: Any, tmp_path: Path
) -> None:
    """A restart told at start-up that serving stops (a signal came) starts no unfinished
    job again: no machine is launched for them, and they stay for the next start."""
    from service_helpers import fast_cloud

    from conjure_actors.commands.serve import open_serve
    from conjure_actors.service.app import Settings

    body = {"workflow": workflow("invert_save.json")}
    async with serving(sim_config, tmp_path) as served, httpx.AsyncClient() as http:
        for _ in "ab":
            assert (await http.post(f"{served.url}/api/v2/jobs", json=body)).status_code == 201
    async with open_serve(
        sim_config,
        log_path=tmp_path / "serve.log",
        out_dir=tmp_path / "out",
        settings=Settings(),
        cloud=fast_cloud,
        hold_resumed=lambda: True,
    ) as served:
        await trio.sleep(1.0)  # a machine launched at start-up is asked for by now
        state = served.service.state
        assert len(state.jobs) == 2
        assert all(j.status not in ("succeeded", "running") for j in state.jobs.values())
    launches = 0
    for record in eventlog.read(tmp_path / "serve.log", Event):
        if isinstance(record.event, ev.SystemStarted):
            launches = 0
        elif isinstance(record.event, ev.MachineLaunchRequested):
            launches += 1
    assert launches == 0


# ------------------------------------------------------------------ subprocesses


@asynccontextmanager
async def served_cloud() -> AsyncIterator[ServedCloud]:
    timings = CloudTimings(
        runcomfy=RunComfyTimings(ready_delay=0.5, deleting_delay=0.2, rate_per_second=20, burst=20)
    )
    async with trio.open_nursery() as nursery:
        cloud: ServedCloud = await nursery.start(partial(serve_cloud, timings=timings, seed=3))
        yield cloud
        nursery.cancel_scope.cancel()


def _env(cloud: ServedCloud | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNCOMFY_", "CONJURE_"))}
    if cloud is not None:
        env.update(
            RUNCOMFY_API_BASE_URL=cloud.base_url,
            RUNCOMFY_USER_ID=cloud.user_id,
            RUNCOMFY_API_TOKEN=cloud.token,
            CONJURE_POOL_POLL_INTERVAL="0.2",
            CONJURE_POOL_IDLE_TIMEOUT="30",
        )
    return env


class Serve:
    """A ``serve`` subprocess; ``url`` is read from its first line."""

    def __init__(self, process: Any) -> None:
        self.process = process
        self.url = ""
        self.stderr = b""

    @classmethod
    async def start(cls, cwd: Path, log: Path, cloud: ServedCloud | None) -> Serve:
        args = [sys.executable, "-m", "conjure_actors", "serve", "--port", "0", "--log", str(log)]
        if cloud is not None:
            args += ["--workflow-version", VERSION]
        process = await trio.lowlevel.open_process(
            args, cwd=cwd, env=_env(cloud), stdout=-1, stderr=-1
        )
        self = cls(process)
        first = b""
        while b"\n" not in first:
            chunk = await process.stdout.receive_some(4096)
            if not chunk:
                err = await process.stderr.receive_some(65536)
                raise AssertionError(f"serve ended before its URL line: {err!r}")
            first += chunk
        line = first.split(b"\n", 1)[0].decode()
        self.url = line.rsplit(" ", 1)[-1]
        assert self.url.startswith("http://127.0.0.1:"), line
        return self

    async def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        async with trio.open_nursery() as nursery:

            async def drain_err() -> None:
                while chunk := await self.process.stderr.receive_some(65536):
                    self.stderr += chunk

            nursery.start_soon(drain_err)
            while await self.process.stdout.receive_some(65536):
                pass
        return int(await self.process.wait())


async def test_sigterm_exits_0_after_printing_the_url_first(tmp_path: Path) -> None:
    """The first line names the URL (port 0 -> the real port); SIGTERM exits 0."""
    with trio.fail_after(60):
        serve = await Serve.start(tmp_path, tmp_path / "s.log", None)
        async with httpx.AsyncClient() as http:
            answer = await http.get(f"{serve.url}/api/v2/jobs")
        code = await serve.stop()
    assert answer.status_code == 200
    assert code == 0, serve.stderr.decode()
    assert b"Traceback" not in serve.stderr


def _ledger_bounds(m: Any) -> set[int]:
    """The bills the cloud may have recorded for a machine the ledger closed: exact but for
    when, within a ``DELETE``'s round trip, the cloud stopped billing (see the same check in
    ``tests/commands/test_cmd_run_cloud.py``)."""
    if m.stop_requested_at is None or m.stopped_at is None:
        return {m.cost_micros}
    low = m.stop_requested_at
    high = m.stopped_at if m.stopped_at > low else low + 1.0
    first = billed_seconds(m.service_ready_at, low)
    last = billed_seconds(m.service_ready_at, high)
    return {cost_micros(m.rate_micros_per_hour, s) for s in range(first, last + 1)}


async def test_kill_9_with_jobs_in_every_state_then_restart_loses_nothing(tmp_path: Path) -> None:
    """kill -9 with a job finished, one running and some queued, restart on the same log:
    every job is there, the finished one with its output, the others succeed; no prompt ran
    twice, no machine is left running after SIGTERM, and the ledger matches the bills."""
    log = tmp_path / "serve.log"
    slow = {"workflow": workflow("slow_blur_chain.json")}
    async with served_cloud() as cloud, httpx.AsyncClient(timeout=120) as http:
        with trio.fail_after(180):
            first = await Serve.start(tmp_path, log, cloud)
            fast = await http.post(
                f"{first.url}/api/v2/jobs", json={"workflow": workflow("invert_save.json")}
            )
            (finished,) = await wait_terminal(http, first.url, [fast.json()["id"]])
            ids = [
                (await http.post(f"{first.url}/api/v2/jobs", json=slow)).json()["id"]
                for _ in range(3)
            ]
            while sum(len(sim.prompts_run) for sim in cloud.machines.values()) < 2:  # noqa: ASYNC110
                await trio.sleep(0.1)
            first.process.send_signal(signal.SIGKILL)
            await first.process.wait()
        with trio.fail_after(240):
            second = await Serve.start(tmp_path, log, cloud)
            again = (await http.get(f"{second.url}/api/v2/jobs/{finished['id']}")).json()
            output = await http.get(again["outputs"][0]["url"])
            done = await wait_terminal(http, second.url, ids)
            code = await second.stop()
            while cloud.runcomfy.running():  # noqa: ASYNC110 - the sim offers no event
                await trio.sleep(0.1)
        ran = [p for sim in cloud.machines.values() for p in sim.prompts_run]
        bills = {b.server_id: b.cost_micros for b in cloud.runcomfy.billing()}
    state = eventlog.fold(eventlog.read(log, Event), apply, initial_state())
    assert finished["status"] == again["status"] == "succeeded"
    assert output.content.startswith(b"\x89PNG")
    assert [j["status"] for j in done] == ["succeeded"] * 3, second.stderr.decode()
    assert code == 0, second.stderr.decode()
    assert len(ran) == len(set(ran)), "a prompt ran twice"
    assert all(m.status in ("stopped", "lost") for m in state.machines.values())
    assert set(state.service.api_jobs) == {finished["id"], *ids}
    assert set(bills) == set(state.machines)
    for m in state.machines.values():
        assert bills[m.server_id] in _ledger_bounds(m), (m, bills[m.server_id])


async def test_port_in_use_is_one_line_and_exit_2(tmp_path: Path) -> None:
    """A port already taken: one error line naming it, exit 2, no log written."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with trio.fail_after(60):
            done = await trio.run_process(
                [sys.executable, "-m", "conjure_actors", "serve", "--port", str(port)],
                cwd=tmp_path,
                env=_env(None),
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
    lines = done.stderr.decode().strip().splitlines()
    assert done.returncode == 2
    assert len(lines) == 1
    assert f"127.0.0.1:{port}" in lines[0]
    assert not (tmp_path / "runs").exists()


async def test_a_submission_is_one_append(sim_config: Any, tmp_path: Path) -> None:
    """Each of 10 concurrent submissions logs its key claim, API record, JobSubmitted and
    JobQueued in one append (consecutive seqs, nothing of another submission between them)."""
    body = {"workflow": workflow("invert_save.json")}
    async with serving(sim_config, tmp_path) as served, httpx.AsyncClient() as http:

        async def submit(i: int) -> None:
            headers = {"Idempotency-Key": f"key-{i}"}
            answer = await http.post(f"{served.url}/api/v2/jobs", json=body, headers=headers)
            assert answer.status_code == 201, answer.text

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                for i in range(10):
                    nursery.start_soon(submit, i)
    wanted = (se.IdempotencyKeyClaimed, se.ApiJobAccepted, ev.JobSubmitted, ev.JobQueued)
    records = [
        r for r in eventlog.read(tmp_path / "serve.log", Event) if isinstance(r.event, wanted)
    ]
    assert len(records) == 40
    for claim, accepted, submitted, queued in zip(
        records[::4], records[1::4], records[2::4], records[3::4], strict=True
    ):
        assert isinstance(claim.event, se.IdempotencyKeyClaimed)
        assert isinstance(accepted.event, se.ApiJobAccepted)
        assert isinstance(submitted.event, ev.JobSubmitted)
        assert isinstance(queued.event, ev.JobQueued)
        assert accepted.event.job_id == submitted.event.job_id == queued.event.job_id
        assert accepted.event.idempotency_key == claim.event.key
        assert (claim.seq + 1, claim.seq + 2, claim.seq + 3) == (
            accepted.seq,
            submitted.seq,
            queued.seq,
        )
