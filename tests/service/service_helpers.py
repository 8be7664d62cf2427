"""Helpers for the job service tests: a running ``serve`` (in-process, loopback, port 0) on the
embedded simulated cloud, and comfy-sdk clients aimed at it (run in a worker thread: the
SDK's client is synchronous)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import attrs
import pytest
import trio

from conjure_actors.clients.ratelimit import TokenBucket
from conjure_actors.commands.serve import Served, open_serve
from conjure_actors.config import load_config
from conjure_actors.service.app import Settings

T = TypeVar("T")

WORKFLOWS = Path(__file__).resolve().parents[2] / "conjure_actors" / "workflows"


def workflow(name: str) -> dict[str, Any]:
    """A bundled API-format workflow as a dict."""
    data: dict[str, Any] = json.loads((WORKFLOWS / name).read_text())
    return data


@pytest.fixture
def sim_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    """The config ``serve`` gets with no credentials and no config file: the simulated cloud."""
    for var in ("RUNCOMFY_USER_ID", "RUNCOMFY_API_TOKEN", "RUNCOMFY_API_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    return load_config(config_file=None, flags={})


@asynccontextmanager
async def fast_cloud(config: Any) -> AsyncIterator[tuple[Any, str, Any, Any, str]]:
    """The embedded simulated cloud as ``serve`` runs it, minus its machine timers: ``serve``
    gives its machines a 1 s boot and the account 1 request/s (burst 3), so a test that
    launches and stops machines waited 4-10 s on them. Here a machine is ready at once and
    the rate limit never bites; the tests then wait only on what they test."""
    from conjure_actors.clock import SystemWallClock
    from conjure_actors.sim.cloud import CloudTimings, open_simulated_cloud
    from conjure_actors.sim.runcomfy import RunComfyTimings

    timings = CloudTimings(
        runcomfy=RunComfyTimings(ready_delay=0.0, deleting_delay=0.0, rate_per_second=1e6)
    )
    async with open_simulated_cloud(seed=0, wall=SystemWallClock().now, timings=timings) as cloud:
        runcomfy = attrs.evolve(
            config.runcomfy,
            user_id=cloud.user_id,
            api_token=type(config.runcomfy.api_token)(cloud.token),
            base_url=cloud.base_url,
            workflow_version="wv-conjure-flux-mesh-1",
        )
        fast = attrs.evolve(
            config, runcomfy=runcomfy, pool=attrs.evolve(config.pool, poll_interval=0.05)
        )
        yield fast, "simulated", cloud.http_transport(), cloud.ws_connect, "fast simulated cloud"


@asynccontextmanager
async def serving(
    config: Any,
    tmp_path: Path,
    *,
    log: str = "serve.log",
    settings: Settings | None = None,
    fast: bool = True,
    sync: Any = "batch",
) -> AsyncIterator[Served]:
    """``serve`` in-process on loopback port 0 (log and blobs under ``tmp_path``), on the
    embedded simulated cloud with instant machines (:func:`fast_cloud`; ``fast=False``:
    the cloud ``serve`` itself embeds, for a test that needs its long jobs)."""
    async with open_serve(
        config,
        log_path=tmp_path / log,
        out_dir=tmp_path / "out",
        settings=settings or Settings(),
        cloud=fast_cloud if fast and config.mode == "simulated" else None,
        sync=sync,
    ) as served:
        runcomfy = served.service.conjure.ctx.runcomfy
        if config.mode == "simulated" and runcomfy is not None:
            # The client paces itself to RunComfy's real limit (1 request/s, burst 2): a
            # launch or stop each second. The fast cloud has no limit to respect.
            runcomfy.bucket = TokenBucket(rate=1e6, burst=1e6)
        yield served


@pytest.fixture
def sdk(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], Any]:
    """``sdk(url)``: a comfy-sdk client on ``url`` (close it in the thread that uses it)."""

    def make(url: str) -> Any:
        from comfy_sdk import Comfy

        monkeypatch.setenv("COMFY_BASE_URL", url)
        monkeypatch.delenv("COMFY_API_KEY", raising=False)
        return Comfy(timeout=30.0)

    return make


async def in_thread(fn: Callable[[], T]) -> T:
    """Run blocking client code in a worker thread (the service runs on this trio loop)."""
    return await trio.to_thread.run_sync(fn)


TERMINAL = frozenset({"succeeded", "failed", "canceled", "expired"})


async def wait_terminal(http: Any, url: str, job_ids: list[str]) -> list[Any]:
    """Poll each job until terminal (the API is poll-first); returns the job objects."""
    done: list[Any] = []
    for job_id in job_ids:
        while True:
            answer = await http.get(f"{url}/api/v2/jobs/{job_id}")
            assert answer.status_code == 200, answer.text
            if answer.json()["status"] in TERMINAL:
                done.append(answer.json())
                break
            await trio.sleep(0.2)
    return done
