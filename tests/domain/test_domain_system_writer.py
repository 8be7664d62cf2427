"""``SystemStarted`` names the process that writes its run (QA8 Q2); the fold keeps it in
``state.system``, and a log written before it was recorded decodes as ever."""

from __future__ import annotations

from typing import Any

import msgspec

from conjure_actors.domain import events as ev
from conjure_actors.domain.state import State, apply, initial_state

WRITER = {
    "writer_host": "h1",
    "writer_pid": 4242,
    "writer_started": 123456,
    "writer_boot_id": "b-1",
}


def _started(run_id: str, **writer: Any) -> ev.SystemStarted:
    return ev.SystemStarted(run_id=run_id, version="0", mode="runcomfy", at=1.0, **writer)


def _writer(state: State) -> tuple[object, ...]:
    system = state.system
    return (system.writer_host, system.writer_pid, system.writer_started, system.writer_boot_id)


def test_the_writer_of_the_last_start_is_kept() -> None:
    """state.system holds the writer its last SystemStarted named."""
    state = apply(initial_state(), _started("r1", **WRITER))
    assert _writer(state) == ("h1", 4242, 123456, "b-1")


def test_a_start_that_names_no_writer_forgets_the_earlier_one() -> None:
    """A later start (an older version's) names none: the earlier run's writer is not its."""
    state = apply(apply(initial_state(), _started("r1", **WRITER)), _started("r2"))
    assert _writer(state) == (None, None, None, None)


def test_an_old_start_without_a_writer_decodes() -> None:
    """A system.started record written before the fields were: each None."""
    old = msgspec.msgpack.encode(
        {"type": "system.started", "run_id": "r1", "version": "0", "mode": "runcomfy", "at": 1.0}
    )
    event = msgspec.msgpack.decode(old, type=ev.Event)
    assert isinstance(event, ev.SystemStarted)
    assert (event.writer_host, event.writer_pid, event.writer_started, event.writer_boot_id) == (
        None,
        None,
        None,
        None,
    )
