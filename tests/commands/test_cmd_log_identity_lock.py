"""A log's identity (its first record, which every copy keeps) and the host-wide lock on it
that the process writing any log of that identity holds (QA9 F1, F1b): ``run --resume`` and
``serve --log`` refuse a copy while another process of this host writes its original, and
the original while another writes a copy, whatever the last run of either recorded (a
writer restarted with another pid, a copy whose last run stopped). The lock goes with its
process (``kill -9`` included); unrelated logs and old ones are not held up by it.

The other process is a real child (``python -c``) that writes the log (holds its own lock,
as ``eventlog`` takes it) and holds its identity's lock, as a ``run`` or ``serve`` does."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from bad_input_support import one_line_usage_error

import eventlog
from conjure_actors.cli import main
from conjure_actors.commands.live_copy import (
    copy_writer_of,
    holding_the_logs_identity,
    log_identity,
)
from conjure_actors.domain import events as ev
from conjure_actors.domain.state import apply, initial_state
from conjure_actors.errors import UsageError
from conjure_actors.runtime import process

pytestmark = [
    pytest.mark.usefixtures("no_credentials"),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="flock, /proc"),
]

DATA = Path(__file__).resolve().parents[1] / "data"
RUN = ["run", "--resume"]
SERVE = ["serve", "--port", "0", "--log"]
COMMANDS = pytest.mark.parametrize("command", [RUN, SERVE], ids=["run-resume", "serve-log"])

WRITER = """
import sys
from pathlib import Path
import eventlog
from conjure_actors.commands.live_copy import log_identity
from conjure_actors.domain import events as ev
from conjure_actors.runtime.process import hold_lock
path, folder = Path(sys.argv[1]), sys.argv[2]
with eventlog.open_writer(path, ev.Event, sync="none"):
    fd = hold_lock(log_identity(path), folder=folder)
    print("writing", flush=True)
    sys.stdin.read()
"""


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


@pytest.fixture
def writing() -> Iterator[Callable[[Path], subprocess.Popen[str]]]:
    """``writing(path)``: a child process that writes the log at ``path`` as a run or serve
    does (its lock and its identity's), once it says so; ended (stdin closed) at the end."""
    children: list[subprocess.Popen[str]] = []

    def start(path: Path) -> subprocess.Popen[str]:
        child = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), process.LOCK_DIR],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        children.append(child)
        assert child.stdout is not None
        assert child.stdout.readline() == "writing\n"
        return child

    try:
        yield start
    finally:
        for child in children:
            child.kill()
            child.communicate()  # (and its pipes closed)


def a_log(path: Path, *, stopped: bool = False, run_id: str = "r1") -> Path:
    """A simulated run's log with machine ``5a9414b8`` Ready, as a run that crashed left
    it (``stopped``: it stopped; its writer recorded: this test's own pid, not running
    it)."""
    now = time.time()
    events: list[Any] = [
        ev.ActorStarted(actor="root", incarnation=1, at=now - 61),
        ev.SystemStarted(run_id=run_id, version="0", mode="simulated", at=now - 60),
        ev.MachineLaunchRequested(
            request_key="k1",
            server_type="medium",
            workflow_version="wv",
            estimated_duration=600,
            at=now - 50,
        ),
        ev.MachineLaunched(request_key="k1", server_id="5a9414b8", at=now - 49),
    ]
    if stopped:
        events.append(ev.SystemStopped(reason="interrupted", at=now - 30))
    with eventlog.open_writer(path, ev.Event, sync="none") as log:
        log.append_many(events)
    return path


def copy(src: Path, dst: Path) -> Path:
    """A copy of the log (as ``cp``: byte for byte)."""
    shutil.copyfile(src, dst)
    return dst


def refusal(command: list[str], path: str, pid: int) -> str:
    instead = "start a new run on another --log" if command is RUN else "start serve on an"
    return (
        f"error: {command[-1]} {path}: process {pid} on this host is still writing a copy of"
        " this log, or the log it was copied from (the same jobs and machines): two"
        f" processes would drive them; stop that process first, or {instead}"
    )


