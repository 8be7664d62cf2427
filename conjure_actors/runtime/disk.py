"""Group commit of durable file writes: :class:`DiskCommitter`, :func:`disk_committer`.

A durable write of a file is: a temporary file beside it, written and fsynced, renamed over
the final name, then its directory fsynced (and, for a folder made for it, that folder's
parent). Done in one ``trio.to_thread.run_sync`` per file, each answer comes back at a time of
its own: under load (ten machines finishing jobs in step) the event loop then runs many more,
smaller scheduler batches (issue 16: 11.1 batches per job instead of 6.9 for the same loop
writing plainly), and every file costs its own thread hand-off and its own directory fsync.

Group commit
------------
The work of a file is split in three (:class:`FileCommit`): ``stage`` (the temporary file
written, not yet fsynced), ``put_in_place`` (fsync, rename) and ``make_durable`` (the
directory fsyncs, through a function the committer gives). The committer takes the commits
queued as one group and runs it in ONE long-lived worker thread: every file staged (up to
:data:`STAGED` at a time), then each fsynced and renamed, then every ``make_durable``, whose
directory fsyncs are shared (each distinct directory is fsynced once per group, after every
rename into it); the groups of a batch (see "When a batch is taken") are answered together
with one wake-up of the trio thread (one ``TrioToken.run_sync_soon`` that reschedules every
waiter). Writing every file before the first fsync matters: one thread fsyncing file after
file waits for the disk once per file, but the files' data written first goes to disk
together with the first fsync's journal commit (ext4; 10 files of 20 KB on this box: 6.9 ms
written and fsynced one by one, 2.2 ms staged first, 3.3 ms in ten threads of their own). A
caller is answered only once its file, its rename and its directories are fsynced: exactly
what it waited for before.
Errors are per file: one file's failure (or its directory's) fails that caller only.

One flush per group
-------------------
Where a flush reports its errors (``syncfs(2)`` on Linux 5.17 and later, :func:`system_syncfs`;
on ext4, xfs or btrfs, whose flush commits their journal and returns its error: not FUSE,
whose flush may do nothing, nor a network file system), each group of a batch (see "When a
batch is taken") flushes each file system it writes to twice: once a chunk of its files is
staged (their data to disk in one journal commit, so that each file's own fsync that follows
is cheap), and once every file is renamed (the renames and new files durable in one call,
instead of a fsync of each file's directory). A batch of nine outputs (``FileSink`` s),
each in a new folder of its own, on this box: 4.9-6.4 ms with a fsync per file and per
directory, 2.4-2.7 ms so (two flushes, nine cheap file fsyncs, one fsync of the folders'
parent, one of the flushed directory).
In ``bench/run.py``'s pipeline (strace, 1,000 jobs): 1.32 s in fsync calls before, 0.09 s
in syncfs and fsync calls after.

- The descriptor both flushes run on is opened on one of the batch's directories before any
  rename on that file system, so the second reports every write-back error of the names
  since.
- The first flush is a hint for the data: each file's own fsync still reports that file's
  errors. It consumes the errors it reports, though: if it fails, so does the second.
- After the names' flush, the directory the descriptor is open on is fsynced (clean, so
  cheap): ext4 before Linux 6.13 answered the syncfs of a file system shut down by a failed
  journal commit with 0; its fsync says EIO.
- A file system whose flush failed has its directories fsynced one by one, each error its
  callers' own.
- A folder made for a file (maybe long before the batch, by a streamed download) has its
  parent fsynced, once per group: a flush may not report a write-back error an earlier one
  saw.
- The cost: a flush also writes other programs' pending data on that file system.

When a batch is taken: the committer's task opens a batch as soon as a commit is queued
and hands every commit queued so far to the worker thread, then each commit made while the
batch is open, at once; the worker makes durable, as one group, every commit handed to it
since its last group (each file staged, data flushed, fsynced, renamed, its directories
fsynced or flushed), while the event loop runs on. Once the loop is idle (every other task
blocked), at most :data:`GATHER` after the batch opened, the batch closes: the task waits
until the worker made every commit of the batch durable, then answers them all with one
wake-up. One batch at a time: the commits queued once it closed wait for the next. Ten
machines finishing jobs in step reach their commits a few scheduler passes apart, and the
loop is idle only once every one of them waits for its file. Answering each group as soon as
it is durable made batches of ~3 files and no fewer scheduler batches (issue 16: 0.30 thread
calls and 21.5 scheduler batches per job; answered at idle, 0.11 and 15.0), and ran the
machines out of step. But a batch whose disk work started only once the loop was idle left
the loop idle for that whole work, ten jobs' worth (issue 16: every idle wait of the trio
thread in ``bench/run.py``'s pipeline was one such batch). Made durable as they come and
answered at idle, the files' disk work overlaps the loop's, and the callers still move on
together. ``bench/run.py --counts 500``, seven runs each, back to back on a shared box: the
loop idle 0.70 ms per job (median; 0.56-2.06) with the work started at idle, 0.56 ms (0.32-1.45,
one run 5.6 under another program's disk load) so. Less than the whole batch: beside a busy
loop the worker gets the GIL back only a switch interval after each of its system calls, so
at the batch's close most of its files are still being staged.

Every step of the committer's task comes from the loop's state alone (a commit queued, the
loop idle), never from when the worker finished: the worker never wakes the loop while the
batch is open, so the passes of the loop (which task runs with which) and the moment each
caller is answered are the same however fast the disk is. The worker's speed decides only
how long the task's last wait lasts, while the loop has nothing else to run. Under MockClock
this keeps a seeded run to one log (hypothesis replays a failure from its seed): the first
version of this overlap answered each group's thread call as it returned, so whether a
commit joined the running group or the next, and between which passes of the other tasks
the committer's steps fell, followed the thread's speed (CI: an OutputSaved 1 s of mock time
apart between two runs of one seed).

Under trio's MockClock (tests, the harness, the benchmarks) a task waiting on a thread the
scheduler does not know of counts as idle, and the clock may leap ahead while the disk works;
there the task holds a token of the default thread limiter (which the harness and the
benchmarks watch to know that a thread is in flight: mock time stands still) from the batch's
opening to its answer, and waits for the worker through one ``trio.to_thread.run_sync`` per
batch (which the tests' fixtures run inline, and whose answer releases the benchmarks'
driver); GATHER never passes first (mock time stands still until the loop is idle).

Cancellation: a commit still queued is withdrawn (its file never touched: the caller's own
clean-up, such as ``FileSink.abort``, removes what it wrote before). Once handed to the
worker (at the batch's opening, or at once while a batch is open), it cannot be withdrawn (a
half-done rename is no state to leave): the cancel waits for the batch's answer (a bounded
wait, as with ``to_thread.run_sync``) and fires at the next checkpoint.

One committer per trio run (:func:`disk_committer`), shared by every job of the process; its
thread and its task end with the run.
"""

