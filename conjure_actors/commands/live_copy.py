"""A copy of a log that another process of this host still writes: told, and refused.

The log a process writes holds its lock (``eventlog.being_written``), so a second ``run
--resume`` or ``serve --log`` on the same path is refused. A copy of it (a backup or rsync of
``runs/`` taken while it runs, a deploy that copies the state directory and starts the new
instance before the old one is gone, a copy for debugging) has a path, and no lock, of its
own: its resume would adopt the first process's machines (the log says they are its own),
follow the same prompts, stop a machine it sees idle that the first has just leased to a new
job, and both ledgers would bill them. The log's last ``SystemStarted`` names the process that
writes its run (host name, pid, start time, boot: ``runtime.process``); while that run has
not stopped and that process runs, a start on the log is refused before anything starts.

What is told: a writer on this host (its pid, start time and boot, so that a reused pid or a
reboot is not taken for it). What is not: a writer on another host (a log copied to another
machine), and one that recorded no start time (logs written before it was recorded, an OS
without ``/proc``); those resume as any crashed run's log does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

from conjure_actors.domain import events as ev
from conjure_actors.errors import UsageError

TAIL: Final = 256
"""The records at a log's end in which :func:`refuse_a_live_writers_copy_at` looks for the
last run's stop (after it come only the stops of its actors)."""


def live_writer_of(state: Any) -> int | None:
    """The pid of the process of this host that writes the last run of the log whose state
    is ``state``, if that run has not stopped, the process still runs and it is not this
    one (None otherwise, or when it cannot be told). Told by the host name, boot, pid and
    start time its ``SystemStarted`` recorded: a crashed writer (its pid gone or another
    process's now, the host rebooted since) is none."""
    from conjure_actors.runtime.process import ProcessId, process_running, this_process

    system = state.system
    if not system.running or system.writer_host is None or system.writer_pid is None:
        return None
    writer = ProcessId(
        host=system.writer_host,
        pid=system.writer_pid,
        started=system.writer_started,
        boot_id=system.writer_boot_id,
    )
    if writer == this_process() or not process_running(writer):
        return None
    return writer.pid


def refuse_a_live_writers_copy(state: Any, what: str, instead: str) -> None:
    """A copy of a log that a process of this host still writes (:func:`live_writer_of`):
    refused in one line (UsageError, exit 2), before anything is written or asked of the
    cloud. ``what``: the flag and the log, as the line starts; ``instead``: what else to
    do than stop that process."""
    pid = live_writer_of(state)
    if pid is None:
        return
    machines = "paid machines" if state.system.mode == "runcomfy" else "machines"
    raise UsageError(
        f"{what}: this log is a copy of one that process {pid} on this host is still"
        f" writing (its run has not stopped): two processes would drive the same jobs and"
        f" {machines}; stop that process first, or {instead}"
    )


def refuse_a_live_writers_copy_at(path: Path, what: str, instead: str) -> None:
    """:func:`refuse_a_live_writers_copy` of the log at ``path``, read here (``serve``
    reads its log only once its cloud is open). A log whose last run stopped, what a
    restart mostly finds, is told by its last records alone, not read whole twice. A log
    that is not one, cannot be read, or whose lock is held (it is the log being written,
    no copy) is left to the checks that say so."""
    import eventlog
    from conjure_actors.commands.run import read_log_state

    try:
        if not path.is_file() or eventlog.being_written(path):
            return
        last_seq = eventlog.scan(path, tail_only=True).last_seq
        if not last_seq:
            return
        last: Any = None
        start = max(1, last_seq - TAIL)
        for record in eventlog.read(path, ev.Event, start_seq=start, upcasters=ev.UPCASTERS):
            if isinstance(record.event, ev.SystemStarted | ev.SystemStopped):
                last = record.event
    except (OSError, eventlog.EventLogError):
        return
    if isinstance(last, ev.SystemStopped):
        return
    state = read_log_state(path)
    if state is not None:
        refuse_a_live_writers_copy(state, what, instead)
