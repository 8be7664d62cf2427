"""Shared test configuration: hypothesis profiles (``ci`` fast, ``fuzz`` long), and worker
threads run inline under the autojump clock for the folders that ask for it."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest
import trio
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.register_profile(
    "fuzz",
    max_examples=3000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


async def _run_inline(fn: Callable[..., Any], *args: Any, **_: Any) -> Any:
    """``trio.to_thread.run_sync`` without the thread: a checkpoint, then the call."""
    await trio.lowlevel.checkpoint()
    return fn(*args)


@pytest.fixture
def inline_worker_threads_under_autojump(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under the autojump clock a task waiting on a worker thread (an output's fsync, an
    input's write, a JPEG encoding) counts as idle, so mock time leaps ahead while the thread
    works: on a loaded machine far enough to reach a stall, a job timeout or an ask's
    deadline. Tests about logic in mock time (tests/actors, tests/service use this
    autouse) run that blocking work inline instead; the harness, which drives time itself,
    waits for threads (``Harness.settle``)."""
    if "autojump_clock" in request.fixturenames:
        monkeypatch.setattr(trio.to_thread, "run_sync", _run_inline)
