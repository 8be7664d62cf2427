"""``run --resume LOG`` reads its log once, from its newest snapshot: the options it keeps
(out folder, machine type, cap, idle timeout) come from the state (the last SystemStarted's),
and the journal starts from that state. It used to walk the whole log once more for the
options alone (1 s more on a 1M-event log), and fold it again to open the journal."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import eventlog
import eventlog.reader
from conjure_actors.cli import main
from conjure_actors.commands import run as run_mod
from conjure_actors.commands.run import _open_run_journal, keep_run_options, read_log
from conjure_actors.domain import events as ev
from conjure_actors.domain.state import State, apply, initial_state
from conjure_actors.errors import UsageError

pytestmark = pytest.mark.usefixtures("no_credentials")


def _started(at: float, **options: Any) -> ev.SystemStarted:
    return ev.SystemStarted(run_id="r1", version="0", mode="simulated", at=at, **options)


_OPTIONS: dict[str, Any] = {
    "out_dir": "/tmp/x/o1",
    "server_type": "2x-large",
    "max_machines": 2,
    "idle_timeout": 30.0,
}


def _args(resume: Path) -> argparse.Namespace:
    options = {"out": None, "server_type": None, "max_machines": None, "idle_timeout": None}
    return argparse.Namespace(resume=str(resume), **options)


def _log_with_a_snapshot(path: Path, filler: int, after: int) -> int:
    """A run's start with options, ``filler`` budget events, a snapshot of the state there,
    then ``after`` more events; returns the snapshot's seq."""
    events: list[Any] = [_started(1.0, **_OPTIONS)]
    events += [ev.BudgetSet(limit_micros=i, at=2.0) for i in range(filler)]
    with eventlog.open_writer(path, ev.Event, sync="none") as writer:
        writer.append_many(events)
    state = initial_state()
    for record in eventlog.read(path, ev.Event):
        apply(state, record.event)
    seq = len(events)
    snapshots = eventlog.snapshots_dir(path)
    Path(snapshots).mkdir()
    eventlog.write_snapshot(
        eventlog.snapshot_file(snapshots, seq, State), state, seq, State, last_ts=record.ts
    )
    with eventlog.open_writer(path, ev.Event, sync="none") as writer:
        writer.append_many([ev.BudgetSet(limit_micros=None, at=3.0) for _ in range(after)])
    return seq


