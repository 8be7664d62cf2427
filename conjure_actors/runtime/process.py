"""Who a process is, told so that another process can later ask whether it still runs.

A log records the process that writes each of its runs (:func:`this_process`, in its
``SystemStarted``). A log copied while that process writes it (a backup, a deploy that copies
the state directory and starts the new instance before the old one is gone) has no lock of
its own to say so: a start on the copy asks :func:`process_running` whether the writer
still runs, and refuses rather than drive the same paid machines from two processes.

A pid alone says little: pids are reused, and a reboot starts them again. Linux gives each
process its start time in clock ticks after boot (field 22 of ``/proc/PID/stat``) and each
boot an id (``/proc/sys/kernel/random/boot_id``): the same host name, boot, pid and start
time are the same process. Where ``/proc`` is absent (not Linux) the start time and boot are
None and nothing can be told (:func:`process_running` says None).
"""

from __future__ import annotations

import os
import platform
from typing import Final

import attrs

PROC: Final = "/proc"
"""Where Linux lists its processes (``man 5 proc``); tests point it elsewhere."""


@attrs.frozen
class ProcessId:
    """A process, told apart from one that later gets its pid: ``host`` (the host name),
    ``pid``, ``started`` (its start in clock ticks after boot) and ``boot_id`` (the
    boot it runs in); the last two None where the OS does not say them."""

    host: str
    pid: int
    started: int | None = None
    boot_id: str | None = None


def this_process() -> ProcessId:
    """This process (its start time and boot as the OS says them, None where it does not)."""
    return process_id(os.getpid())


def process_id(pid: int) -> ProcessId:
    """The process of this host whose pid is ``pid``, as the OS tells it now (its start
    time None if it does not say it, or no such process runs)."""
    return ProcessId(host=platform.node(), pid=pid, started=_start_ticks(pid), boot_id=_boot_id())


def process_running(process: ProcessId) -> bool | None:
    """Whether ``process`` runs now: True (same host, boot, pid and start time, and it has
    not exited), False (it exited, the host rebooted since, or its pid is another
    process's now), None (it cannot be told: another host's, one whose start time was not
    recorded, an OS without ``/proc``)."""
    if process.host != platform.node() or process.started is None:
        return None
    boot = _boot_id()
    if boot != process.boot_id:  # rebooted since; or a boot only one side could read
        return None if boot is None or process.boot_id is None else False
    return _start_ticks(process.pid) == process.started


def _boot_id() -> str | None:
    try:
        with open(os.path.join(PROC, "sys", "kernel", "random", "boot_id")) as f:
            return f.read().strip() or None
    except OSError:
        return None


def _start_ticks(pid: int) -> int | None:
    """Field 22 of ``/proc/PID/stat`` (None: no such process, or it has exited and only
    waits to be reaped, a zombie: it drives nothing any more)."""
    try:
        with open(os.path.join(PROC, str(pid), "stat"), "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # Field 2, the command name in parentheses, may itself hold spaces and parentheses:
    # the fields after its last ")" are 3 (the state) onwards.
    fields = stat[stat.rfind(b")") + 1 :].split()
    try:
        state, ticks = fields[0], int(fields[19])
    except (IndexError, ValueError):
        return None
    return None if state in (b"Z", b"X") else ticks
