"""Fixtures of the job service tests (helpers live in ``service_helpers``)."""

from collections.abc import Callable
from typing import Any

import pytest
import trio
from service_helpers import sdk, sim_config

__all__ = ["sdk", "sim_config"]


async def _run_inline(fn: Callable[..., Any], *args: Any, **_: Any) -> Any:
    """``trio.to_thread.run_sync`` without the thread: a checkpoint, then the call."""
    await trio.lowlevel.checkpoint()
    return fn(*args)


@pytest.fixture(autouse=True)
def _no_worker_threads_under_autojump(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under the autojump clock a task waiting on a worker thread (an fsync, a JPEG
    encoding) counts as idle, so mock time leaps ahead while the thread works: on a loaded
    machine far enough to time out an ask or skip a job's progress. The in-memory service
    tests are about logic in mock time: their blocking work runs inline (as the actor
    tests', tests/actors/conftest.py)."""
    if "autojump_clock" in request.fixturenames:
        monkeypatch.setattr(trio.to_thread, "run_sync", _run_inline)