from __future__ import annotations

import contextlib
import operator
import os
import queue
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, Literal, Protocol, TypeVar

import attrs
import outcome
import trio

from conjure_actors.runtime.threads import prompt_gil_handoff

__all__ = [
    "GATHER",
    "STAGED",
    "DiskCommitter",
    "DiskStatistics",
    "FileCommit",
    "disk_committer",
    "fsync_dir",
]

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)

FsyncDir = Callable[[Path], None]
Syncfs = Callable[[int], None]
"""Flush the whole file system that holds an open file descriptor (``syncfs(2)``); raise
``OSError`` for a write-back error on it since that descriptor was opened."""


class FileCommit(Protocol[T_co]):
    """The durable write of one file, in three blocking steps (run in the committer's thread)."""

    @property
    def path(self) -> Path:
        """The file's final name (its folder exists once :meth:`stage` returned)."""

    def stage(self) -> None:
        """Write the file's bytes to a temporary file beside its name (no fsync yet). On
        failure, leave no temporary file behind, then raise."""

    def put_in_place(self) -> None:
        """After :meth:`stage`: fsync the temporary file, rename it over the final name.
        On failure, leave no temporary file behind, then raise."""

    def make_durable(self, fsync_dir: FsyncDir) -> T_co:
        """Make the file's name durable: ``fsync_dir`` its directory (and the parent of
        each folder made for it); return the caller's answer. ``fsync_dir`` fsyncs each
        directory once per group (later calls raise the same ``OSError`` again)."""


