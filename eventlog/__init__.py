"""eventlog: a domain-free, append-only log of msgspec Structs.

Write with :func:`open_writer` (sync) or :func:`open_journal` (trio, group commit), read with
:func:`read` / :func:`follow`, rebuild state with :func:`fold` / :func:`replay`, tell what a
file holds with :func:`inspect`. The file format is described in ``docs/eventlog-format.md``;
the error tree in :mod:`eventlog.errors`. This package never imports ``conjure_actors``.
"""

from typing import TYPE_CHECKING, Any, Final

from .codec import Upcaster, Upcasters
from .errors import (
    CorruptLogError,
    DiskFullError,
    EventDecodeError,
    EventLogError,
    JournalFailedError,
    LogClosedError,
    LogLockedError,
    LogNotFoundError,
    LogShorterError,
    LogUnreadableError,
    LogWriteError,
    NotALogError,
    RecordTooLargeError,
    SnapshotError,
    SubscriberOverflowError,
    UnknownEventError,
    UnsupportedVersionError,
)
from .follow import LogFollower, follow
from .memory import MemoryLog
from .reader import LogInfo, LogState, LogStatus, fold, inspect, read, scan
from .record import Record
from .salvage import SalvageReport, salvage
from .snapshot import (
    ReplayResult,
    list_snapshots,
    read_snapshot,
    replay,
    snapshot_file,
    snapshots_dir,
    write_snapshot,
)
from .writer import LogWriter, SyncPolicy, being_written, open_writer, writer_pid

if TYPE_CHECKING:
    from .journal import EventStore, Journal, JournalStatistics, Listener, open_journal

# The journal (trio) loads on first use: reading, scanning and replaying a log (``replay
# --at``) need no trio, and importing it costs more than reading a snapshot. (``follow``
# imports trio when it first waits.)
_JOURNAL_NAMES: Final = frozenset(
    {"EventStore", "Journal", "JournalStatistics", "Listener", "open_journal"}
)


def __getattr__(name: str) -> Any:
    if name not in _JOURNAL_NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from . import journal

    value = getattr(journal, name)
    globals()[name] = value
    return value


__all__ = [
    "CorruptLogError",
    "DiskFullError",
    "EventDecodeError",
    "EventLogError",
    "EventStore",
    "Journal",
    "JournalFailedError",
    "JournalStatistics",
    "Listener",
    "LogClosedError",
    "LogFollower",
    "LogInfo",
    "LogLockedError",
    "LogNotFoundError",
    "LogShorterError",
    "LogState",
    "LogStatus",
    "LogUnreadableError",
    "LogWriteError",
    "LogWriter",
    "MemoryLog",
    "NotALogError",
    "Record",
    "RecordTooLargeError",
    "ReplayResult",
    "SalvageReport",
    "SnapshotError",
    "SubscriberOverflowError",
    "SyncPolicy",
    "UnknownEventError",
    "UnsupportedVersionError",
    "Upcaster",
    "Upcasters",
    "being_written",
    "fold",
    "follow",
    "inspect",
    "list_snapshots",
    "open_journal",
    "open_writer",
    "read",
    "read_snapshot",
    "replay",
    "salvage",
    "scan",
    "snapshot_file",
    "snapshots_dir",
    "write_snapshot",
    "writer_pid",
]
