"""``replay --at``: a negative number (or 0) is a record number that does not exist, not an
epoch time in 1969; a record number past the log's end says the log ends before it."""

from __future__ import annotations

from pathlib import Path

import pytest

from conjure_actors.cli import main
from tests.commands.bad_input_support import one_line_usage_error
from tests.commands.test_cmd_replay import T0, story, write


@pytest.fixture
def log(tmp_path: Path) -> Path:
    return write(tmp_path / "run.log", story())


@pytest.mark.parametrize("at", ["-1", "-3.5", "0"])
def test_a_record_number_below_1_says_they_start_at_1(
    log: Path, at: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """--at -1 / 0: record numbers start at 1 (and how to give a time), not "1969-12-31"."""
    code = main(["replay", str(log), "--at", at])
    err = one_line_usage_error(code, capsys.readouterr().err)
    assert f"--at {at}: record numbers start at 1" in err
    assert "a time (e.g. 2026-11-23T10:15:00Z or epoch seconds)" in err
    assert "1969" not in err
    assert "1970" not in err


@pytest.mark.parametrize("options", [[], ["--json"]], ids=["text", "json"])
def test_a_record_number_past_the_end_says_where_the_log_ends(
    log: Path, options: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """--at 99999 on a log of 7 records: its last state, and one line on stderr saying so."""
    assert main(["replay", str(log), "--at", "99999", *options]) == 0
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [
        f"note: --at 99999: {log} ends at seq 7: this is its last state"
    ]
    assert ("state after seq 7 " in captured.out) or ('"seq": 7' in captured.out)


@pytest.mark.parametrize("at", ["7", str(int(T0) + 3600)], ids=["last seq", "later time"])
def test_the_last_record_or_a_later_time_says_nothing_more(
    log: Path, at: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The last seq itself, or a time after the log (the state then: the bill to that
    time), is no mistake: nothing on stderr."""
    assert main(["replay", str(log), "--at", at]) == 0
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("at", ["2", "7"], ids=["early", "last intact"])
def test_garbage_after_the_end_leaves_the_state_at_an_intact_record(
    log: Path, at: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Garbage appended after the last record (seq 8 would start there): --at 2 failed with
    "corrupt at ... seq 8" although records 1..7 are intact. It answers from them, warning
    of the damage on stderr."""
    with log.open("ab") as fh:
        fh.write(b"\x7f" * 64)
    assert main(["replay", str(log), "--at", at]) == 0
    captured = capsys.readouterr()
    assert f"state after seq {at} " in captured.out
    assert captured.err.startswith(f"warning: {log}: corrupt at byte offset "), captured.err
    assert "(record seq 8: " in captured.err
    assert "eventlog salvage" in captured.err


def test_a_record_at_or_past_the_damage_is_still_refused(
    log: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--at 8 on that log: the record is the damaged one, so the damage is the answer
    (exit 1, as replay exits on a damaged log), not a state passed off as seq 8's."""
    with log.open("ab") as fh:
        fh.write(b"\x7f" * 64)
    assert main(["replay", str(log), "--at", "8"]) == 1
    assert "is corrupt at byte offset" in capsys.readouterr().err
