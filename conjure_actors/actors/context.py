"""What every actor of one run shares: the journal, the clocks, the clients, the config.

The :class:`Context` is built once by :func:`conjure_actors.actors.open_conjure` and lives
as long as the run, across actor restarts: an actor that crashes is re-created around the
same context, so live objects (HTTP clients, waiting lease requests) are not lost with it.

``emit`` is the only way anything changes: the journal persists the events, applies them to
``journal.state`` and publishes them, in that order (DESIGN.md, "The event-sourcing rule").
"""

from __future__ import annotations

import random
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import attrs
import httpx

from conjure_actors.clock import WallClock
from conjure_actors.config import Config
from conjure_actors.domain.prices import PriceTable
from conjure_actors.domain.state import State

WsConnect = Callable[[str], AbstractAsyncContextManager[Any]]


@attrs.define(eq=False)
class Context:
    """Shared, long-lived objects of one run."""

    config: Config
    journal: Any  # eventlog.Journal: append / append_many / state / subscribe
    wall: WallClock
    table: PriceTable
    out_dir: Path
    http: httpx.AsyncClient
    ws_connect: WsConnect | None
    runcomfy: Any  # RunComfyClient in runcomfy/simulated mode, else None
    rng: random.Random
    inputs_dir: Path
    mode: str = "simulated"
    appended: int = 0

    @property
    def state(self) -> State:
        state: State = self.journal.state
        return state

    def now(self) -> float:
        return self.wall.now()

    async def emit(self, *events: Any) -> None:
        """Journal events (persist -> apply -> publish); returns once they are durable."""
        if not events:
            return
        if len(events) == 1:
            await self.journal.append(events[0])
        else:
            await self.journal.append_many(list(events))
        self.appended += len(events)
