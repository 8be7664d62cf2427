"""The start's catch-up of ``ApiJobExpiryMoved`` (a log older than that event, or jobs that
ended just before a crash) moves every such job: it went in ONE append, so a log with many
jobs made one commit as large as its history. It goes in bounded appends now, and the log
replays to the same state."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio
from extras_support import open_extras_service, wait_idle

import eventlog
from conjure_actors.actors import assets as assets_actor
from conjure_actors.actors.assets import AssetActor, Retention, SweepNow
from conjure_actors.actors.context import Context
from conjure_actors.domain import service_events as se
from conjure_actors.domain.events import Event
from conjure_actors.domain.state import apply, initial_state
from conjure_actors.service.app import Settings

WORKFLOWS = Path(__file__).resolve().parents[2] / "conjure_actors" / "workflows"
SETTINGS = Settings(retention=Retention(jobs=600.0, assets=600.0))
JOBS = 5


async def test_the_start_s_expiry_catch_up_goes_in_bounded_appends_and_replays_the_same(
    tmp_path: Path, autojump_clock: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Five ended jobs without their move, two moves an append at most: three appends."""
    monkeypatch.setattr(assets_actor, "SWEEP_INTERVAL", 1e9)
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    graph = json.loads((WORKFLOWS / "invert_save.json").read_text())
    with trio.fail_after(900):
        with monkeypatch.context() as older:
            # A version that did not log the moves yet.
            async def no_moves(self: Any, job_ids: Any) -> None:
                return None

            older.setattr(AssetActor, "_move_expiries", no_moves)
            async with open_extras_service(tmp_path, log=log, settings=SETTINGS) as run:
                for _ in range(JOBS):
                    made = await run.client.post("/api/v2/jobs", json={"workflow": graph})
                    assert made.status_code == 201, made.text
                await wait_idle(run.service)
                ended = [a.ended for a in run.service.state.service.api_jobs.values()]
        assert ended == [False] * JOBS
        appends: list[int] = []
        emit = Context.emit

        async def counted(self: Any, *events: Any) -> None:
            moves = sum(type(e) is se.ApiJobExpiryMoved for e in events)
            if moves:
                appends.append(moves)
            await emit(self, *events)

        monkeypatch.setattr(Context, "emit", counted)
        monkeypatch.setattr(assets_actor, "EXPIRY_MOVES_PER_APPEND", 2)
        log.close()
        again = log.reopen()
        async with open_extras_service(tmp_path, log=again, settings=SETTINGS) as run:
            await run.service.assets.ask(SweepNow(), timeout=30)
            live = run.service.state
            replayed = eventlog.fold(again.records(), apply, initial_state())
            moved = [a.ended for a in live.service.api_jobs.values()]
            same = replayed == live
    assert appends == [2, 2, 1]
    assert moved == [True] * JOBS
    assert same, "the log replays to the live state"
