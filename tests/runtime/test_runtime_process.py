"""Who a process is (``runtime.process``), and whether it still runs: a pid reused, a reboot,
an exited process or one on another host is never taken for the process a log recorded."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

from conjure_actors.runtime import process
from conjure_actors.runtime.process import process_id, process_running, this_process

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


@pytest.fixture
def child() -> Iterator[subprocess.Popen[bytes]]:
    """A child process that runs until the test ends (or ends it)."""
    proc = subprocess.Popen(["sleep", "600"])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def test_this_process_runs() -> None:
    """This process, as told now, runs."""
    assert process_running(this_process()) is True


def test_this_process_has_its_start_time_and_boot_on_linux() -> None:
    """On Linux both are told (None would make every copy undetectable)."""
    me = this_process()
    assert (me.pid, me.started is not None, me.boot_id is not None) == (os.getpid(), True, True)


def test_a_running_child_runs(child: subprocess.Popen[bytes]) -> None:
    """Another process of this host that runs is told to run."""
    assert process_running(process_id(child.pid)) is True


def test_a_child_that_ended_does_not_run(child: subprocess.Popen[bytes]) -> None:
    """A process that ended (killed, reaped) no longer runs."""
    recorded = process_id(child.pid)
    child.kill()
    child.wait()
    assert process_running(recorded) is False


def test_an_exited_child_not_reaped_yet_does_not_run(child: subprocess.Popen[bytes]) -> None:
    """A zombie (exited, its parent has not reaped it) drives nothing: not running."""
    recorded = process_id(child.pid)
    child.kill()
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # exited, left unreaped
    assert process_running(recorded) is False


def test_a_pid_reused_by_another_process_is_not_the_recorded_one(
    child: subprocess.Popen[bytes],
) -> None:
    """The same pid with another start time (the pid was reused) is not that process."""
    now = process_id(child.pid)
    assert now.started is not None
    recorded = attrs.evolve(now, started=now.started - 1)
    assert process_running(recorded) is False


def test_a_process_of_another_boot_does_not_run(child: subprocess.Popen[bytes]) -> None:
    """Recorded before a reboot: even a pid and start time that match are another process."""
    recorded = attrs.evolve(process_id(child.pid), boot_id="another-boot")
    assert process_running(recorded) is False


def test_a_process_of_another_host_cannot_be_told(child: subprocess.Popen[bytes]) -> None:
    """Another host's process: None (neither running nor not)."""
    recorded = attrs.evolve(process_id(child.pid), host=this_process().host + "-other")
    assert process_running(recorded) is None


def test_a_process_recorded_without_its_start_time_cannot_be_told(
    child: subprocess.Popen[bytes],
) -> None:
    """Recorded where the OS did not say its start time: None, its pid alone is no proof."""
    recorded = attrs.evolve(process_id(child.pid), started=None, boot_id=None)
    assert process_running(recorded) is None


def test_without_proc_nothing_is_told(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No /proc (not Linux): no start time nor boot recorded, and running cannot be told."""
    monkeypatch.setattr(process, "PROC", str(tmp_path / "no-proc"))
    me = this_process()
    assert (me.started, me.boot_id, process_running(me)) == (None, None, None)


def test_a_command_name_with_spaces_and_parentheses_is_read_past(tmp_path: Path) -> None:
    """Field 22 is counted after the last ")": a name like "a) (b c" does not shift it."""
    exe = tmp_path / "a) (b c"
    exe.symlink_to("/bin/sleep")
    proc = subprocess.Popen([str(exe), "600"])
    try:
        told = process_id(proc.pid)
        with open(f"/proc/{proc.pid}/stat", "rb") as f:
            stat = f.read()
        assert b"(a) (b c)" in stat
        assert told.started == int(stat.split()[21 + 2])  # (the name's 2 spaces: 2 more)
        assert process_running(told) is True
    finally:
        proc.kill()
        proc.wait()
