"""Resuming an event stream: SSE ids, ``Last-Event-ID`` and which jobs changed since one.

An ``EventSource`` reconnects by itself (a network change, a laptop's sleep, a restart of
``serve``) and sends the ``id:`` of the last frame it got as ``Last-Event-ID``. The id of a
frame of either event stream is a journal seq and the log's tag, ``SEQ-TAG``: every change
up to that seq was on the frames up to that one. It survives a restart on the same log (a
seq is the log's, not a counter of the process) and its seq grows along a stream. The tag
(:func:`log_tag`: a hash of the log's first record, which a restart on the same log reads
again) tells an id of another log: a page that followed another ``serve`` on the same
address, or this one before its in-memory log was new, would otherwise resume past that
log's jobs whenever the other log was longer. A bare seq (the ids of versions before the
tag) is taken as this log's.

The frames of one wake of a stream (one commit's, or a snapshot) reflect records up to the
same seq, so they cannot all carry it: a client cut off after the first of them would resume
past the others. Every frame of a wake but the last carries the id the stream had before it,
the last one the new seq (:func:`stamp`): a client resumes at most from the wake's start.

:class:`JobChanges` answers a resume: which jobs have a record after a seq. The records
applied since ``serve`` started are followed as they commit (a journal listener: a job id ->
its last seq); a seq from before the start (the client was there before a restart) is
answered from the log itself, read once from that seq to the start (at most
:data:`RESUME_WINDOW` records: an older id gets the full snapshot, as a malformed one does).
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable, Iterable
from typing import Any, Final

import trio
from starlette.requests import Request

import eventlog
from conjure_actors.domain import service_events as se

__all__ = [
    "LAST_EVENT_ID",
    "RESUME_WINDOW",
    "History",
    "JobChanges",
    "last_event_id",
    "log_tag",
    "stamp",
]

LAST_EVENT_ID: Final = "last_event_id"
"""The query parameter that resumes a stream as the ``Last-Event-ID`` header does (for a
client that cannot set headers: a new ``EventSource``; the header wins when both are sent)."""

RESUME_WINDOW: Final = 100_000
"""Records of the log before ``serve`` started that a resume reads at most (from the
``Last-Event-ID`` on): an id older than that gets the full snapshot."""

_AFTER_THE_END: Final = (se.ApiJobExpiryMoved,)
"""Records about a job that follow its end by nature (its retention runs from its end): no
change a stream sends (it stopped following the job at its end), so not one a resume sends
the ended job again for."""

_MAX_DIGITS: Final = 19
"""Digits of a ``Last-Event-ID`` at most (a seq is an int64 in the log's frames)."""

History = Callable[..., Iterable[Any]]
"""The log's records from ``start_seq`` to ``stop_seq`` (``eventlog.read`` over the log's
path, ``MemoryLog.records``)."""


def log_tag(first: Any | None) -> str:
    """The tag of a log's stream ids (module docstring): a hash of its first record's time
    and event type (``first``; None for a log whose first record cannot be read back, an
    in-memory one: a tag of this process alone, as the log is)."""
    if first is None:
        return secrets.token_hex(4)
    seen = f"{first.seq}|{first.ts!r}|{type(first.event).__name__}".encode()
    return hashlib.blake2b(seen, digest_size=4).hexdigest()


def last_event_id(request: Request, last_seq: int, tag: str) -> int | None:
    """The seq a client resumes from (``Last-Event-ID``, else ``?last_event_id=``), or None:
    none given, or one that is no seq of this log (not ``SEQ-TAG`` with this log's ``tag``
    or a bare seq, or past its last record): the stream then starts with the full snapshot,
    as a first connect does. Never an error: an ``EventSource`` cannot be told to drop it."""
    given = request.headers.get("last-event-id")
    if given is None:
        given = request.query_params.get(LAST_EVENT_ID)
    if given is None:
        return None
    digits, dash, theirs = given.strip(" \t").partition("-")
    if dash and theirs != tag:
        return None  # another log's
    if not (0 < len(digits) <= _MAX_DIGITS and digits.isascii() and digits.isdigit()):
        return None
    seq = int(digits)
    return seq if 0 < seq <= last_seq else None


def stamp(frames: list[dict[str, Any]], before: int, after: int, tag: str) -> list[dict[str, Any]]:
    """``frames`` of one wake with their ids (``SEQ-TAG``): ``before`` (the seq the stream
    had) on all but the last, ``after`` (the seq they reflect) on the last (module
    docstring)."""
    if frames:
        had = f"{before}-{tag}"
        for frame in frames[:-1]:
            frame["id"] = had
        frames[-1]["id"] = f"{after}-{tag}"
    return frames


class JobChanges:
    """Which jobs have a record after a seq (module docstring). ``history``: the log's
    records (None: only the records since the start are known)."""

    def __init__(self, history: History | None = None) -> None:
        self.history = history
        self._tag: str | None = None  # the log's tag in stream ids (see tag())
        self.started = 0  # the log's last seq when following began
        # Job id -> the seq of its last record since the start, oldest first (a job moves
        # to the end on each record: a resume reads back from the end only as far as its
        # seq); a job's entry goes when it expires.
        self.last: dict[str, int] = {}
        # Job id -> its last record in the log before the start, from ``known_from`` on
        # (read on the first resume from before the start, and extended by an older one).
        self.before: dict[str, int] = {}
        self.known_from = 0
        self._reading = trio.Lock()

    def on_records(self, records: list[Any]) -> None:
        """A journal listener: each commit's records as they apply."""
        last = self.last
        for record in records:
            event = record.event
            job_id = getattr(event, "job_id", None)
            if job_id is None or isinstance(event, _AFTER_THE_END):
                continue
            last.pop(job_id, None)
            if not isinstance(event, se.ApiJobExpired):
                last[job_id] = record.seq

    async def follow(self, journal: Any, *, task_status: Any) -> None:
        """Keep up with ``journal`` (a trio task; ``nursery.start`` it)."""
        with journal.listen(self.on_records) as listener:
            self.started = self.known_from = journal.last_seq
            task_status.started()
            await listener.wait_raised()

    async def since(self, seq: int) -> set[str] | None:
        """The ids of the jobs with a record after ``seq``, or None when that is not known
        (``seq`` more than :data:`RESUME_WINDOW` records before the start, or the log
        unreadable): the caller then sends everything."""
        changed: set[str] = set()
        if seq < self.started:
            if not await self._read_back(seq):
                return None
            changed.update(j for j, at in self.before.items() if at > seq)
        # After the read, with no checkpoint until the caller's: a record applied meanwhile
        # is in the answer (a stream reads the log's end right after it, and takes the
        # records past that end from its subscription).
        last = self.last
        for job_id in reversed(last):
            if last[job_id] <= seq:
                break
            changed.add(job_id)
        return changed

    async def tag(self) -> str:
        """The log's tag in stream ids (:func:`log_tag`), read back once, at the first stream
        (not at the start: a read of the log there would move every task's first steps)."""
        if self._tag is None:
            async with self._reading:
                if self._tag is None:
                    self._tag = log_tag(await self._first_record())
        return self._tag

    async def _first_record(self) -> Any | None:
        """The log's first record, read back (None: no history, or it cannot be read)."""
        history = self.history
        if history is None:
            return None

        def read() -> Any | None:
            records = iter(history(start_seq=1, stop_seq=1))
            try:
                return next(records, None)
            finally:
                getattr(records, "close", lambda: None)()  # a file's reader lets it go

        try:
            return await trio.to_thread.run_sync(read)
        except (OSError, eventlog.EventLogError):
            return None

    async def _read_back(self, seq: int) -> bool:
        """Make sure the records from ``seq`` on are known (False: they cannot be)."""
        if seq < self.started - RESUME_WINDOW or self.history is None:
            return False
        async with self._reading:
            if seq >= self.known_from:
                return True
            history, start, stop = self.history, seq + 1, self.known_from

            def read() -> list[tuple[int, str]]:
                return [
                    (record.seq, job_id)
                    for record in history(start_seq=start, stop_seq=stop)
                    if (job_id := getattr(record.event, "job_id", None)) is not None
                    and not isinstance(record.event, _AFTER_THE_END)
                ]

            try:
                found = await trio.to_thread.run_sync(read)
            except (OSError, eventlog.EventLogError):
                return False  # the full snapshot, as for an id too old
            before = self.before
            for at, job_id in found:
                before[job_id] = max(at, before.get(job_id, 0))
            self.known_from = seq
            return True
