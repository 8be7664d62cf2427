"""The GIL handed to worker threads promptly: the switch interval the runtime sets."""

from __future__ import annotations

import sys

import pytest

from conjure_actors.runtime import open_actor_system
from conjure_actors.runtime.threads import GIL_SWITCH_SECONDS, prompt_gil_handoff
from eventlog import journal

pytestmark = pytest.mark.usefixtures("default_switch_interval")


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


def test_the_journal_hands_off_at_the_same_interval() -> None:
    """eventlog keeps its own copy (it imports nothing of conjure_actors): the same value."""
    assert journal.GIL_SWITCH_SECONDS == GIL_SWITCH_SECONDS
