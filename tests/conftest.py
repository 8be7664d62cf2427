"""Shared test configuration: hypothesis profiles (``ci`` fast, ``fuzz`` long), worker
threads run inline under the autojump clock for the folders that ask for it, and the
interpreter's default switch interval for the tests of the runtime's GIL handoff."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
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
def inline_worker_threads_under_autojump(request: pytest.FixtureRequest) -> Iterator[None]:
    """Under the autojump clock a task waiting on a worker thread (an output's fsync, an
    input's write, a JPEG encoding) counts as idle, so mock time leaps ahead while the thread
    works: on a loaded machine far enough to reach a stall, a job timeout or an ask's
    deadline. Tests about logic in mock time (tests/actors, tests/service use this
    autouse) run that blocking work inline instead; the harness, which drives time itself,
    waits for threads (``Harness.settle``).

    Patched with a MonkeyPatch of its own, not the test's ``monkeypatch``: a test that calls
    ``monkeypatch.undo()`` (a store that takes writes again) would undo this too, and from
    then on its threads are real and mock time leaps while one works (a job read before
    its output, stored by then, was recorded)."""
    with pytest.MonkeyPatch.context() as patch:
        if "autojump_clock" in request.fixturenames:
            patch.setattr(trio.to_thread, "run_sync", _run_inline)
        yield


@pytest.fixture
def default_switch_interval() -> Iterator[None]:
    """The interpreter's default switch interval (5 ms) for the test, the previous one after
    it (rounded to the microsecond it is stored in: setting a value read back drifts)."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(0.005)
    yield
    sys.setswitchinterval(round(before, 6))


@pytest.fixture(autouse=True)
def _log_locks_of_the_test(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Each test's host-wide log locks (``runtime.process.LOCK_DIR``) in a folder of its
    own: tests that run at once under a fake clock write logs whose first records are
    alike (the same identity), which must not block one another. Patched with a
    MonkeyPatch of its own, not the test's ``monkeypatch``: an autouse fixture that takes it
    sets it up first, so that it would be undone last, after the other fixtures' own
    patches (it would put back what a test patched over them)."""
    from conjure_actors.runtime import process

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(process, "LOCK_DIR", str(tmp_path_factory.mktemp("log-locks")))
        yield


@pytest.fixture(autouse=True)
def _home_of_the_test(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Each test's ``~`` a folder of its own: the dev machine's record and the node
    catalogues kept beside it (``~/.conjure``) are per user, so tests that run at once (and
    test runs of other checkouts) shared them, and one's kept catalogue made another print a
    note it did not expect; nor does a test write into the user's home. (Its own
    MonkeyPatch: see ``_log_locks_of_the_test``.)"""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HOME", str(tmp_path_factory.mktemp("home")))
        yield
