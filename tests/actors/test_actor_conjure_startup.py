"""open_conjure's start-up: what it depends on is checked before the log says the run began."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from actor_support import open_test_cloud, run_conjure, sim_config

import eventlog
from conjure_actors.clock import TrioWallClock
from conjure_actors.domain.events import Event, SystemStarted
from conjure_actors.errgroups import meaningful
from conjure_actors.errors import UsageError


async def test_an_attached_comfyui_that_does_not_answer_is_the_usage_error_itself(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """A dev machine that does not answer ends the start with the UsageError itself (no
    shutdown, no RunStoppedError), and the log never says the run started."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)

    async def start() -> None:
        async with (
            open_test_cloud(wall.now) as cloud,
            run_conjure(
                cloud, log, tmp_path, sim_config(cloud), wall, attach={"dev": "http://dev.invalid"}
            ),
        ):
            pytest.fail("the run started without its dev machine")

    # The test's cloud and journal run nurseries: what leaves them is a group.
    with trio.fail_after(600), pytest.raises(ExceptionGroup) as raised:
        await start()
    leaf = meaningful(raised.value)
    assert isinstance(leaf, UsageError)
    assert str(leaf).startswith("dev machine dev does not answer /system_stats")
    assert not [r for r in log.records() if isinstance(r.event, SystemStarted)]
