"""Fixtures for the actor tests (their helpers are in ``actor_support``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import trio


async def _run_inline(fn: Callable[..., Any], *args: Any, **_: Any) -> Any:
    """``trio.to_thread.run_sync`` without the thread: a checkpoint, then the call."""
    await trio.lowlevel.checkpoint()
    return fn(*args)


@pytest.fixture(autouse=True)
def _no_worker_threads_under_autojump(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under the autojump clock, a task waiting on a worker thread (an output's fsync, an
    input's write) counts as idle, so mock time leaps ahead while the disk works: on a loaded
    machine far enough to reach a stall or a job timeout. Actor tests are about the actors'
    logic in mock time, so their blocking file work runs inline instead (the harness, which
    drives time itself, waits for threads: ``Harness.settle``)."""
    if "autojump_clock" in request.fixturenames:
        monkeypatch.setattr(trio.to_thread, "run_sync", _run_inline)
