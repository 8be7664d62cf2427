"""The eventlog error tree: one root, one class per thing a caller may want to handle.

Every message is one line that says what is wrong and what to do; the structured context
(path, byte offset, seq, tag) is also on attributes so callers need not parse messages.

::

    EventLogError                      root: catch this to catch everything from eventlog
    ├── LogNotFoundError               (also FileNotFoundError) reading a log that does not exist
    ├── NotALogError                   a directory, or a file without the eventlog magic
    │   └── LogUnreadableError         (also OSError) ... or one this process may not open
    ├── UnsupportedVersionError        a log written by a newer format version
    ├── LogLockedError                 another writer holds the file's OS lock
    ├── LogShorterError                a journal's initial state is past the log's end (it changed)
    ├── LogClosedError                 using a writer / journal after close
    ├── CorruptLogError                a damaged record or header: .offset, .seq (never a crash)
    ├── RecordTooLargeError            (also ValueError) an event over the per-record size limit
    ├── EventDecodeError               a frame is intact but its payload does not fit event_type
    │   └── UnknownEventError          ... because its tag is unknown and no upcaster maps it
    ├── LogWriteError                  an append failed; the file was truncated back, still valid
    │   └── DiskFullError              ... because the disk is full (ENOSPC / EDQUOT)
    ├── SnapshotError                  a snapshot is missing its magic, damaged or mismatched
    ├── SubscriberOverflowError        a journal subscriber fell more than max_buffer behind
    └── JournalFailedError             the journal stopped after an earlier failure
"""

from __future__ import annotations

import os
import shlex


class EventLogError(Exception):
    """Root of every error raised by :mod:`eventlog`."""


class LogNotFoundError(EventLogError, FileNotFoundError):
    """The log file to read does not exist."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        super().__init__(f"event log {self.path!r} does not exist; check the path")

    def __str__(self) -> str:
        return str(self.args[0])


class NotALogError(EventLogError):
    """The path is a directory, or a file that does not start with the eventlog magic."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = os.fspath(path)
        super().__init__(f"{self.path!r} is not an event log ({reason})")


class LogUnreadableError(NotALogError, OSError):
    """The path exists but opening it for reading failed (no read permission, mostly).

    A ``NotALogError`` (it cannot be read as a log, so whoever refuses a directory refuses
    it too) and an ``OSError`` whose ``errno`` and ``strerror`` are the failed open's.
    """

    def __init__(self, path: str | os.PathLike[str], error: OSError) -> None:
        self.path = os.fspath(path)
        hint = (
            "give this user read access to it, or run as its owner"
            if isinstance(error, PermissionError)
            else "check the path"
        )
        EventLogError.__init__(
            self, f"cannot read event log {self.path!r}: {error.strerror or error}; {hint}"
        )
        self.errno = error.errno
        self.strerror = error.strerror

    def __str__(self) -> str:
        return str(self.args[0])


class UnsupportedVersionError(EventLogError):
    """The log was written by a newer format version than this code understands."""

    def __init__(self, path: str | os.PathLike[str], version: int, supported: int) -> None:
        self.path = os.fspath(path)
        self.version = version
        self.supported = supported
        super().__init__(
            f"event log {self.path!r} has format version {version}, written by a newer program"
            f" than this one (it reads up to version {supported}): upgrade it to read the log"
        )


