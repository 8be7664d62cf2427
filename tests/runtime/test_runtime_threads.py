"""The GIL handed to worker threads promptly: the switch interval the runtime sets."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from conjure_actors.runtime import open_actor_system
from conjure_actors.runtime.threads import GIL_SWITCH_SECONDS, prompt_gil_handoff


@pytest.fixture(autouse=True)
def default_switch_interval() -> Iterator[None]:
    """The interpreter's default switch interval for the test, the previous one after it."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(0.005)
    yield
    sys.setswitchinterval(before)


def test_the_switch_interval_is_shortened() -> None:
    prompt_gil_handoff()
    assert sys.getswitchinterval() == pytest.approx(GIL_SWITCH_SECONDS)


def test_a_shorter_switch_interval_is_kept() -> None:
    """Never lengthened: a process that chose a shorter one keeps it."""
    sys.setswitchinterval(GIL_SWITCH_SECONDS / 2)
    prompt_gil_handoff()
    assert sys.getswitchinterval() == pytest.approx(GIL_SWITCH_SECONDS / 2)


async def test_an_actor_system_shortens_the_switch_interval() -> None:
    """Its worker threads (to_thread calls, the disk committer) beside a busy loop."""
    async with open_actor_system():
        assert sys.getswitchinterval() == pytest.approx(GIL_SWITCH_SECONDS)