def system_syncfs() -> Syncfs | None:
    """libc's ``syncfs(2)`` where it reports errors (Linux 5.17 and later: 5.8 to 5.16
    reported write-back errors but dropped the file system's own, such as a failed journal
    commit; before 5.8 it returned 0 whatever happened); ``None`` elsewhere. Imports
    ``ctypes``: called from the committer's thread at its first batch, never at import."""
    if not sys.platform.startswith("linux"):
        return None
    release = os.uname().release.split(".")
    try:
        if (int(release[0]), int(release[1].split("-")[0])) < (5, 17):
            return None
    except (IndexError, ValueError):
        return None
    import ctypes  # only where a batch runs (not at the CLI's start)

    try:
        libc_syncfs = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None
    libc_syncfs.argtypes = [ctypes.c_int]
    libc_syncfs.restype = ctypes.c_int

    def syncfs(fd: int) -> None:
        if libc_syncfs(fd) != 0:  # ctypes releases the GIL for the call
            errno = ctypes.get_errno()
            raise OSError(errno, os.strerror(errno))

    return syncfs


def fsync_dir(directory: Path) -> None:
    """Make a directory's entries (a rename, a new file, a new folder) durable."""
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@attrs.frozen
class DiskStatistics:
    """Counts since the committer started: ``commits`` answered, ``batches`` run,
    ``dir_fsyncs`` made, the ``largest`` batch, the commits ``withdrawn`` (cancelled
    while queued: never run), and the ``syncfs`` calls made."""

    commits: int
    batches: int
    dir_fsyncs: int
    largest: int
    withdrawn: int
    syncfs: int = 0


STAGED: Final = 64
"""At most this many files of a group are staged (an open file each) before their fsyncs."""
GATHER: Final = 0.002
"""Seconds a batch stays open, at most, waiting for the loop to be idle before it closes
and its callers are answered once durable (a loop that is never idle must not hold them
back). Idle comes first whenever nothing else runs: under MockClock (time stands still until
the loop is idle) always."""

_QUEUED: Final = 0
_RUNNING: Final = 1
_WITHDRAWN: Final = 2


class _Entry:
    __slots__ = ("item", "result", "state", "task")

    def __init__(self, item: FileCommit[Any], task: trio.lowlevel.Task) -> None:
        self.item = item
        self.task = task
        self.state = _QUEUED
        self.result: outcome.Outcome[Any] | None = None


