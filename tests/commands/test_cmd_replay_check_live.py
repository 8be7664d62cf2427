"""``replay --check`` on a log a run is writing, and of the snapshots a restart starts from
(``LOG.snapshots/<seq>.<fingerprint>.snapshot``), from QA findings H4."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import eventlog
from conjure_actors.cli import main
from conjure_actors.commands import replay_impl
from conjure_actors.domain import events as ev
from conjure_actors.domain.state import State, apply, initial_state

T0 = 1_800_000_000.0
WF = "d" * 64


def job(n: int) -> list[Any]:
    """The records of job ``j<n>``, submitted and queued."""
    return [
        ev.JobSubmitted(job_id=f"j{n}", workflow_sha256=WF, at=T0 + n),
        ev.JobQueued(job_id=f"j{n}", at=T0 + n),
    ]


def start() -> list[Any]:
    return [
        ev.SystemStarted(run_id="r", version="0", mode="simulated", at=T0),
        ev.WorkflowRegistered(sha256=WF, name="w", graph_json="{}", at=T0),
        *job(1),
        *job(2),
    ]


@pytest.fixture
def live(tmp_path: Path) -> Iterator[tuple[Path, eventlog.LogWriter[Any]]]:
    """A log (6 records) whose writer is still open: a run writing it."""
    path = tmp_path / "run.log"
    with eventlog.open_writer(path, ev.Event, sync="always") as writer:
        writer.append_many(start())
        yield path, writer


def appending_before_the_second_fold(
    monkeypatch: pytest.MonkeyPatch, writer: eventlog.LogWriter[Any]
) -> None:
    """The run appends a job's records between --check's first fold and its second."""
    fold = replay_impl.fold_log

    def fold_after_an_append(*args: Any, **kwargs: Any) -> Any:
        writer.append_many(job(3))
        return fold(*args, **kwargs)

    monkeypatch.setattr(replay_impl, "fold_log", fold_after_an_append)


def test_check_of_a_log_being_written_folds_the_same_records_twice(
    live: tuple[Path, eventlog.LogWriter[Any]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Records appended during the check failed it: "folding twice gave different states"
    (exit 1), the second fold reading further than the first."""
    path, writer = live
    appending_before_the_second_fold(monkeypatch, writer)
    assert main(["replay", str(path), "--check"]) == 0
    assert capsys.readouterr().out.startswith(f"ok: {path}: 6 records, seqs 1..6 contiguous")