class LogLockedError(EventLogError):
    """Another writer (this process or another) holds the log's exclusive lock."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        super().__init__(
            f"event log {self.path!r} is locked by another writer; stop it or use another path"
        )


class LogShorterError(EventLogError):
    """A journal was opened with a state folded to ``state_seq`` on a log that ends before it
    (``last_seq``): the log was replaced or cut since the state was read, so the state is not
    this log's. Nothing is written (a snapshot of that state would be taken for the log's)."""

    def __init__(self, path: str | os.PathLike[str], state_seq: int, last_seq: int) -> None:
        self.path = os.fspath(path)
        self.state_seq = state_seq
        self.last_seq = last_seq
        super().__init__(
            f"event log {self.path!r} ends at seq {last_seq}, before the state given (of seq"
            f" {state_seq}): it changed since that state was read; read it again"
        )


class LogClosedError(EventLogError):
    """The writer or journal was used after it was closed."""


class CorruptLogError(EventLogError):
    """A complete record (or the file header) is damaged: bit rot, a bad copy, a bad splice.

    Never what a crash leaves (that is a torn tail, which writers truncate). ``offset`` is
    the byte offset of the damaged record (0: the file header) and ``seq`` the seq it should
    carry (0 for the header). The file is never modified; :func:`eventlog.salvage` (or
    ``python -m eventlog salvage``) copies the intact records to a new log.
    """

    def __init__(self, path: str | os.PathLike[str], offset: int, seq: int, reason: str) -> None:
        self.path = os.fspath(path)
        self.offset = offset
        self.seq = seq
        self.reason = reason
        where = f"record seq {seq}" if seq else "before the first record"
        super().__init__(
            f"event log {self.path!r} is corrupt at byte offset {offset} ({where}: {reason}); "
            f"it was left unchanged: copy its intact records to a new log with "
            f"{salvage_command(self.path)}"
        )


def salvage_command(path: str) -> str:
    """The shell command that salvages the log at ``path`` (into ``<path>.salvaged``)."""
    quoted = shlex.quote(path)
    return f"python -m eventlog salvage {quoted} {shlex.quote(path + '.salvaged')}"


class RecordTooLargeError(EventLogError, ValueError):
    """An event encodes to more than the format's record limit; nothing was appended."""

    def __init__(self, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(
            f"event encodes to {size} bytes, over the event log's limit of {limit} bytes per "
            "record; store large data in a file and put its path (and hash) in the event"
        )


class EventDecodeError(EventLogError):
    """An intact record's payload does not decode as ``event_type`` (and no upcaster fixed it)."""

    def __init__(self, seq: int, tag: str | None, reason: str) -> None:
        self.seq = seq
        self.tag = tag
        self.reason = reason
        super().__init__(
            f"record seq {seq} (tag {tag!r}) does not decode as the event type: {reason}; "
            "register an upcaster for this tag"
        )


class UnknownEventError(EventDecodeError):
    """A record's tag matches no event type and no upcaster."""

    def __init__(self, seq: int, tag: str | None) -> None:
        self.seq = seq
        self.tag = tag
        self.reason = "unknown tag"
        EventLogError.__init__(
            self,
            f"record seq {seq} has unknown event tag {tag!r}; add the event type to the union "
            "or register an upcaster for this tag",
        )


class LogWriteError(EventLogError):
    """An append could not be written; the log was truncated back to its last valid record."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = os.fspath(path)
        super().__init__(
            f"cannot append to event log {self.path!r}: {reason}; the log is unchanged "
            "(still valid), retry once the cause is fixed"
        )


class DiskFullError(LogWriteError):
    """The disk (or quota) is full; nothing of the failed append is left in the file."""


class SnapshotError(EventLogError):
    """A snapshot file is damaged or does not match the expected state type."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(
            f"snapshot {self.path!r} is unusable ({reason}); delete it or replay the full log"
        )


class SubscriberOverflowError(EventLogError):
    """A journal subscriber fell more than ``max_buffer`` records behind and was cut off."""

    def __init__(self, seq: int, max_buffer: float) -> None:
        self.seq = seq
        self.max_buffer = max_buffer
        super().__init__(
            f"journal subscriber fell {max_buffer} records behind and was closed before record "
            f"seq {seq}; consume faster, raise max_buffer, or re-read the log from seq {seq}"
        )


class JournalFailedError(EventLogError):
    """The journal stopped after an earlier failure; ``__cause__`` holds it."""
