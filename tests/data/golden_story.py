"""What every golden-log generator (``make_golden*.py``) shares: a story told event by event
against the state it builds, and the one way a golden log and its state JSON are written."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import eventlog
from conjure_actors.domain import events as ev
from conjure_actors.domain.state import State, apply, initial_state, state_to_builtins


class Story:
    """Events decided against the state as they go (so they are legal), at ``t0 + seconds``."""

    def __init__(self, t0: float) -> None:
        self.t0 = t0
        self.state: State = initial_state()
        self.out: list[Any] = []

    def emit(self, *events: Any) -> None:
        for event in events:
            self.out.append(event)
            apply(self.state, event)

    def t(self, seconds: float) -> float:
        return self.t0 + seconds


def write_golden(
    log: Path, state_path: Path, events: list[Any], *, state_only: bool = False
) -> int:
    """Write ``log`` (never over an existing one: golden logs are never regenerated) and the
    state it replays to; ``state_only``: rewrite the state JSON from the existing log."""
    if not state_only:
        if log.exists():
            print(f"{log} exists: golden logs are never regenerated (write a new one)")
            return 1
        with eventlog.open_writer(log, ev.Event, sync="always") as writer:
            writer.append_many(events)
    state = initial_state()
    for record in eventlog.read(log, ev.Event):
        apply(state, record.event)
    state_path.write_text(json.dumps(state_to_builtins(state), indent=1, sort_keys=True) + "\n")
    print(f"wrote {log.name} ({len(events)} events) and {state_path.name}")
    return 0