def test_check_of_a_log_being_written_says_so(
    live: tuple[Path, eventlog.LogWriter[Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    """The verdict says which records it checked, and that the log is being written."""
    path, _ = live
    assert main(["replay", str(path), "--check"]) == 0
    out = capsys.readouterr().out
    assert out.rstrip().endswith(
        "; checked records 1..6: the log is being written (it has more by now)"
    )
    assert main(["replay", str(path), "--check", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["being_written"] is True


def test_check_of_a_finished_log_does_not_say_it_is_being_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A log no writer holds: no word of a live log."""
    path = tmp_path / "run.log"
    with eventlog.open_writer(path, ev.Event, sync="none") as writer:
        writer.append_many(start())
    assert main(["replay", str(path), "--check", "--json"]) == 0
    verdict = json.loads(capsys.readouterr().out)
    assert verdict["being_written"] is False
    assert "being written" not in verdict["summary"]


def write_log(path: Path, events: list[Any]) -> list[float]:
    """Write ``events`` to a new log; the ``ts`` of each record, in seq order."""
    with eventlog.open_writer(path, ev.Event, sync="none") as writer:
        writer.append_many(events)
    return [record.ts for record in eventlog.read(path, ev.Event)]


def journal_snapshot(path: Path, events: list[Any], seq: int, ts: float) -> Path:
    """The snapshot a run's journal writes of the fold of ``events[:seq]`` (its file in
    ``LOG.snapshots/``, named for the seq and the state type)."""
    state = initial_state()
    for event in events[:seq]:
        apply(state, event)
    directory = Path(eventlog.snapshots_dir(path))
    directory.mkdir(exist_ok=True)
    file = Path(eventlog.snapshot_file(directory, seq, State))
    eventlog.write_snapshot(file, state, seq, State, last_ts=ts)
    return file


def test_check_verifies_each_snapshot_a_restart_starts_from(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The snapshots in LOG.snapshots/ (what run and serve write) were never checked: "no
    snapshot". Each is now, and the verdict says how many agree."""
    path = tmp_path / "run.log"
    events = [*start(), *job(3)]
    ts = write_log(path, events)
    for seq in (2, 4, 6):
        journal_snapshot(path, events, seq, ts[seq - 1])
    assert main(["replay", str(path), "--check"]) == 0
    assert "3 snapshots agree (seqs 2, 4, 6)" in capsys.readouterr().out
    assert main(["replay", str(path), "--check", "--json"]) == 0
    verdict = json.loads(capsys.readouterr().out)
    assert (verdict["snapshots_checked"], verdict["snapshot_seq"]) == (3, 6)


def test_check_names_a_snapshot_that_disagrees_with_the_records(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A snapshot in LOG.snapshots/ whose state is not the fold of its records fails the
    check (exit 1), named with the first differing field."""
    path = tmp_path / "run.log"
    events = start()
    ts = write_log(path, events)
    journal_snapshot(path, events, 2, ts[1])
    wrong = [*events[:3], ev.JobCancelled(job_id="j1", reason="user", at=T0 + 1)]
    file = journal_snapshot(path, wrong, 4, ts[3])
    assert main(["replay", str(path), "--check"]) == 1
    out = capsys.readouterr().out
    assert out.startswith(f"check failed: snapshot {file} at seq 4 disagrees with the records")
    assert "jobs.j1.cancel_reason: 'user' != None" in out


def test_check_names_a_snapshot_of_another_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A snapshot whose record has another time (another log's, or one since rewritten) is
    one a restart does not use: named."""
    path = tmp_path / "run.log"
    events = start()
    ts = write_log(path, events)
    file = journal_snapshot(path, events, 4, ts[3] + 1.0)
    assert main(["replay", str(path), "--check"]) == 1
    assert f"snapshot {file} at seq 4 does not belong to {path}" in capsys.readouterr().out


def test_check_names_a_damaged_snapshot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A snapshot that does not read back (a flipped byte) fails the check, named."""
    path = tmp_path / "run.log"
    events = start()
    ts = write_log(path, events)
    file = journal_snapshot(path, events, 4, ts[3])
    data = bytearray(file.read_bytes())
    data[-1] ^= 0xFF
    file.write_bytes(bytes(data))
    assert main(["replay", str(path), "--check"]) == 1
    assert capsys.readouterr().out.startswith(f"check failed: snapshot {file}: ")


def test_check_of_a_log_being_written_leaves_a_newer_snapshot_unchecked(
    live: tuple[Path, eventlog.LogWriter[Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    """A snapshot past the records the check read is one written since (the run goes on):
    not a failure while the log is being written."""
    path, _ = live
    journal_snapshot(path, [*start(), *job(3)], 8, T0)
    assert main(["replay", str(path), "--check"]) == 0
    assert "no snapshot" in capsys.readouterr().out


def test_check_of_a_finished_log_names_a_snapshot_past_its_end(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A snapshot past the end of a log no writer holds (a truncated log, another log's):
    the check fails, naming it."""
    path = tmp_path / "run.log"
    write_log(path, start())
    file = journal_snapshot(path, [*start(), *job(3)], 8, T0)
    assert main(["replay", str(path), "--check"]) == 1
    out = capsys.readouterr().out
    assert out == f"check failed: snapshot {file} covers seq 8 but the log ends at seq 6\n"


def test_check_does_not_count_a_snapshot_deleted_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A live serve deletes its older snapshots as it writes new ones: one gone between
    the listing and its seq is neither a failure nor counted as agreeing."""
    path = tmp_path / "run.log"
    events = start()
    ts = write_log(path, events)
    gone = journal_snapshot(path, events, 2, ts[1])
    journal_snapshot(path, events, 4, ts[3])
    listing = replay_impl._snapshots_to_check

    def listed_then_pruned(*args: Any) -> dict[int, list[str]]:
        due = listing(*args)
        gone.unlink()
        return due

    monkeypatch.setattr(replay_impl, "_snapshots_to_check", listed_then_pruned)
    assert main(["replay", str(path), "--check", "--json"]) == 0
    verdict = json.loads(capsys.readouterr().out)
    assert (verdict["snapshots_checked"], verdict["snapshot_seq"]) == (1, 4)
