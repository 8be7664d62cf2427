"""``python -m conjure_actors replay``: timeline, --at, --json, --job, --check, --diff, --follow."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

import eventlog
from conjure_actors.cli import main
from conjure_actors.domain import events as ev
from conjure_actors.domain.prices import format_usd
from conjure_actors.domain.state import SCHEMA_VERSION, State, apply, initial_state
from tests.eventlog.eventlog_testtypes import refuse_to_open

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "golden_v1.log"
T0 = 1_800_000_000.0
WF = "d" * 64


def story(job: str = "j1", failed: bool = False) -> list[Any]:
    end: Any = (
        ev.JobFailed(job_id=job, error_type="E", message="boom", at=T0 + 5)
        if failed
        else ev.JobCancelled(job_id=job, reason="user", at=T0 + 5)
    )
    return [
        ev.SystemStarted(run_id="r", version="0", mode="simulated", at=T0),
        ev.WorkflowRegistered(sha256=WF, name="w", graph_json="{}", at=T0),
        ev.JobSubmitted(job_id=job, workflow_sha256=WF, at=T0 + 1),
        ev.JobQueued(job_id=job, at=T0 + 2),
        ev.JobSubmitted(job_id="other", workflow_sha256=WF, at=T0 + 3),
        end,
        ev.SystemStopped(reason="done", at=T0 + 6),
    ]


def write(path: Path, events: list[Any]) -> Path:
    with eventlog.open_writer(path, ev.Event, sync="none") as writer:
        writer.append_many(events)
    return path


@pytest.fixture
def log(tmp_path: Path) -> Path:
    return write(tmp_path / "run.log", story())


def test_timeline_prints_one_line_per_record(log: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Seq, ISO time, subject and summary, one line per record."""
    assert main(["replay", str(log)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 7
    assert lines[2].split()[:4] == ["3", "2027-01-15T08:00:01.000Z", "job", "j1"]
    assert "submitted" in lines[2]


def test_job_filter_keeps_only_that_job(log: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--job shows only the job's own events."""
    assert main(["replay", str(log), "--job", "j1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    assert all("job j1" in line for line in lines)


def test_at_seq_prints_the_state_then(log: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--at 4: j1 is queued (not yet cancelled)."""
    assert main(["replay", str(log), "--at", "4"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("state after seq 4 ")
    assert any(line.split()[:2] == ["j1", "queued"] for line in out.splitlines())


def test_at_time_uses_event_time(log: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--at an ISO time replays the events up to that moment."""
    assert main(["replay", str(log), "--at", "2027-01-15T08:00:01.500Z"]) == 0
    assert capsys.readouterr().out.startswith("state after seq 3 ")


def test_json_has_the_documented_envelope(log: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--json prints schema_version, seq, and the state with jobs, machines, ledger."""
    assert main(["replay", str(log), "--json", "--job", "j1"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["schema_version"] == SCHEMA_VERSION
    assert doc["seq"] == 7
    assert set(doc["state"]["jobs"]) == {"j1"}
    assert doc["state"]["jobs"]["j1"]["status"] == "cancelled"
    assert doc["state"]["ledger"]["total_micros"] == 0


@pytest.mark.parametrize("name", ["golden_v1", "golden_v2_jobs", "golden_v3_service"])
def test_json_state_is_the_golden_state(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    """--json prints each golden log's state exactly as its golden builtins (the State is
    encoded directly, not through state_to_builtins)."""
    log = GOLDEN.with_name(f"{name}.log")
    assert main(["replay", str(log), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["state"] == json.loads(log.with_name(f"{name}_state.json").read_text())


def test_bad_at_is_a_usage_error(log: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An --at that is neither a seq nor a time exits 2 with one line."""
    assert main(["replay", str(log), "--at", "yesterday"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "--at" in err


def test_unknown_job_is_a_usage_error(log: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--job naming no job exits 2."""
    assert main(["replay", str(log), "--job", "nope"]) == 2
    assert "nope" in capsys.readouterr().err


def test_missing_log_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A missing log is one line and exit 2."""
    assert main(["replay", str(tmp_path / "nope.log")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_torn_tail_is_reported_and_replay_continues(
    log: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Half a record at the end: a warning, then every complete record."""
    with log.open("ab") as f:
        f.write(b"\x01\x02\x03\x04\x05")
    assert main(["replay", str(log)]) == 0
    captured = capsys.readouterr()
    assert "torn tail of 5 bytes" in captured.err
    assert len(captured.out.splitlines()) == 7


def test_corruption_in_the_middle_exits_1_with_the_offset(
    log: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A flipped byte in the middle: exit 1, one line naming the offset, no traceback."""
    data = bytearray(log.read_bytes())
    data[len(data) // 2] ^= 0xFF
    log.write_bytes(bytes(data))
    assert main(["replay", str(log)]) == 1
    err = capsys.readouterr().err
    assert "offset" in err
    assert "Traceback" not in err


def test_check_passes_on_a_good_log(log: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--check: contiguous, deterministic, no snapshot -> exit 0."""
    assert main(["replay", str(log), "--check"]) == 0
    assert capsys.readouterr().out.startswith("ok: ")


def test_check_accepts_an_agreeing_snapshot(log: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A snapshot equal to the fold of its records passes."""
    state = initial_state()
    for event in story()[:4]:
        apply(state, event)
    eventlog.write_snapshot(f"{log}.snapshot", state, 4, State)
    assert main(["replay", str(log), "--check"]) == 0
    assert "snapshot at seq 4 agrees" in capsys.readouterr().out


def test_check_names_a_disagreeing_snapshot(log: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A snapshot that differs from the records fails with the first differing field."""
    state = initial_state()
    for event in story()[:4]:
        apply(state, event)
    state.jobs["j1"].status = "running"
    eventlog.write_snapshot(f"{log}.snapshot", state, 4, State)
    assert main(["replay", str(log), "--check"]) == 1
    out = capsys.readouterr().out
    assert "jobs.j1.status: 'running' != 'queued'" in out


def test_diff_names_the_first_difference(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two logs that differ at seq 6 are reported there, with the state field."""
    a = write(tmp_path / "a.log", story())
    b = write(tmp_path / "b.log", story(failed=True))
    assert main(["replay", str(a), "--diff", str(b)]) == 1
    out = capsys.readouterr().out
    assert out.startswith("first difference at seq 6:")
    assert "jobs.j1" in out


def test_diff_of_equal_logs_is_identical(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Equal logs: exit 0."""
    a = write(tmp_path / "a.log", story())
    b = write(tmp_path / "b.log", story())
    assert main(["replay", str(a), "--diff", str(b)]) == 0
    assert capsys.readouterr().out.startswith("identical")


def test_follow_tails_until_the_run_stops(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--follow prints records appended while it runs and ends at SystemStopped."""
    path = tmp_path / "live.log"
    events = story()
    writer = eventlog.open_writer(path, ev.Event, sync="none")
    writer.append_many(events[:3])
    writer.flush()

    def finish() -> None:
        writer.append_many(events[3:])
        writer.close()

    thread = threading.Thread(target=finish)
    thread.start()
    try:
        assert main(["replay", str(path), "--follow", "--poll", "0.01"]) == 0
    finally:
        thread.join(timeout=10)
    assert len(capsys.readouterr().out.splitlines()) == 7


@pytest.mark.slow  # ~0.2 s or more: the inner loop runs without it, CI with it
def test_golden_log_replays_from_the_command_line(tmp_path: Path) -> None:
    """The real entry point (a subprocess) replays the golden log and checks it."""
    log = shutil.copy(GOLDEN, tmp_path / "golden.log")
    done = subprocess.run(
        [sys.executable, "-m", "conjure_actors", "replay", str(log), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "107 records" in done.stdout


def test_at_epoch_seconds_is_a_time(log: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A large integer is epoch seconds (e.g. from ``date +%s``), not a seq."""
    assert main(["replay", str(log), "--at", str(int(T0 + 2))]) == 0
    assert capsys.readouterr().out.startswith("state after seq 4 ")


RATE = 990_000
"""$0.99/h: 275 micro-USD a second."""


def _machine_ready_at_t0_plus_10() -> list[Any]:
    """A run whose machine s1 is Ready at T0+10, billed at :data:`RATE`."""
    return [
        ev.SystemStarted(run_id="r", version="0", mode="runcomfy", at=T0),
        ev.MachineLaunchRequested(
            request_key="k",
            server_type="medium",
            workflow_version="v",
            estimated_duration=600,
            at=T0,
        ),
        ev.MachineLaunched(request_key="k", server_id="s1", at=T0 + 1),
        ev.MachineReady(
            server_id="s1",
            service_ready_at=T0 + 10,
            estimated_stopping_at=T0 + 610,
            rate_micros_per_hour=RATE,
            price_table_version="t",
            at=T0 + 10,
        ),
    ]


def test_state_shows_what_a_running_machine_has_cost_by_then(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--at TIME: a machine Ready at T0+10 and never accrued has cost 100 s by T0+110 (the
    ledger's accruals lag; the billing rule does not)."""
    log = write(
        tmp_path / "m.log",
        [*_machine_ready_at_t0_plus_10(), ev.SystemStopped(reason="done", at=T0 + 200)],
    )
    assert main(["replay", str(log), "--at", "2027-01-15T08:01:50Z"]) == 0
    out = capsys.readouterr().out
    machine = next(line for line in out.splitlines() if line.split()[:1] == ["s1"])
    assert machine.split()[-1] == "$0.0275"
    ledger = next(line for line in out.splitlines() if line.startswith("ledger:"))
    assert "total $0.0000 (accrued; $0.0275 billed by 2027-01-15T08:01:50.000Z)" in ledger


def test_the_bill_of_a_machine_stopped_again_ends_at_the_second_stop(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A machine whose first DELETE answered 200 at T0+110 but that billed on until a
    second one answered at T0+210: the replayed bill is 200 s, not 100 s."""
    log = write(
        tmp_path / "m.log",
        [
            *_machine_ready_at_t0_plus_10(),
            ev.MachineStopping(server_id="s1", reason="idle", at=T0 + 109),
            ev.MachineStopped(
                server_id="s1",
                stopped_at=T0 + 110,
                billed_seconds=100,
                cost_micros=27_500,
                at=T0 + 110,
            ),
            ev.MachineStoppedAgain(
                server_id="s1",
                stopped_at=T0 + 210,
                billed_seconds=200,
                cost_micros=55_000,
                at=T0 + 210,
            ),
            ev.SystemStopped(reason="done", at=T0 + 220),
        ],
    )
    assert main(["replay", str(log), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["state"]["ledger"]["total_micros"] == 55_000
    assert main(["replay", str(log), "--at", "2027-01-15T08:05:00Z"]) == 0
    machine = next(
        line for line in capsys.readouterr().out.splitlines() if line.split()[:1] == ["s1"]
    )
    assert machine.split()[-1] == "$0.0550"


@pytest.mark.parametrize("at", ["5.5", "2001-01-01T00:00:00Z"])
def test_at_a_time_before_the_log_says_so(
    log: Path, capsys: pytest.CaptureFixture[str], at: str
) -> None:
    """--at 5.5 was read as an epoch time and printed 'state after seq 0 (-)' (--at -1 is
    a record number: test_cmd_replay_at)."""
    assert main(["replay", str(log), "--at", at]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert "is before the log starts (2027-01-15T08:00:00.000Z, record 1)" in err


@pytest.mark.parametrize("args", [[], ["--json"], ["--at", "3"]])
def test_a_log_without_records_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    """A 0-byte log exited 0 printing nothing (the timeline) or an empty state."""
    empty = tmp_path / "empty.log"
    empty.write_bytes(b"")
    assert main(["replay", str(empty), *args]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert "is empty (0 bytes): no record to replay" in captured.err


@pytest.mark.parametrize(
    "args", [["--check"], ["--diff", "{log}"], ["--follow"], [], ["--json"], ["--at", "2"]]
)
def test_a_log_this_user_may_not_read_is_one_line(
    log: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    """No read permission was a PermissionError traceback (exit 1) with --check, --diff and
    --follow: every mode now says so in one line, exit 2."""
    unreadable = log.with_name("np.log")
    shutil.copy(log, unreadable)
    refuse_to_open(monkeypatch, unreadable)
    argv = [arg.format(log=log) for arg in args]
    assert main(["replay", str(unreadable), *argv, "--poll", "0.01"]) == 2
    captured = capsys.readouterr()
    assert captured.err == (
        f"error: cannot read event log {str(unreadable)!r}: Permission denied; give this user"
        " read access to it, or run as its owner\n"
    )


@pytest.mark.parametrize(
    ("args", "to_do"),
    [
        (["{empty}", "--check"], "check"),
        (["{log}", "--diff", "{empty}"], "compare"),
        (["{empty}", "--diff", "{log}"], "compare"),
    ],
)
def test_check_and_diff_refuse_a_log_without_records(
    log: Path, capsys: pytest.CaptureFixture[str], args: list[str], to_do: str
) -> None:
    """A 0-byte log passed --check ("ok: 0 records, seqs 1..0") and was diffed as a log of
    no record; refused as plain replay refuses it (either side of --diff)."""
    empty = log.with_name("empty.log")
    empty.write_bytes(b"")
    assert main(["replay", *[arg.format(log=log, empty=empty) for arg in args]]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        f"error: event log {str(empty)!r} is empty (0 bytes): no record to {to_do}\n"
    )


def _shutdown(at: float) -> list[Any]:
    """The actors' stopped records a run logs after its SystemStopped (the root's last)."""
    return [
        ev.ActorStopped(actor=name, incarnation=1, reason="shutdown", at=at)
        for name in ("root/jobs", "root")
    ]


def test_follow_shows_the_records_after_the_run_stopped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--follow ended at SystemStopped and dropped the actors' stopped records after it that
    plain replay shows; it now prints every record of a finished log, then ends."""
    path = write(tmp_path / "done.log", [*story(), *_shutdown(T0 + 7)])
    assert main(["replay", str(path), "--follow", "--poll", "0.01"]) == 0
    followed = capsys.readouterr().out
    assert main(["replay", str(path)]) == 0
    assert followed == capsys.readouterr().out
    assert followed.splitlines()[-1].split()[2:5] == ["actor", "root", "stopped"]


def test_follow_ends_once_the_stopped_run_closes_its_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """After SystemStopped, follow waits while the run still holds the log open and prints
    what it appends before it closes the log."""
    path = tmp_path / "live.log"
    writer = eventlog.open_writer(path, ev.Event, sync="none")
    writer.append_many(story())
    writer.flush()
    probes: list[bool] = []
    being_written = eventlog.being_written

    def the_run_finishes_at_the_first_probe(log: str) -> bool:
        probes.append(being_written(log))
        if len(probes) == 1:  # the run, still writing, logs its actors' ends and closes
            writer.append_many(_shutdown(T0 + 7))
            writer.close()
        return probes[-1]

    monkeypatch.setattr(eventlog, "being_written", the_run_finishes_at_the_first_probe)
    try:
        assert main(["replay", str(path), "--follow", "--poll", "0.01"]) == 0
    finally:
        writer.close()
    assert probes == [True, False]
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 9
    assert lines[-1].split()[2:5] == ["actor", "root", "stopped"]


@pytest.mark.parametrize(
    ("at", "by"),
    [("5", T0 + 110), ("2027-01-15T08:01:50Z", T0 + 110), ("2027-01-15T08:01:00Z", T0 + 60)],
)
def test_json_has_the_bill_the_text_view_shows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], at: str, by: float
) -> None:
    """--json --at left out what a running machine had cost by then (the text view's "cost
    so far" and "billed by"): its billed figures are the text view's, in micros."""
    log = write(
        tmp_path / "m.log",
        [
            *_machine_ready_at_t0_plus_10(),
            ev.JobSubmitted(job_id="j1", workflow_sha256=WF, at=T0 + 110),
            ev.SystemStopped(reason="done", at=T0 + 200),
        ],
    )
    assert main(["replay", str(log), "--at", at]) == 0
    text = capsys.readouterr().out
    assert main(["replay", str(log), "--at", at, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    micros = (RATE * int(by - (T0 + 10)) + 1800) // 3600
    assert doc["billed"] == {
        "by": by,
        "total_micros": micros,
        "machines": {"s1": micros},
        "at_most": [],
    }
    assert doc["state"]["ledger"]["total_micros"] == 0
    assert f"$0.0000 (accrued; {format_usd(micros)} billed by" in text
