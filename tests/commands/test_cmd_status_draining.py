"""``status LOG``: a machine draining at the log's end (``MachineDraining``) is shown
draining, with its reason, as ``replay`` shows it (it said plain ``ready``)."""

from __future__ import annotations

from pathlib import Path

import pytest

import eventlog
from conjure_actors.cli import main
from conjure_actors.domain.events import UPCASTERS, Event

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "golden_v8_draining.log"


def test_status_shows_a_machine_draining_with_its_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The golden log cut after the give-up's record (22): ``ready, draining (...)``."""
    records = list(eventlog.read(GOLDEN, Event, upcasters=UPCASTERS))[:22]
    log = tmp_path / "cut.log"
    with eventlog.open_writer(log, Event, sync="none") as writer:
        writer.append_many([r.event for r in records], ts=[r.ts for r in records])
    assert main(["status", str(log)]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if "machine srv-1" in line]
    assert len(rows) == 1
    assert "ready, draining (reattach_given_up)" in rows[0]
