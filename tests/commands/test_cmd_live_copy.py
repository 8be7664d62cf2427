"""A copy of a log that another process of this host still writes (QA8 Q2): ``run --resume``
and ``serve --log`` on it are refused in one line, before anything is written or asked of
the cloud (the copy would adopt that process's machines, stop one it has just leased, and
both ledgers would bill them). A writer that ended, another host's, a reused pid and a log
that recorded no writer resume as before.

The writer is a real child process (``sleep``) whose pid, start time and boot the test
writes into the ``SystemStarted`` of the log it builds: what tells a writer of an earlier
version, which takes no lock of the log's identity (that lock: test_cmd_log_identity_lock)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
from bad_input_support import one_line_usage_error

import eventlog
from conjure_actors.cli import main
from conjure_actors.commands.live_copy import live_writer_of
from conjure_actors.domain import events as ev
from conjure_actors.domain.state import apply, initial_state
from conjure_actors.runtime.process import ProcessId, process_id, this_process

pytestmark = [
    pytest.mark.usefixtures("no_credentials"),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc"),
]

RUN = ["run", "--resume"]
SERVE = ["serve", "--port", "0", "--log"]
COMMANDS = pytest.mark.parametrize("command", [RUN, SERVE], ids=["run-resume", "serve-log"])


@pytest.fixture
def writer() -> Iterator[subprocess.Popen[bytes]]:
    """The process that "writes" the original log: it runs until the test ends it."""
    proc = subprocess.Popen(["sleep", "600"])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """``trio.run`` (where both commands start: the cloud, the journal, every event)
    recorded, not run: the functions it was given."""
    calls: list[Any] = []

    def record(fn: Any, *args: Any, **kwargs: Any) -> int:
        calls.append(fn)
        return 0

    monkeypatch.setattr(trio, "run", record)
    return calls


def copy_of(
    path: Path, writer: ProcessId | None, *, mode: str = "runcomfy", stopped: bool = False
) -> Path:
    """A log (copied from a live one) whose run on ``mode``, written by ``writer`` (None:
    a log written before writers were recorded), has machine ``5a9414b8`` Ready and no
    stop (``stopped``: it stopped, then its actors)."""
    now = time.time()
    who: dict[str, Any] = {}
    if writer is not None:
        who = {
            "writer_host": writer.host,
            "writer_pid": writer.pid,
            "writer_started": writer.started,
            "writer_boot_id": writer.boot_id,
        }
    events: list[Any] = [
        ev.SystemStarted(run_id="r1", version="0", mode=mode, at=now - 60, **who),
        ev.MachineLaunchRequested(
            request_key="k1",
            server_type="medium",
            workflow_version="wv",
            estimated_duration=600,
            at=now - 50,
        ),
        ev.MachineLaunched(request_key="k1", server_id="5a9414b8", at=now - 49),
        ev.MachineReady(
            server_id="5a9414b8",
            service_ready_at=now - 40,
            estimated_stopping_at=now + 3600,
            rate_micros_per_hour=990_000,
            price_table_version="t",
            at=now - 40,
        ),
    ]
    if stopped:
        events.append(ev.SystemStopped(reason="interrupted", at=now - 30))
        events.append(ev.ActorStopped(actor="root", incarnation=1, reason="normal", at=now - 30))
    with eventlog.open_writer(path, ev.Event, sync="none") as log:
        log.append_many(events)
    return path


@COMMANDS
def test_a_copy_whose_writer_runs_is_refused_in_one_line(
    capsys: pytest.CaptureFixture[str],
    writer: subprocess.Popen[bytes],
    started: list[Any],
    command: list[str],
) -> None:
    """Exit 2, one line: what is wrong (that process, on this host) and what to do."""
    copy_of(Path("copy.log"), process_id(writer.pid))
    err = one_line_usage_error(main([*command, "copy.log"]), capsys.readouterr().err)
    instead = "start a new run on another --log" if command is RUN else "start serve on an"
    assert err.startswith(
        f"error: {command[-1]} copy.log: this log is a copy of one that process {writer.pid}"
        " on this host is still writing (its run has not stopped): two processes would drive"
        f" the same jobs and paid machines; stop that process first, or {instead}"
    ), err
    assert started == []


@COMMANDS
def test_the_refusal_writes_nothing_and_asks_no_cloud(
    capsys: pytest.CaptureFixture[str],
    writer: subprocess.Popen[bytes],
    started: list[Any],
    command: list[str],
) -> None:
    """The log and its folder are as they were, and nothing was started (the cloud, the
    journal, any event: all run under trio.run)."""
    log = copy_of(Path("copy.log"), process_id(writer.pid))
    before = (log.read_bytes(), sorted(os.listdir()))
    assert main([*command, "copy.log"]) == 2
    assert (log.read_bytes(), sorted(os.listdir()), started) == (*before, [])


@COMMANDS
def test_a_log_whose_writer_ended_resumes(
    writer: subprocess.Popen[bytes], started: list[Any], command: list[str]
) -> None:
    """The writer crashed (or was killed): its log, or a copy, resumes as ever."""
    copy_of(Path("crashed.log"), process_id(writer.pid), mode="simulated")
    writer.kill()
    writer.wait()
    assert main([*command, "crashed.log"]) == 0
    assert len(started) == 1


@COMMANDS
def test_a_log_of_another_hosts_writer_resumes(
    writer: subprocess.Popen[bytes], started: list[Any], command: list[str]
) -> None:
    """A writer on another host cannot be asked: the log resumes (as documented)."""
    other = attrs.evolve(process_id(writer.pid), host=platform.node() + "-other")
    copy_of(Path("moved.log"), other, mode="simulated")
    assert main([*command, "moved.log"]) == 0
    assert len(started) == 1


@COMMANDS
def test_a_log_whose_writers_pid_was_reused_resumes(
    writer: subprocess.Popen[bytes], started: list[Any], command: list[str]
) -> None:
    """The recorded pid runs, but started at another time: another process, and the
    writer is gone."""
    now = process_id(writer.pid)
    assert now.started is not None
    copy_of(Path("reused.log"), attrs.evolve(now, started=now.started - 100), mode="simulated")
    assert main([*command, "reused.log"]) == 0
    assert len(started) == 1


@COMMANDS
def test_an_old_log_without_a_writer_resumes(started: list[Any], command: list[str]) -> None:
    """A log written before its writer was recorded decodes and resumes as before."""
    copy_of(Path("old.log"), None, mode="simulated")
    assert main([*command, "old.log"]) == 0
    assert len(started) == 1


@COMMANDS
def test_a_log_whose_run_stopped_resumes_while_its_writer_still_runs(
    writer: subprocess.Popen[bytes], started: list[Any], command: list[str]
) -> None:
    """Its run stopped (a serve that drained and is exiting): nothing of it drives a
    machine any more, so its copy is no copy of a live log."""
    copy_of(Path("stopped.log"), process_id(writer.pid), mode="simulated", stopped=True)
    assert main([*command, "stopped.log"]) == 0
    assert len(started) == 1


def test_a_log_this_process_writes_is_not_a_copy() -> None:
    """The writer being this very process (a run resumed within it) is no other writer."""
    me = this_process()
    state = apply(
        initial_state(),
        ev.SystemStarted(
            run_id="r1",
            version="0",
            mode="simulated",
            at=1.0,
            writer_host=me.host,
            writer_pid=me.pid,
            writer_started=me.started,
            writer_boot_id=me.boot_id,
        ),
    )
    assert live_writer_of(state) is None


def test_status_says_a_copy_whose_writer_runs_is_one(
    capsys: pytest.CaptureFixture[str], writer: subprocess.Popen[bytes]
) -> None:
    """status LOG names the process that still writes the original, not "crashed"."""
    copy_of(Path("copy.log"), process_id(writer.pid))
    assert main(["status", "copy.log"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == (
        f"run log copy.log: a copy of a log that pid {writer.pid} on this host is still"
        " writing (take it up only once that process has stopped)"
    )


@COMMANDS
def test_a_crashed_log_is_read_once_and_handed_to_the_start(
    monkeypatch: pytest.MonkeyPatch, writer: subprocess.Popen[bytes], command: list[str]
) -> None:
    """The live-writer check reads the log (snapshot + tail) and the start (the cloud's
    checks, the journal) takes that read on, not a second (serve read a crashed log twice)."""
    from conjure_actors.commands import run

    copy_of(Path("crashed.log"), process_id(writer.pid), mode="simulated")
    writer.kill()
    writer.wait()
    reads: list[Path] = []
    read_log = run.read_log

    def counted(path: Path, *args: Any, **kwargs: Any) -> Any:
        reads.append(path)
        return read_log(path, *args, **kwargs)

    given: list[Any] = []
    monkeypatch.setattr(run, "read_log", counted)
    monkeypatch.setattr(trio, "run", lambda fn, *args: given.extend(args) or 0)
    assert main([*command, "crashed.log"]) == 0
    assert reads == [Path("crashed.log")]
    assert [arg.last_seq for arg in given if isinstance(arg, eventlog.ReplayResult)] == [4]
