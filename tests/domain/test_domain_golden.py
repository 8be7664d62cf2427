"""Old logs keep replaying: the checked-in golden logs fold to their checked-in states."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import eventlog
from conjure_actors.domain.events import EVENT_TYPES, Event
from conjure_actors.domain.state import apply, initial_state, state_to_builtins

DATA = Path(__file__).resolve().parent.parent / "data"
GOLDEN_LOGS = sorted(DATA.glob("golden_v*.log"))


def test_golden_logs_exist() -> None:
    """At least the v1 golden log is checked in."""
    assert [p.name for p in GOLDEN_LOGS][:1] == ["golden_v1.log"]


@pytest.mark.parametrize("log", GOLDEN_LOGS, ids=lambda p: p.name)
def test_golden_log_replays_to_its_recorded_state(log: Path) -> None:
    """Today's decoder and fold rebuild exactly the state recorded when the log was written."""
    state = initial_state()
    for record in eventlog.read(log, Event):
        apply(state, record.event)
    expected = json.loads(log.with_name(log.stem + "_state.json").read_text())
    assert state_to_builtins(state) == expected
    assert state.anomaly_count == 0


def test_golden_logs_cover_every_event_type() -> None:
    """Each event type of today appears in some golden log (a new type needs a new golden)."""
    seen = {type(r.event) for log in GOLDEN_LOGS for r in eventlog.read(log, Event)}
    missing = sorted(cls.__name__ for cls in EVENT_TYPES if cls not in seen)
    assert not missing, f"write tests/data/golden_v2.log covering {missing}"