@pytest.fixture
def records_read(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The seqs of every record decoded from a log file (by any reader of eventlog)."""
    seen: list[int] = []
    real = eventlog.reader._read_fd

    def counting(*args: Any, **kwargs: Any) -> Iterator[Any]:
        for record in real(*args, **kwargs):
            seen.append(record.seq)
            yield record

    monkeypatch.setattr(eventlog.reader, "_read_fd", counting)
    return seen


def test_the_options_a_resume_keeps_are_read_from_the_snapshot(
    tmp_path: Path, records_read: list[int]
) -> None:
    """Only the records from the snapshot on are read: not the 200 before it."""
    log = tmp_path / "r.log"
    snap_seq = _log_with_a_snapshot(log, filler=200, after=3)
    del records_read[:]
    args = _args(log)
    logged = keep_run_options(args)
    assert (args.out, args.server_type, args.max_machines, args.idle_timeout) == (
        "/tmp/x/o1",
        "2x-large",
        2,
        30.0,
    )
    assert logged.last_seq == snap_seq + 3
    assert min(records_read) == snap_seq
    assert len(records_read) == 4  # the snapshot's record, checked, and the 3 after it


def test_a_resume_of_a_resume_keeps_the_first_runs_options(tmp_path: Path) -> None:
    """The options are the last start's: a resume records those it kept, so a resume of it
    keeps them again (and an option given to a resume is the next one's)."""
    log = tmp_path / "r.log"
    with eventlog.open_writer(log, ev.Event, sync="none") as writer:
        writer.append_many(
            [
                _started(1.0, **_OPTIONS),
                ev.SystemStopped(reason="interrupted", at=2.0),
                _started(3.0, **{**_OPTIONS, "max_machines": 5}),  # resumed --max-machines 5
                ev.SystemStopped(reason="interrupted", at=4.0),
            ]
        )
    args = _args(log)
    keep_run_options(args)
    assert (args.out, args.server_type, args.max_machines, args.idle_timeout) == (
        "/tmp/x/o1",
        "2x-large",
        5,
        30.0,
    )


@pytest.mark.slow
def test_a_resume_of_a_resume_runs_with_the_first_runs_options(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """End to end, twice: each resume's own start records the options of the run."""
    options = {**_OPTIONS, "out_dir": str(tmp_path / "o1")}
    with eventlog.open_writer(tmp_path / "r.log", ev.Event, sync="none") as writer:
        writer.append_many([_started(time.time() - 30, **options)])
    for _ in range(2):
        assert main(["run", "--resume", "r.log", "--json"]) == 0
        summary = json.loads(capsys.readouterr().out.splitlines()[-1])
        assert summary["out_dir"] == str(tmp_path / "o1")
    starts = [
        r.event
        for r in eventlog.read(tmp_path / "r.log", ev.Event)
        if isinstance(r.event, ev.SystemStarted)
    ]
    kept = [(s.out_dir, s.server_type, s.max_machines, s.idle_timeout) for s in starts]
    assert kept == [tuple(options.values())] * 3


async def test_the_resumed_journal_starts_from_the_state_read_for_the_options(
    tmp_path: Path, records_read: list[int]
) -> None:
    """Opening the journal folds no record again: it starts from what read_log read."""
    log = tmp_path / "r.log"
    _log_with_a_snapshot(log, filler=50, after=2)
    logged = read_log(log)
    del records_read[:]
    async with _open_run_journal(log, time.time, fresh=False, logged=logged) as journal:
        assert journal.state is logged.state
        assert journal.last_seq == logged.last_seq
    assert records_read == []


async def test_a_log_that_lost_records_since_it_was_read_is_refused(tmp_path: Path) -> None:
    """The state read is of a longer log than the one opened (replaced meanwhile): refused,
    never a journal that would append seqs the state already holds."""
    log = tmp_path / "r.log"
    _log_with_a_snapshot(log, filler=5, after=2)
    logged = read_log(log)
    longer = type(logged)(logged.state, logged.last_seq + 10, logged.used_snapshot_seq)
    with pytest.raises(UsageError, match="the log changed while this resume read it"):
        async with _open_run_journal(log, time.time, fresh=False, logged=longer):
            pytest.fail("opened a log shorter than the state read")


async def test_a_log_that_lost_records_since_it_was_read_gets_no_snapshot_of_that_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Refused, the shorter log keeps no snapshot of the longer log's state: the command run
    again, as the refusal says, reads the log as it is (a snapshot written at the open, under
    the shorter log's last seq, was trusted by the next resume, replay and status)."""
    monkeypatch.setattr(run_mod, "SNAPSHOT_EVERY", 4)
    log = tmp_path / "r.log"
    started = ev.SystemStarted(run_id="r1", version="0", mode="simulated", at=1.0)
    budgets = [ev.BudgetSet(limit_micros=i, at=2.0) for i in range(1, 12)]
    with eventlog.open_writer(log, ev.Event, sync="none") as writer:
        writer.append_many([started, *budgets])  # seqs 1..12: the budget is 11
    logged = read_log(log)
    log.unlink()  # replaced by a shorter copy (seqs 1..6: the budget is 5) before the open
    with eventlog.open_writer(log, ev.Event, sync="none") as writer:
        writer.append_many([started, *budgets[:5]])
    with pytest.raises(UsageError, match="the log changed while this resume read it"):
        async with _open_run_journal(log, time.time, fresh=False, logged=logged):
            pytest.fail("opened a log shorter than the state read")
    assert read_log(log).state.budget.limit_micros == 5
