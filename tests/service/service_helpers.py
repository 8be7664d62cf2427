"""Helpers for the job service tests: a running ``serve`` (in-process, loopback, port 0) on the
embedded simulated cloud, and comfy-sdk clients aimed at it (run in a worker thread: the
SDK's client is synchronous)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trio

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
async def serving(
    config: Any, tmp_path: Path, *, log: str = "serve.log", settings: Settings | None = None
) -> AsyncIterator[Served]:
    """``serve`` in-process on loopback port 0 (log and blobs under ``tmp_path``)."""
    async with open_serve(
        config,
        log_path=tmp_path / log,
        out_dir=tmp_path / "out",
        settings=settings or Settings(),
    ) as served:
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
