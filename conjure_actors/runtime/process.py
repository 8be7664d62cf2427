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

That tells only the writer a log's last run recorded: a copy taken before its original's
writer was restarted (another pid) names one that is gone. :func:`hold_lock` is the lock
that does not depend on it: a host-wide ``flock`` on a name (a log's identity, which its
copies share), held by the process that writes it and dropped by the OS when it ends, which
:func:`lock_holder` asks about.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import platform
import tempfile
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


# -- a host-wide lock on a name ---------------------------------------------------------------

LOCK_DIR: Final = os.path.join(tempfile.gettempdir(), "conjure_actors-logs")
"""Where :func:`hold_lock` keeps its lock files: one folder for the whole host (every user's
processes, as ``/tmp`` is: created world-writable and sticky), so that a process of any user
sees another's lock. Tests point it elsewhere."""


class LockHeldError(Exception):
    """:func:`hold_lock` found the lock held by another process (or another open of it in
    this one): ``pid``, the holder's as it wrote it (None if it could not be read)."""

    def __init__(self, pid: int | None) -> None:
        super().__init__(f"held by pid {pid}" if pid is not None else "held")
        self.pid = pid


def _lock_path(name: str, folder: str | None) -> str:
    return os.path.join(folder or LOCK_DIR, name + ".lock")


def _lock_folder(folder: str) -> None:
    try:
        os.mkdir(folder, 0o700)
    except FileExistsError:
        return
    with contextlib.suppress(OSError):  # (mkdir's mode goes through the umask: as /tmp's)
        os.chmod(folder, 0o1777)


def _open_lock_file(path: str) -> int:
    """The lock file at ``path``, opened to be written if it can (another user's may not
    let it: then only read, which ``flock`` needs no more than), created if absent. Not
    ``O_CREAT`` on one that exists: Linux's ``protected_regular`` refuses it on another
    user's file in a sticky folder."""
    cloexec = getattr(os, "O_CLOEXEC", 0)
    for _ in range(3):
        try:
            return os.open(path, os.O_RDWR | cloexec)
        except PermissionError:
            return os.open(path, os.O_RDONLY | cloexec)
        except FileNotFoundError:
            pass
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | cloexec, 0o666)
        except FileExistsError:
            continue  # created by another process meanwhile
        with contextlib.suppress(OSError):  # (past the umask: any user's process writes its pid)
            os.fchmod(fd, 0o666)
        return fd
    raise FileNotFoundError(path)


def hold_lock(name: str, *, folder: str | None = None) -> int:
    """Take the host-wide lock ``name`` (an exclusive, non-blocking ``flock`` on
    ``LOCK_DIR/NAME.lock``) and write this process's pid into it; the descriptor is
    returned, closing it releases the lock (as the end of the process does, a ``kill -9``
    included). :class:`LockHeldError` if another process holds it; OSError if the folder
    or the file cannot be made."""
    path = _lock_path(name, folder)
    _lock_folder(os.path.dirname(path))
    fd = _open_lock_file(path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise LockHeldError(_read_pid(path)) from None
    except BaseException:
        os.close(fd)
        raise
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
    except OSError:
        pass  # (read-only: another user's file; the lock holds all the same)
    return fd


def lock_holder(name: str, *, folder: str | None = None) -> int | None:
    """The pid of the process that holds the host-wide lock ``name`` (:func:`hold_lock`),
    if one does (0 if its pid could not be read); None if none does or it cannot be told.
    Probed with a shared lock, dropped at once: it never blocks a holder."""
    path = _lock_path(name, folder)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _read_pid(path) or 0
    except OSError:
        return None
    finally:
        os.close(fd)
    return None


def _read_pid(path: str) -> int | None:
    try:
        with open(path, "rb") as f:
            return int(f.read(32).strip() or b"x")
    except (OSError, ValueError):
        return None
