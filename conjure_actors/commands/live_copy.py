"""A log that another process of this host writes under another path (a copy of it, or the
log it was copied from): told, and refused.

The log a process writes holds its lock (``eventlog.being_written``), so a second ``run
--resume`` or ``serve --log`` on the same path is refused. A copy of it (a backup or rsync of
``runs/`` taken while it runs, a deploy that copies the state directory and starts the new
instance before the old one is gone, a copy for debugging) has a path, and no lock, of its
own: its resume would adopt the first process's machines (the log says they are its own),
follow the same prompts, stop a machine it sees idle that the first has just leased to a new
job, and both ledgers would bill them.

So a log has an identity that every copy keeps: its first record, as its bytes are on disk
(:func:`log_identity`; the frame's CRC covers the record's time and event). The process that
writes a log holds a host-wide lock named by it (``runtime.process.hold_lock``, in a folder
of the temporary directory shared by every user) for as long as its journal is open
(:func:`holding_the_logs_identity`): taken with the journal of a log that has records, and
right after the first record of a new one. A start on a log whose identity's lock another
process holds is refused (one line, exit 2) before anything is written or asked of the cloud
(:func:`refuse_a_copy_being_written`), whichever of the two is the original, whatever the
last run of either recorded (a crash and restart of the writer, a copy whose last run
stopped): F1 and F1b of QA9. The lock goes with its process (a crash, a ``kill -9``).

Kept beside it, for a writer that predates the lock (a process of the previous version still
running on the original): the process each run's ``SystemStarted`` records (host name, pid,
start time and boot: ``runtime.process``); while the copy's last run has not stopped and
that process runs, the start is refused the same way (:func:`live_writer_of`).

What is not told: a writer on another host (a log copied to another machine, or a container
with a /tmp of its own), and a previous version's writer once its log's last run stopped or
it was restarted; those resume as any crashed run's log does.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

from conjure_actors.errors import UsageError

HEAD: Final = struct.Struct("<8sI4sIIQd")
"""A log's header (magic, version, CRC) and its first record's frame (CRC, length, seq,
time): docs/eventlog-format.md, "Layout"."""
MAGIC: Final = b"\x89EVL\r\n\x1a\n"


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


# -- the log's identity and its host-wide lock --------------------------------------------------


def log_identity(path: Path) -> str | None:
    """The identity of the log at ``path``, which every copy of it keeps: a hash of its
    first record's frame as it is on disk (its CRC covers the record's time and event).
    None if it has no record yet, is no log (of format version 1) or cannot be read."""
    try:
        with open(path, "rb") as f:
            head = f.read(HEAD.size)
    except OSError:
        return None
    if len(head) < HEAD.size:
        return None
    magic, version, _, _, length, seq, _ = HEAD.unpack(head)
    if magic != MAGIC or version != 1 or seq != 1 or not length:
        return None
    return hashlib.sha256(b"conjure_actors log\0" + head[16:]).hexdigest()[:40]


def copy_writer_of(path: Path) -> int | None:
    """The pid of a process of this host that writes a log of the same identity as the
    one at ``path`` (:func:`log_identity`) under another path: its copy, or the log it
    was copied from (0 if its pid cannot be read). None if none does, if the log at
    ``path`` itself is being written (its own lock says so: left to the checks that tell
    it), or if it cannot be told."""
    import eventlog
    from conjure_actors.runtime.process import lock_holder

    try:
        if not path.is_file() or eventlog.being_written(path):
            return None
    except OSError:
        return None
    identity = log_identity(path)
    if identity is None:
        return None
    holder = lock_holder(identity)
    return None if holder == os.getpid() else holder


def _copy_refusal(pid: int, mode: str | None, what: str, instead: str) -> UsageError:
    who = f"process {pid} on this host" if pid else "another process of this host"
    machines = "paid machines" if mode == "runcomfy" else "machines"
    return UsageError(
        f"{what}: {who} is still writing a copy of this log, or the log it was copied from"
        f" (the same jobs and {machines}): two processes would drive them; stop that"
        f" process first, or {instead}"
    )


def refuse_a_copy_being_written(
    path: Path, what: str, instead: str, mode: str | None = None
) -> None:
    """A log of which a process of this host writes a copy, or the original
    (:func:`copy_writer_of`): refused in one line (UsageError, exit 2), before anything
    is written or asked of the cloud. ``mode``: the log's (its machines are paid ones
    under ``runcomfy``)."""
    pid = copy_writer_of(path)
    if pid is not None:
        raise _copy_refusal(pid, mode, what, instead)


@contextmanager
def holding_the_logs_identity(journal: Any, path: Path, what: str, instead: str) -> Iterator[None]:
    """Hold the host-wide lock of the identity of the log at ``path`` (:func:`log_identity`)
    while ``journal``, open on it, is written: at once for a log with records (another
    process holding it, a copy's writer or the original's: refused as
    :func:`refuse_a_copy_being_written` refuses, the journal left untouched), right after
    its first record for a new one. Released on exit (and with the process). A lock that
    cannot be made (the temporary directory not writable) is not held: nothing refused."""
    from conjure_actors.runtime.process import LockHeldError, hold_lock

    held: list[int] = []

    def take(*, strict: bool) -> bool:
        identity = log_identity(path)
        if identity is None:
            return False
        try:
            held.append(hold_lock(identity))
        except LockHeldError as exc:
            if strict:
                raise _copy_refusal(
                    exc.pid or 0, journal.state.system.mode, what, instead
                ) from None
        except OSError:
            pass
        return True

    try:
        if journal.last_seq > 0:
            take(strict=True)
            yield
        else:
            taken = False

            def on_records(_: Any) -> None:
                nonlocal taken
                if not taken:  # (a new log: no copy of it can be written yet)
                    taken = take(strict=False)

            with journal.listen(on_records):
                yield
    finally:
        for fd in held:
            os.close(fd)