class DiskCommitter:
    """Runs queued :class:`FileCommit` s in batches (see the module doc).

    ``fsync_dir``: how a directory is fsynced (tests pass one that records the order).
    ``syncfs``: how a file system is flushed in one call (see "One flush per group" in the
    module doc); ``"auto"`` is :func:`system_syncfs` (chosen at the first batch), ``None``
    fsyncs each file and directory alone.
    ``threaded``: how the runner waits, at idle, for the worker thread to have made its
    batch durable: ``None`` picks a wake-up from the worker, except under trio's MockClock
    (a token of the default limiter held while a batch is open, and one
    ``trio.to_thread.run_sync`` per batch at idle: see "Under trio's MockClock"); True/False
    force one or the other. Use it inside the trio run that made it; :meth:`aclose` (or the
    end of the run) stops it.
    """

    def __init__(
        self,
        *,
        fsync_dir: FsyncDir = fsync_dir,
        syncfs: Syncfs | Literal["auto"] | None = "auto",
        threaded: bool | None = None,
    ) -> None:
        self._fsync_dir = fsync_dir
        self._syncfs = syncfs
        self._threaded = not _mock_clock() if threaded is None else threaded
        prompt_gil_handoff()  # its batches run in a worker thread
        self._token = trio.lowlevel.current_trio_token()
        self._closed = False
        self._commits = self._batches = self._dir_fsyncs = self._largest = self._withdrawn = 0
        self._syncfs_calls = 0
        self._in_flight = 0  # commits queued or running, not yet answered
        self._idle: trio.Event | None = None  # set when _in_flight drops to 0 (aclose)
        # The queue of the worker thread: entries handed to it, None ends it.
        self._jobs: queue.SimpleQueue[list[_Entry] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        # The entries queued (not yet handed to the worker), and the runner task while it
        # waits for one.
        self._pending: list[_Entry] = []
        self._parked: trio.lowlevel.Task | None = None
        self._runner_started = False
        # A batch is open (from the runner's opening to its wait for idle): a commit made
        # meanwhile goes to the worker at once. The entries handed to it since the last
        # answer, and how many in all (the worker makes them durable in that order).
        self._open = False
        self._handed: list[_Entry] = []
        self._sent = 0
        # Shared with the worker thread, under _lock: how many entries it made durable, the
        # directory fsyncs and flushes it made, and the runner task waiting (thread mode)
        # until ``_finished`` reaches a count.
        self._lock = threading.Condition(threading.Lock())
        self._finished = 0
        self._worker_fsyncs = self._worker_flushes = 0
        self._waiter: tuple[trio.lowlevel.Task, int] | None = None
        # Under MockClock the runner holds a token of the default limiter (mock time must
        # not move) while its thread call runs: the call takes its token from this one.
        self._own_limiter: trio.CapacityLimiter | None = None

    # ------------------------------------------------------------------ the trio side

    async def commit(self, item: FileCommit[T]) -> T:
        """Queue ``item``; return what its ``make_durable`` returned (or raise what it,
        its ``stage`` or its ``put_in_place`` raised), once the file and its directories
        are fsynced."""
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._closed:
            raise trio.ClosedResourceError("the disk committer is closed")
        if trio.lowlevel.current_trio_token() is not self._token:
            raise RuntimeError("a disk committer serves the trio run that made it only")
        entry = _Entry(item, trio.lowlevel.current_task())
        self._in_flight += 1
        if not self._runner_started:
            self._runner_started = True
            trio.lowlevel.spawn_system_task(self._run_batches, name="disk committer")
        if self._open:
            self._hand([entry])
        else:
            self._pending.append(entry)
            if self._parked is not None:
                task, self._parked = self._parked, None
                trio.lowlevel.reschedule(task)

        def abort(_: Any) -> trio.lowlevel.Abort:
            if entry.state != _QUEUED:
                return trio.lowlevel.Abort.FAILED  # its batch runs: wait for it
            entry.state = _WITHDRAWN
            self._withdrawn += 1
            self._done(1)
            return trio.lowlevel.Abort.SUCCEEDED

        result: T = await trio.lowlevel.wait_task_rescheduled(abort)
        return result

    def statistics(self) -> DiskStatistics:
        return DiskStatistics(
            commits=self._commits,
            batches=self._batches,
            dir_fsyncs=self._dir_fsyncs,
            largest=self._largest,
            withdrawn=self._withdrawn,
            syncfs=self._syncfs_calls,
        )

    async def aclose(self) -> None:
        """Refuse new commits, wait until every queued one is answered, end the worker."""
        self._closed = True
        if self._in_flight:
            self._idle = trio.Event()
            await self._idle.wait()
        self._stop()

    def _done(self, n: int) -> None:
        self._in_flight -= n
        if not self._in_flight and self._idle is not None:
            self._idle.set()

    def _answer(self, entries: list[_Entry], dir_fsyncs: int, syncfs_calls: int) -> None:
        """In the trio thread: wake every waiter of a batch that ran."""
        self._batches += 1
        self._commits += len(entries)
        self._dir_fsyncs += dir_fsyncs
        self._syncfs_calls += syncfs_calls
        self._largest = max(self._largest, len(entries))
        for entry in entries:
            assert entry.result is not None
            trio.lowlevel.reschedule(entry.task, entry.result)
        self._done(len(entries))

    def _hand(self, entries: list[_Entry]) -> None:
        """Hand ``entries`` to the worker thread (started at the first), marked running:
        from then on a cancel waits for their answer. In the trio thread, as a cancel's
        abort: the worker thread never reads an entry's state."""
        kept = [e for e in entries if e.state == _QUEUED]
        if not kept:
            return
        for entry in kept:
            entry.state = _RUNNING
        if self._thread is None:
            thread = threading.Thread(target=self._work, name="disk committer", daemon=True)
            thread.start()
            self._thread = thread
        self._handed += kept
        self._sent += len(kept)
        self._jobs.put(kept)

    def _stop(self) -> None:
        if self._thread is not None:
            self._jobs.put(None)
            self._thread = None
        if self._parked is not None:
            task, self._parked = self._parked, None
            trio.lowlevel.reschedule(task, outcome.Error(_Stop()))

    # ------------------------------------------------------------------ the runner

    async def _run_batches(self) -> None:
        """The committer's task: once commits wait, open a batch (the worker makes its files
        durable as they come), close it once the loop is idle (or GATHER after it opened),
        answer it once durable: see "When a batch is taken". Under MockClock it holds a token
        of the default limiter from the opening to the answer, so that mock time does not
        move meanwhile."""
        from trio.testing import wait_all_tasks_blocked  # what trio's loop offers for idle

        try:
            await self._run_batches_until_stopped(wait_all_tasks_blocked)
        finally:
            if self._thread is not None:  # the run ends (or aclose): so does the thread
                self._jobs.put(None)
                self._thread = None

    async def _run_batches_until_stopped(self, wait_idle: Callable[[], Any]) -> None:
        try:
            while True:
                if not self._pending and not self._handed:
                    if self._closed:
                        return
                    self._parked = trio.lowlevel.current_task()
                    await trio.lowlevel.wait_task_rescheduled(self._unpark)
                    continue
                limiter = (
                    None if self._threaded else trio.to_thread.current_default_thread_limiter()
                )
                if limiter is not None:
                    await limiter.acquire_on_behalf_of(self)
                try:
                    await self._one_batch(wait_idle)
                finally:
                    self._open = False
                    if limiter is not None:
                        limiter.release_on_behalf_of(self)
        except _Stop:
            return

    async def _one_batch(self, wait_idle: Callable[[], Any]) -> None:
        """Open a batch: hand the commits queued to the worker, and each commit made while
        it is open at once; once the loop is idle (or GATHER after the opening), close it,
        wait until the worker made every commit handed to it durable, answer them all (see
        "When a batch is taken" in the module doc). Every step of this task, and so every
        moment a caller can see, comes from the loop's own state: the worker's speed decides
        only how long the last wait lasts, a wait with the loop otherwise idle."""
        self._open = True
        pending, self._pending = self._pending, []
        self._hand(pending)
        with trio.move_on_after(GATHER):
            await wait_idle()
        self._open = False
        batch, self._handed = self._handed, []
        if not batch:
            return  # every commit queued was withdrawn
        target = self._sent
        if self._threaded:
            await self._durable_through(target)
        else:
            if self._own_limiter is None:
                self._own_limiter = trio.CapacityLimiter(1)
            await trio.to_thread.run_sync(
                self._wait_for_the_worker, batch, target, limiter=self._own_limiter
            )
        with self._lock:
            fsyncs, self._worker_fsyncs = self._worker_fsyncs, 0
            flushes, self._worker_flushes = self._worker_flushes, 0
        self._answer(batch, fsyncs, flushes)

    async def _durable_through(self, target: int) -> None:
        """Thread mode: return once the worker made the first ``target`` entries handed to
        it durable (its wake-up reschedules this task); a cancel waits for it."""
        with self._lock:
            if self._finished >= target:
                return
            self._waiter = (trio.lowlevel.current_task(), target)
        # A batch that runs cannot be withdrawn (a half-done rename is no state to leave):
        # a cancel (the run ending) waits for its answer.
        await trio.lowlevel.wait_task_rescheduled(_wait_for_the_disk)

    def _wait_for_the_worker(self, batch: list[_Entry], target: int) -> None:
        """MockClock mode, in a thread of trio's (or inline, as tests run it): block until
        the worker made the first ``target`` entries handed to it (``batch`` their last)
        durable."""
        with self._lock:
            while self._finished < target:
                self._lock.wait()

    def _unpark(self, _: Any) -> trio.lowlevel.Abort:
        self._parked = None
        return trio.lowlevel.Abort.SUCCEEDED  # the run ends: nothing is left to answer

    # ------------------------------------------------------------------- the worker

    def _work(self) -> None:
        """The worker thread: each time, every entry handed to it so far as one group,
        made durable (:meth:`_run_batch`); then the count of entries done raised, and the
        runner woken if it waits for that count."""
        jobs = self._jobs
        while True:
            job = jobs.get()
            if job is None:
                return
            group = list(job)
            last = False
            while True:
                try:
                    more = jobs.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    last = True
                    break
                group += more
            answer = outcome.capture(self._run_batch, group)
            fsyncs = flushes = 0
            if isinstance(answer, outcome.Error):  # a defect: still, every caller an answer
                for entry in group:
                    if entry.result is None:
                        entry.result = outcome.Error(answer.error)
            else:
                fsyncs, flushes = answer.value
            waiter = None
            with self._lock:
                self._finished += len(group)
                self._worker_fsyncs += fsyncs
                self._worker_flushes += flushes
                self._lock.notify_all()
                if self._waiter is not None and self._finished >= self._waiter[1]:
                    waiter, self._waiter = self._waiter[0], None
            if waiter is not None:
                try:
                    self._token.run_sync_soon(trio.lowlevel.reschedule, waiter)
                except trio.RunFinishedError:
                    return  # the run ended: nobody is left to answer
            if last:
                return

    # ------------------------------------------------------------ the batch (blocking)

    def _run_batch(self, entries: list[_Entry]) -> tuple[int, int]:
        """One group of a batch: every file put in place, then made durable with shared
        directory fsyncs (or one flush of each file system); each entry's result set.
        Returns the number of directory fsyncs and of flushes made."""
        if self._syncfs == "auto":
            self._syncfs = system_syncfs()
        flush = _Flush(self._syncfs)
        try:
            placed: list[_Entry] = []
            for start in range(0, len(entries), STAGED):
                staged = _each(entries[start : start + STAGED], _STAGE)
                # Each file's data to disk in one go before its own fsync (then a cheap one).
                flush.data(staged)
                placed += _each(staged, _PUT_IN_PLACE)
            flush.names()
        finally:
            flush.close()
        synced: dict[str, OSError | None] = {}  # the directories fsynced (not flushed)
        real = self._fsync_dir

        def once(directory: Path, flushed_ok: bool) -> None:
            if flushed_ok:
                return
            key = os.fspath(directory)
            if key in synced:
                failed = synced[key]
                if failed is not None:  # a fresh exception (each caller raises its own)
                    raise OSError(failed.errno, failed.strerror, failed.filename)
                return
            try:
                real(directory)
            except OSError as exc:
                synced[key] = exc
                raise
            synced[key] = None

        owns: list[str] = []
        for entry in placed:
            own = os.fspath(entry.item.path.parent)
            owns.append(own)
            flushed_here = flush.flushed(own)

            def fsync_dir(directory: Path, own: str = own, ok: bool = flushed_here) -> None:
                # Only the file's own folder (renamed into after the flush's descriptor was
                # opened) counts as flushed: a folder made for it, maybe long before the batch
                # (a streamed download), has its parent fsynced, once per group.
                once(directory, ok and os.fspath(directory) == own)

            entry.result = outcome.capture(entry.item.make_durable, fsync_dir)
        for entry, own in zip(placed, owns, strict=True):
            failed = synced.get(own)
            if failed is not None and not isinstance(entry.result, outcome.Error):
                # Its folder was flushed, but also fsynced (a folder made for another file is
                # in it), and that failed: as without the flush, every file in it fails (with
                # the error its own make_durable makes of it).
                def fail_own(directory: Path, own: str = own, failed: OSError = failed) -> None:
                    if os.fspath(directory) == own:
                        raise OSError(failed.errno, failed.strerror, failed.filename)

                entry.result = outcome.capture(entry.item.make_durable, fail_own)
        return len(synced), flush.calls


_FLUSHABLE: Final = frozenset({"ext4", "xfs", "btrfs"})
"""The file systems whose ``syncfs`` writes every dirty inode and commits the journal (or
log, or transaction), and returns that commit's error."""


def _file_system_type(device: int) -> str | None:
    """The type of the file system mounted from ``device`` (``/proc/self/mountinfo``), or
    ``None`` if it is not found there (a btrfs subvolume's own device number, say)."""
    wanted = f"{os.major(device)}:{os.minor(device)}"
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as mounts:
            for line in mounts:
                fields = line.split()
                if len(fields) > 2 and fields[2] == wanted and "-" in fields:
                    return fields[fields.index("-") + 1]
    except OSError:
        return None
    return None


class _Flush:
    """One group's flushes of whole file systems (``syncfs``), when the committer has one.

    A directory descriptor per file system of the group is opened after the first chunk of
    its files is staged and before any of its renames (so that a flush reports every
    write-back error of the names since), then:

    - :meth:`data`: each file system a chunk staged files on, flushed, so that their data
      reaches the disk in one journal commit. A hint for the data: each file's own fsync
      (in ``put_in_place``, cheap once its data is on disk) reports that file's errors. Its
      failure still counts (it consumed the error the names' flush would have reported).
    - :meth:`names`: each file system flushed again once every file is renamed: the renames
      and new files durable in one call instead of one fsync per directory.

    :meth:`flushed` says whether a directory's file system had every flush succeed; one
    whose flush failed (or whose descriptor could not be opened in time) is fsynced
    directory by directory, each error its callers' own. Nothing here raises: any failure
    means "not flushed", and the directory fsyncs come back.
    """

    def __init__(self, syncfs: Syncfs | None) -> None:
        self._syncfs = syncfs
        self._fds: dict[int, int] = {}  # device -> an open directory on it
        self._devices: dict[str, int | None] = {}  # directory -> its device (None: unknown)
        self._failed: set[int] = set()  # devices not flushed (a flush or an open failed)
        self._done: set[int] = set()  # devices whose names' flush succeeded
        self.calls = 0

    def _device(self, directory: str) -> int | None:
        try:
            return self._devices[directory]
        except KeyError:
            pass
        try:
            device: int | None = os.stat(directory).st_dev
        except OSError:
            device = None
        self._devices[directory] = device
        return device

    def data(self, staged: list[_Entry]) -> None:
        if self._syncfs is None:
            return
        try:
            chunk: set[int] = set()
            for entry in staged:
                directory = os.fspath(entry.item.path.parent)
                device = self._device(directory)
                if device is None or device in self._failed:
                    continue
                if device not in self._fds:
                    # Looked up per batch: a device number may be a new mount's later.
                    if _file_system_type(device) not in _FLUSHABLE:
                        self._failed.add(device)
                        continue
                    try:
                        self._fds[device] = os.open(directory, _DIRECTORY_FLAGS)
                    except OSError:
                        self._failed.add(device)  # later chunks' renames would predate it
                        continue
                chunk.add(device)
            for device in chunk:
                self._call(device)
        except Exception:  # a defect here costs the flush, never an answer
            self._syncfs = None

    def _call(self, device: int) -> None:
        assert self._syncfs is not None
        self.calls += 1
        try:
            self._syncfs(self._fds[device])
        except Exception:  # not flushed: its directories are fsynced instead
            self._failed.add(device)

    def names(self) -> None:
        if self._syncfs is None:
            return
        for device, fd in self._fds.items():
            if device in self._failed:
                continue
            self._call(device)
            if device in self._failed:
                continue
            # Then a fsync of the (now clean, so cheap) directory: ext4 before Linux 6.13
            # answered a syncfs of a file system shut down by a failed journal commit with 0;
            # its fsync says EIO.
            try:
                os.fsync(fd)
            except OSError:
                self._failed.add(device)
                continue
            self._done.add(device)

    def flushed(self, directory: str) -> bool:
        """Whether ``directory``'s file system had every flush of the batch succeed."""
        return bool(self._done) and self._devices.get(directory) in self._done

    def close(self) -> None:
        fds, self._fds = self._fds, {}
        for fd in fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)