@pytest.mark.slow  # (just test <= 30 s: CI and just check run it)
@COMMANDS
def test_a_copy_is_refused_while_its_original_restarted_is_written(
    capsys: pytest.CaptureFixture[str],
    writing: Callable[[Path], subprocess.Popen[str]],
    started: list[Any],
    command: list[str],
) -> None:
    """F1: the copy was taken before the original's writer crashed; a new process (another
    pid than any the copy recorded) writes the original: the copy is refused, naming it."""
    copy(a_log(Path("a.log")), Path("c.log"))
    restarted = writing(Path("a.log"))
    err = one_line_usage_error(main([*command, "c.log"]), capsys.readouterr().err)
    assert err.startswith(refusal(command, "c.log", restarted.pid)), err
    assert started == []


@pytest.mark.slow  # (just test <= 30 s: CI and just check run it)
@COMMANDS
def test_a_copy_whose_last_run_stopped_is_refused_while_its_original_is_written(
    capsys: pytest.CaptureFixture[str],
    writing: Callable[[Path], subprocess.Popen[str]],
    started: list[Any],
    command: list[str],
) -> None:
    """F1b: the copy's last run stopped (jobs left unfinished): still a copy of a log
    another process writes."""
    copy(a_log(Path("a.log"), stopped=True), Path("c.log"))
    original = writing(Path("a.log"))
    err = one_line_usage_error(main([*command, "c.log"]), capsys.readouterr().err)
    assert err.startswith(refusal(command, "c.log", original.pid)), err
    assert started == []


@pytest.mark.slow  # (just test <= 30 s: CI and just check run it)
@COMMANDS
def test_the_original_is_refused_while_a_copy_is_written(
    capsys: pytest.CaptureFixture[str],
    writing: Callable[[Path], subprocess.Popen[str]],
    started: list[Any],
    command: list[str],
) -> None:
    """The other way round: a copy is being served; the original started again is refused."""
    copy(a_log(Path("a.log")), Path("c.log"))
    the_copys = writing(Path("c.log"))
    err = one_line_usage_error(main([*command, "a.log"]), capsys.readouterr().err)
    assert err.startswith(refusal(command, "a.log", the_copys.pid)), err
    assert started == []


@pytest.mark.slow  # (just test <= 30 s: CI and just check run it)
@COMMANDS
def test_a_copy_resumes_once_its_original_stopped_for_good(
    writing: Callable[[Path], subprocess.Popen[str]], started: list[Any], command: list[str]
) -> None:
    """Its writer exited (the original is no longer written): the copy resumes as ever."""
    copy(a_log(Path("a.log")), Path("c.log"))
    original = writing(Path("a.log"))
    original.communicate()  # (stdin closed: it ends, as a run or serve that stopped)
    assert original.returncode == 0
    assert main([*command, "c.log"]) == 0
    assert len(started) == 1


@pytest.mark.slow  # (just test <= 30 s: CI and just check run it)
@COMMANDS
def test_an_unrelated_log_is_not_held_up(
    writing: Callable[[Path], subprocess.Popen[str]], started: list[Any], command: list[str]
) -> None:
    """Another log (another first record) is written meanwhile: no refusal."""
    a_log(Path("a.log"))
    a_log(Path("b.log"), run_id="r2")
    assert log_identity(Path("a.log")) != log_identity(Path("b.log"))
    writing(Path("a.log"))
    assert main([*command, "b.log"]) == 0
    assert len(started) == 1


