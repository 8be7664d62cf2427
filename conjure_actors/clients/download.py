"""Where a download lands: a temporary file beside its final name, written durably.

A :class:`FileSink` takes the body of an HTTP answer chunk by chunk. It counts the bytes
against a cap (:class:`DownloadTooLargeError` the moment one byte too many arrives, so a
body that never ends costs at most the cap on disk and one chunk in memory), hashes them as
they come (no second read of the file), and keeps the first and last bytes for the format
check. :meth:`FileSink.commit` fsyncs the file, renames it over the final name and fsyncs
the directory (and the parent of every folder it made, so that a new job's folder survives
a power loss too); :meth:`FileSink.abort` removes it. A local ``OSError`` (disk full, a
directory where the file should go) becomes :class:`LocalSaveError` (a
:class:`DownloadError`).

Small bodies (most outputs: a PNG, a short mesh) stay in memory until :meth:`commit`, which
then does all the file work at once (folder, temporary file, write, fsync, rename, folder
fsync) in the one worker thread the caller runs it in (a group committer's, shared with
every other file of its batch, or a ``trio.to_thread.run_sync`` of its own): the event loop
makes no file system call for them (a ``mkdir`` and an ``open`` on the loop cost more than
the rest of the download). The first chunk that takes a body past :data:`MEMORY_BYTES` opens
the temporary file and the body streams to disk from then on, as large ones always did.

The helpers :func:`open_temp_beside` and :func:`fsync_dir` are shared with
``conjure_actors.actors.files`` (the actors' durable writes).
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, Protocol

from conjure_actors.clients.errors import DownloadTooLargeError, LocalSaveError

__all__ = [
    "DEFAULT_MAX_DOWNLOAD_BYTES",
    "MEMORY_BYTES",
    "Committer",
    "FileSink",
    "fsync_dir",
    "fsync_made",
    "make_dirs",
    "open_temp_beside",
    "unmake_dirs",
]

DEFAULT_MAX_DOWNLOAD_BYTES: Final = 2 * 1024**3
MEMORY_BYTES: Final = 1024 * 1024
"""A body up to this size is held in memory until :meth:`FileSink.commit` writes it."""


class Committer(Protocol):
    """A group committer of durable file writes (``conjure_actors.runtime.disk.
    DiskCommitter``, passed in by the caller: clients know no runtime): it runs the
    sink's :meth:`FileSink.stage`, :meth:`FileSink.put_in_place` and
    :meth:`FileSink.make_durable` in its own thread, with the other files of a batch (all
    staged before the first fsync; directory fsyncs shared), and returns once they ran
    (raising what they raised)."""

    async def commit(self, item: Any) -> Any: ...


_TEMP_IDS: Final = itertools.count()
_HEAD: Final = 16
_TAIL: Final = 16


def open_temp_beside(
    path: Path, mode: int = 0o666, made: list[Path] | None = None
) -> tuple[int, Path]:
    """Create a fresh temporary file in ``path``'s directory (made if missing): (fd, path).

    Its name starts with a dot and ends in ``.part``, and is never an existing file's: it
    holds this process's id and a counter (unique among the live processes of this host),
    and ``O_EXCL`` skips a name left behind by an earlier process. The directory is made
    only when the first ``open`` finds it missing (one system call saved per later file);
    the folders this call made are appended to ``made``, outermost first, for
    :func:`fsync_made` (a new folder's own name is durable only once its parent is fsynced).
    """
    tried = False
    while True:
        tmp = path.with_name(f".{path.name}.{os.getpid():x}-{next(_TEMP_IDS):x}.part")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        except FileExistsError:
            continue
        except FileNotFoundError:
            if tried:
                raise
            _make_dirs(path.parent, [] if made is None else made)
            tried = True
            continue
        return fd, tmp


def _make_dirs(folder: Path, made: list[Path]) -> None:
    """``folder.mkdir(parents=True, exist_ok=True)`` that appends the folders it made to
    ``made`` (outermost first)."""
    try:
        os.mkdir(folder)
    except FileNotFoundError:
        if folder.parent == folder:
            raise
        _make_dirs(folder.parent, made)
        try:
            os.mkdir(folder)
        except FileExistsError:
            if not folder.is_dir():
                raise
            return  # made meanwhile by someone else
    except FileExistsError:
        if not folder.is_dir():
            raise
        return
    made.append(folder)


def make_dirs(folder: Path) -> None:
    """``folder.mkdir(parents=True, exist_ok=True)`` whose new folders' names are durable
    (the parent of each fsynced, innermost first). For a folder made ahead of the files
    that go into it (``--out``): a file's commit makes durable only the folders it made
    itself, so a folder made before, and not yet durable, could vanish after a power loss
    with every file a job was told was saved in it. On failure, the folders it made are
    removed again."""
    made: list[Path] = []
    try:
        _make_dirs(folder, made)
        fsync_made(made)
    except OSError:
        unmake_dirs(made)  # nothing left behind (a name too long, a folder refused)
        raise


def fsync_dir(directory: Path) -> None:
    """Make the directory's entries (a rename, a new file) durable."""
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_made(made: list[Path]) -> None:
    """Make the names of folders made for a file durable: the parent of each, innermost
    first (call it after the file's own folder was fsynced). A file fsynced and renamed in
    a folder made for it is not durable until the folder's own name is: after a power loss
    the whole new folder (a job's ``OUT/<job>/``) could be gone."""
    for folder in reversed(made):
        fsync_dir(folder.parent)


def unmake_dirs(made: list[Path]) -> None:
    """The file the folders in ``made`` were made for was not kept: remove them, innermost
    first, while they are empty, so that the next file there makes them again (and makes
    their names durable). One still in use (another file's) has its name made durable now:
    the file in it found it made and will not. ``made`` is emptied."""
    for i in range(len(made) - 1, -1, -1):
        try:
            os.rmdir(made[i])
        except FileNotFoundError:
            continue
        except OSError:
            fsync_made(made[: i + 1])
            break
    made.clear()


class FileSink:
    """The body of one download attempt, on its way to ``path`` (see the module doc)."""

    def __init__(self, path: Path, *, max_bytes: int, what: str) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.what = what
        self.size = 0
        self.head = b""
        self.tail = b""
        self._digest = hashlib.sha256()
        self._fd: int | None = None
        self._tmp: Path | None = None
        self._held: list[bytes] | None = []  # the body while it is small (None: on disk)
        self._made: list[Path] = []  # the folders made for it (their names fsynced at commit)
        self._done = False

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()

    def _local(self, exc: OSError) -> LocalSaveError:
        return LocalSaveError(
            f"cannot save {self.what} locally: {exc.strerror or type(exc).__name__}"
        )

    def write(self, chunk: bytes) -> None:
        """Append a chunk; over the cap -> :class:`DownloadTooLargeError`."""
        if not chunk:
            return
        if self.size + len(chunk) > self.max_bytes:
            raise DownloadTooLargeError(
                f"{self.what} is larger than the download cap of {self.max_bytes} bytes "
                "(raise downloads.max_bytes if it is expected)"
            )
        if len(self.head) < _HEAD:
            self.head += chunk[: _HEAD - len(self.head)]
        self.tail = (self.tail + chunk[-_TAIL:])[-_TAIL:]  # no copy of a whole chunk
        self._digest.update(chunk)
        self.size += len(chunk)
        try:
            if self._held is not None:
                if self.size <= MEMORY_BYTES:
                    self._held.append(chunk)
                    return
                held, self._held = self._held, None
                self._open()
                for piece in held:
                    self._write(piece)
            self._write(chunk)
        except OSError as exc:
            raise self._local(exc) from exc

    def _open(self) -> None:
        assert self._fd is None
        self._fd, self._tmp = open_temp_beside(self.path, made=self._made)

    def _write(self, data: bytes) -> None:
        assert self._fd is not None
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]

    def commit(self) -> None:
        """(Write a body held in memory,) fsync, rename over the final name, fsync the
        directory (and the parent of each folder made for the file). Blocking (file system
        calls, two fsyncs, one more per folder made): async callers run it in a worker
        thread (``trio.to_thread.run_sync(sink.commit)``), or hand the sink to a group
        committer (:class:`Committer`), which runs its three steps below."""
        self.stage()
        self.put_in_place()
        self.make_durable(fsync_dir)

    def stage(self) -> None:
        """The first step of :meth:`commit`: a body held in memory is written to its
        temporary file (made now; no fsync). Blocking."""
        assert not self._done, "FileSink.commit after commit or abort"
        if self._held is None:
            return  # on disk already
        try:
            held, self._held = self._held, None
            self._open()
            for piece in held:
                self._write(piece)
        except OSError as exc:
            self._abort_quietly()
            raise self._local(exc) from exc

    def put_in_place(self) -> None:
        """The second step of :meth:`commit`, after :meth:`stage`: fsync, rename over the
        final name. Blocking."""
        assert not self._done, "FileSink.commit after commit or abort"
        try:
            assert self._fd is not None
            assert self._tmp is not None
            fd, self._fd = self._fd, None
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(self._tmp, self.path)
            self._tmp = None
            self._done = True
        except OSError as exc:
            self._abort_quietly()
            raise self._local(exc) from exc

    def make_durable(self, fsync_dir: Callable[[Path], None]) -> None:
        """The last step of :meth:`commit`, after :meth:`put_in_place`: fsync the
        directory and the parent of each folder made, through ``fsync_dir`` (a group
        committer's fsyncs each directory once per batch). Blocking."""
        try:
            fsync_dir(self.path.parent)
            for folder in reversed(self._made):
                fsync_dir(folder.parent)
            self._made.clear()  # kept: abort (always called after) must not unmake them
        except OSError as exc:
            raise self._local(exc) from exc

    def _abort_quietly(self) -> None:
        """A failed step cleans up at once, in the committer's batch (a FileCommit leaves
        nothing behind): a folder it made and unmakes is fsynced out before any file of the
        batch that went into it is answered (its caller's own abort, later, does nothing)."""
        with contextlib.suppress(OSError):
            self.abort()

    def abort(self) -> None:
        """Drop the body: close and remove the temporary file if there is one (idempotent;
        after commit, nothing)."""
        self._held = None
        self._done = True
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)
        if self._tmp is not None:
            tmp, self._tmp = self._tmp, None
            tmp.unlink(missing_ok=True)
        if self._made:
            unmake_dirs(self._made)
