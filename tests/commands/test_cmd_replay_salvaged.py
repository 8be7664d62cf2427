"""``replay`` of a log ``python -m eventlog salvage`` copied: its events keep their seqs (with
gaps where records were lost), and --check and --diff take the gaps for what they are."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import eventlog
from conjure_actors.cli import main
from conjure_actors.domain import events as ev
from eventlog._format import FRAME_SIZE

T0 = 1_800_000_000.0


def _story() -> list[Any]:
    return [
        ev.SystemStarted(run_id="r", version="0", mode="simulated", at=T0),
        ev.BudgetSet(limit_micros=1, at=T0 + 1),
        ev.BudgetSet(limit_micros=2, at=T0 + 2),
        ev.BudgetSet(limit_micros=3, at=T0 + 3),
        ev.SystemStopped(reason="done", at=T0 + 4),
    ]


def _salvaged(tmp_path: Path, *damaged: int) -> tuple[Path, Path]:
    """The story's log intact, and salvaged from a copy whose records ``damaged`` (seqs)
    were hit."""
    intact = tmp_path / "intact.log"
    offsets = []
    with eventlog.open_writer(intact, ev.Event, sync="none") as writer:
        for event in _story():
            writer.flush()
            offsets.append(intact.stat().st_size)
            writer.append(event)
    raw = bytearray(intact.read_bytes())
    for seq in damaged:
        raw[offsets[seq - 1] + FRAME_SIZE] ^= 0x01
    (tmp_path / "damaged.log").write_bytes(raw)
    eventlog.salvage(tmp_path / "damaged.log", tmp_path / "salvaged.log", ev.Event)
    return intact, tmp_path / "salvaged.log"


def test_check_of_a_salvaged_log_names_the_seqs_it_lost(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--check passes a salvaged log and names its gaps (it said "expected seq 2")."""
    _, salvaged = _salvaged(tmp_path, 2, 3)
    assert main(["replay", str(salvaged), "--check"]) == 0
    out = capsys.readouterr().out
    assert f"ok: {salvaged}: 3 records, seqs 1..5 but 2-3 (lost: it was salvaged)" in out


def test_diff_pairs_a_salvaged_log_with_its_source_by_seq(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The first difference is the first lost record, at its seq in both logs."""
    intact, salvaged = _salvaged(tmp_path, 3)
    assert main(["replay", str(intact), "--diff", str(salvaged)]) == 1
    out = capsys.readouterr().out
    assert out.startswith(f"first difference at seq 3: only {intact} has it: ")


def test_the_timeline_of_a_salvaged_log_shows_each_event_at_its_seq(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The timeline's seqs are the source's (4 stays 4 when 2 is lost)."""
    intact, salvaged = _salvaged(tmp_path, 2)
    assert main(["replay", str(intact)]) == 0
    before = capsys.readouterr().out.splitlines()
    assert main(["replay", str(salvaged)]) == 0
    after = capsys.readouterr().out.splitlines()
    assert after == [before[0], *before[2:]]


def test_at_a_time_before_a_salvaged_log_whose_record_1_was_lost_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A time before the first record left is refused, as on an intact log (it printed an
    empty "state after seq 0", exit 0: the check read record 1 only, which was lost)."""
    _, salvaged = _salvaged(tmp_path, 1)
    assert main(["replay", str(salvaged), "--at", "5.0"]) == 2
    err = capsys.readouterr().err
    assert "is before the log starts" in err
    assert "record 2)" in err


def test_at_a_lost_seq_says_it_was_lost(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--at 3 where record 3 was lost shows the state after seq 2 and says why, rather than
    passing it off as record 3's."""
    _, salvaged = _salvaged(tmp_path, 3)
    assert main(["replay", str(salvaged), "--at", "3"]) == 0
    captured = capsys.readouterr()
    assert (
        f"note: --at 3: record 3 of {salvaged} was lost (the log was salvaged): this is the"
        " state after seq 2"
    ) in captured.err