@pytest.mark.slow  # (just test <= 30 s: CI and just check run it)
def test_the_lock_goes_with_its_process_killed() -> None:
    """``kill -9`` of the writer frees its identity's lock (the OS drops its flock)."""
    a_log(Path("a.log"))
    copy(Path("a.log"), Path("c.log"))
    child = subprocess.Popen(
        [sys.executable, "-c", WRITER, "a.log", process.LOCK_DIR],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == "writing\n"
        assert copy_writer_of(Path("c.log")) == child.pid
    finally:
        child.send_signal(signal.SIGKILL)
        child.communicate()
    assert copy_writer_of(Path("c.log")) is None


class _Journal:
    """What :func:`holding_the_logs_identity` asks of a journal, over a log on disk."""

    def __init__(self, path: Path) -> None:
        records = list(eventlog.read(path, ev.Event, upcasters=ev.UPCASTERS))
        self.last_seq = len(records)
        self.state = eventlog.fold(records, apply, initial_state())


@pytest.mark.parametrize("golden", sorted(DATA.glob("golden_v*.log")), ids=lambda p: p.stem)
def test_an_old_log_has_an_identity_its_copy_shares(golden: Path) -> None:
    """Every golden log (written before the lock) has one from its first record; held on
    one, a copy of it is refused (two opens in this process: flock tells them apart)."""
    old = Path(shutil.copyfile(golden, "old.log"))
    assert log_identity(old) is not None
    assert log_identity(old) == log_identity(copy(old, Path("c.log")))
    with (
        holding_the_logs_identity(_Journal(old), old, "--resume old.log", "another --log"),
        pytest.raises(UsageError, match="is still writing a copy of this log"),
        holding_the_logs_identity(_Journal(old), Path("c.log"), "--resume c.log", "x"),
    ):
        pass
    with holding_the_logs_identity(_Journal(old), Path("c.log"), "--resume c.log", "x"):
        pass  # released with the first


def test_a_log_with_no_record_has_no_identity() -> None:
    """An empty log (its header only) or no log: nothing to lock yet."""
    with eventlog.open_writer(Path("new.log"), ev.Event, sync="none"):
        pass
    assert log_identity(Path("new.log")) is None
    assert log_identity(Path("missing.log")) is None


async def test_a_new_log_is_locked_right_after_its_first_record() -> None:
    """A new log's journal takes its identity's lock with its first record, so that a copy
    taken from then on is refused; released when the journal closes."""
    path = Path("new.log")
    async with eventlog.open_journal(
        path, ev.Event, apply=apply, initial=initial_state(), upcasters=ev.UPCASTERS
    ) as journal:
        with holding_the_logs_identity(journal, path, "--log new.log", "x"):
            await journal.append(ev.ActorStarted(actor="root", incarnation=1, at=1.0))
            identity = log_identity(path)
            assert identity is not None
            assert process.lock_holder(identity) == process.os.getpid()
    assert process.lock_holder(identity) is None


@pytest.mark.slow  # (just test <= 30 s: CI and just check run it)
async def test_a_resume_is_refused_at_its_journals_opening_too(
    writing: Callable[[Path], subprocess.Popen[str]],
) -> None:
    """The original's writer started after ``_prepare`` asked (a race): the resume's
    journal, once open, finds the lock held and refuses, before any record of its own."""
    from conjure_actors.commands.run import _open_run_journal, one_line_error

    copy(a_log(Path("a.log")), Path("c.log"))
    before = await trio.Path("c.log").read_bytes()
    original = writing(Path("a.log"))
    with pytest.raises(BaseExceptionGroup) as refused:  # (the journal's nursery's)
        async with _open_run_journal(Path("c.log"), time.time, fresh=False):
            pass
    error = refusal(RUN, "c.log", original.pid).removeprefix("error: ")
    assert str(one_line_error(refused.value)) == error
    assert await trio.Path("c.log").read_bytes() == before


@pytest.mark.slow  # (just test <= 30 s: CI and just check run it)
def test_status_says_a_copy_whose_original_is_written_is_one(
    capsys: pytest.CaptureFixture[str], writing: Callable[[Path], subprocess.Popen[str]]
) -> None:
    """status LOG names the process that writes the original (restarted: the copy's last
    run named another), not "crashed"."""
    copy(a_log(Path("a.log")), Path("c.log"))
    original = writing(Path("a.log"))
    assert main(["status", "c.log"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == (
        f"run log c.log: a copy of a log that pid {original.pid} on this host is still"
        " writing, or the original of one (take it up only once that process has stopped)"
    )
