"""``replay --follow`` of a log whose writer is gone (QA11 7): a ``kill -9`` or an OOM kill of
``serve`` left the follow waiting forever, silent, though the log records its writer and
``status LOG`` told at once that it was gone. Now, once no process holds the log while its
last run has not stopped, the follow prints what was written last, then one line naming
the process, that it crashed or was killed and what finishes the log, and exits 1."""

from __future__ import annotations

import platform
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import eventlog
from conjure_actors.cli import main
from conjure_actors.domain import events as ev
from conjure_actors.runtime.process import process_id
from tests.commands.test_cmd_replay import T0, _machine_ready_at_t0_plus_10, story, write

WHEN = "2027-01-15T08:00:00.000Z"  # T0, as the timeline writes it


@pytest.fixture
def dead_pid() -> int:
    """The pid of a process of this host that has exited."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.fixture
def live_child() -> Iterator[subprocess.Popen[bytes]]:
    """A process of this host that runs for the test's length."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        yield child
    finally:
        child.kill()
        child.wait()


def _started_by(pid: int, *, mode: str = "simulated", host: str | None = None) -> Any:
    """The run's SystemStarted as a process of pid ``pid`` of this host records it."""
    writer = process_id(pid)
    return ev.SystemStarted(
        run_id="r",
        version="0",
        mode=mode,
        at=T0,
        writer_host=host or writer.host,
        writer_pid=pid,
        writer_started=writer.started if writer.started is not None else 12345,
        writer_boot_id=writer.boot_id,
    )


def _follow(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str], str]:
    """``replay LOG --follow``'s exit code, lines and stderr; in a thread, so that a follow
    that waits for ever (the bug) fails the test after 20 s instead of hanging it."""
    codes: list[int] = []
    thread = threading.Thread(
        target=lambda: codes.append(main(["replay", str(path), "--follow", "--poll", "0.01"])),
        daemon=True,
    )
    thread.start()
    thread.join(timeout=20)
    if not codes:
        pytest.fail("replay --follow still waits after 20 s")
    captured = capsys.readouterr()
    return codes[0], captured.out.splitlines(), captured.err


def test_a_log_whose_writer_was_killed_is_said_at_once_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], dead_pid: int, no_credentials: None
) -> None:
    """Its run did not stop and nothing holds it: every record, then one line (which
    process, gone, what finishes it), exit 1; it waited for ever."""
    path = write(tmp_path / "run.log", [_started_by(dead_pid), *story()[1:-1]])
    code, lines, err = _follow(path, capsys)
    assert code == 1
    assert len(lines) == 6
    assert err == (
        f"error: the process that was writing {path} (pid {dead_pid}, started {WHEN}) is"
        f" gone: crashed or killed, its run not stopped; `run --resume {path}` finishes it\n"
    )


def test_a_writer_that_dies_while_followed_is_said_after_its_last_records(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    dead_pid: int,
    no_credentials: None,
) -> None:
    """Followed while it writes; it appends two records and dies (its lock released): the
    two are printed, then the line, exit 1."""
    path = tmp_path / "live.log"
    writer = eventlog.open_writer(path, ev.Event, sync="none")
    writer.append_many([_started_by(dead_pid), *story()[1:3]])
    writer.flush()
    probes: list[bool] = []
    being_written = eventlog.being_written

    def dies_at_the_first_probe(log: str) -> bool:
        probes.append(being_written(log))
        if len(probes) == 1:
            writer.append_many(story()[3:5])
            writer.close()  # (as a kill releases its lock)
        return probes[-1]

    monkeypatch.setattr(eventlog, "being_written", dies_at_the_first_probe)
    try:
        code, lines, err = _follow(path, capsys)
    finally:
        writer.close()
    assert code == 1
    assert probes[0] is True
    assert [int(line.split()[0]) for line in lines] == [1, 2, 3, 4, 5]
    assert err.startswith(f"error: the process that was writing {path} (pid {dead_pid},")
    assert err.count("\n") == 1


def test_its_paid_machines_are_said_to_bill_until_it_is_finished(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_credentials: None
) -> None:
    """A crashed run with a machine Ready (an older log: no writer recorded): said."""
    path = write(tmp_path / "paid.log", _machine_ready_at_t0_plus_10())
    code, _, err = _follow(path, capsys)
    assert code == 1
    assert err.startswith(f"error: the process that was writing {path} (started {WHEN}) is gone")
    assert err.rstrip().endswith("; its 1 machine(s) may bill until then (or their lease's end)")


def test_a_copy_of_a_log_a_live_process_writes_is_said_to_be_one(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    live_child: subprocess.Popen[bytes],
    no_credentials: None,
) -> None:
    """No lock on it, but the process its run records is alive: a copy, said so, exit 1."""
    path = write(tmp_path / "copy.log", [_started_by(live_child.pid), *story()[1:-1]])
    code, _, err = _follow(path, capsys)
    assert code == 1
    assert err.startswith(
        f"error: {path} is a copy of a log that process {live_child.pid} on this host is still"
        " writing"
    )


def test_a_writer_of_another_host_is_noted_once_and_followed_on(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    no_credentials: None,
) -> None:
    """Its process and lock cannot be seen from here: a note, and the follow goes on (to its
    SystemStopped, appended at the third probe)."""
    other = platform.node() + "-elsewhere"
    path = write(tmp_path / "far.log", [_started_by(1, host=other), *story()[1:-1]])
    probes: list[int] = []

    def never_held(log: str) -> bool:
        probes.append(1)
        if len(probes) == 3:
            with eventlog.open_writer(path, ev.Event, sync="none") as writer:
                writer.append(story()[-1])
        return False

    monkeypatch.setattr(eventlog, "being_written", never_held)
    code, lines, err = _follow(path, capsys)
    assert code == 0
    assert len(lines) == 7
    assert err == (
        f"note: {path} is written from host {other}: whether its writer still runs cannot be"
        " told from here; following on (Ctrl-C stops)\n"
    )


def test_a_writer_that_took_the_log_up_again_is_followed_on(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    dead_pid: int,
    no_credentials: None,
) -> None:
    """Its lock free, then held again when asked once more (a restart took it up): followed
    on, each record once, to the new run's stop; exit 0."""
    path = write(tmp_path / "restart.log", [_started_by(dead_pid), *story()[1:-1]])
    probes: list[int] = []

    def restarted_at_the_second_probe(log: str) -> bool:
        probes.append(1)
        if len(probes) == 2:
            with eventlog.open_writer(path, ev.Event, sync="none") as writer:
                writer.append_many([_started_by(dead_pid), story()[-1]])
            return True
        return False

    monkeypatch.setattr(eventlog, "being_written", restarted_at_the_second_probe)
    code, lines, err = _follow(path, capsys)
    assert (code, err) == (0, "")
    assert [int(line.split()[0]) for line in lines] == list(range(1, 9))


def test_a_writer_that_died_before_its_run_started_is_said_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_credentials: None
) -> None:
    """Only its actors' starts logged (they come before the run's): gone all the same."""
    path = write(
        tmp_path / "early.log",
        [ev.ActorStarted(actor=name, incarnation=1, at=T0) for name in ("root", "root/jobs")],
    )
    code, lines, err = _follow(path, capsys)
    assert code == 1
    assert len(lines) == 2
    assert err.startswith(f"error: the process that was writing {path} is gone: crashed or")
