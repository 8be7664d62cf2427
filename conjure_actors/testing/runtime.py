"""The runtime on a log, against a simulated cloud: one call for tests and benchmarks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import eventlog
from conjure_actors.actors.conjure import Conjure, open_conjure
from conjure_actors.clock import WallClock
from conjure_actors.config import Config
from conjure_actors.domain.events import Event
from conjure_actors.domain.state import apply, initial_state


@asynccontextmanager
async def open_simulated_conjure(
    cloud: Any,
    log: Any,
    config: Config,
    *,
    wall: WallClock,
    out_dir: Path,
    seed: int = 1,
    **kwargs: Any,
) -> AsyncIterator[Conjure]:
    """:func:`~conjure_actors.actors.conjure.open_conjure` over a journal on ``log`` (a
    :class:`eventlog.MemoryLog` or a path; it may already hold an earlier run, which is then
    resumed), talking to ``cloud`` (a :class:`~conjure_actors.sim.SimulatedCloud`) in
    memory. ``kwargs`` go to ``open_conjure`` (``monitor``, ``mode``...)."""
    async with (
        eventlog.open_journal(
            log, Event, apply=apply, initial=initial_state(), clock=wall.now
        ) as journal,
        open_conjure_on(
            cloud, journal, config, wall=wall, out_dir=out_dir, seed=seed, **kwargs
        ) as conjure,
    ):
        yield conjure


def open_conjure_on(
    cloud: Any,
    journal: Any,
    config: Config,
    *,
    wall: WallClock,
    out_dir: Path,
    seed: int = 1,
    **kwargs: Any,
) -> AbstractAsyncContextManager[Conjure]:
    """The runtime on an open ``journal`` (which outlives it: a test can crash the log and
    tear the runtime down under it) against ``cloud`` in memory."""
    return open_conjure(
        config,
        journal=journal,
        http=cloud.http_transport(),
        ws_connect=cloud.ws_connect,
        wall=wall,
        out_dir=out_dir,
        seed=seed,
        **kwargs,
    )