_DIRECTORY_FLAGS: Final = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)


_STAGE: Final = operator.methodcaller("stage")
_PUT_IN_PLACE: Final = operator.methodcaller("put_in_place")


def _each(entries: list[_Entry], step: Callable[[Any], object]) -> list[_Entry]:
    """Run ``step`` on each entry's item; a failure is that entry's result. Returns the
    entries it succeeded on, in order."""
    done: list[_Entry] = []
    for entry in entries:
        try:
            step(entry.item)
        except Exception as exc:
            entry.result = outcome.Error(exc)
            continue
        done.append(entry)
    return done


def _wait_for_the_disk(_: Any) -> trio.lowlevel.Abort:
    return trio.lowlevel.Abort.FAILED


class _Stop(Exception):
    """Ends the runner task of a closed committer."""


_SHARED: Final = trio.lowlevel.RunVar[DiskCommitter]("disk_committer")


def disk_committer() -> DiskCommitter:
    """The trio run's shared committer (made at the first call; it ends with the run)."""
    try:
        return _SHARED.get()
    except LookupError:
        committer = DiskCommitter()
        _SHARED.set(committer)
        return committer


def _mock_clock() -> bool:
    """Whether this run's clock is trio's MockClock (a test's, whose time may leap)."""
    testing = sys.modules.get("trio.testing")
    return testing is not None and isinstance(trio.lowlevel.current_clock(), testing.MockClock)
