"""Small local file operations of the actors (inputs kept for resume, outputs written).

:func:`write_atomic` is blocking; a job's outputs go through the run's group committer
(:func:`commit_atomic`, ``conjure_actors.runtime.disk``), which writes them in its own thread,
several files per batch with their directory fsyncs shared.

Durability: a file is written to a temporary file in its own directory, fsynced, renamed
over its final name, and the directory is fsynced, so that after a crash or a power loss
the final name holds either the old bytes or the complete new ones, never a truncated file;
a folder made for the file has its own name made durable too (its parent fsynced).

Output names come from a server we do not trust: :func:`output_path` builds the path of
an output under ``OUT/<job>/`` from its subfolder and filename, keeping the subfolder (two
``x_00001_.png`` in different subfolders are different files), and refuses any name that
could land elsewhere or that the filesystem cannot hold (:class:`UnsafeOutputNameError`).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Final

from conjure_actors.clients.download import fsync_dir, open_temp_beside, unmake_dirs
from conjure_actors.clients.errors import UnsafeOutputNameError
from conjure_actors.domain.output_names import (
    MAX_COMPONENT_BYTES,
    MAX_RELATIVE_BYTES,
    UnsafeName,
    relative_parts,
    shown_name,
)

if TYPE_CHECKING:
    from conjure_actors.runtime.disk import DiskCommitter

__all__ = [
    "MAX_COMPONENT_BYTES",
    "MAX_RELATIVE_BYTES",
    "AtomicWrite",
    "UnsafeOutputNameError",
    "commit_atomic",
    "fsync_dir",
    "hash_file",
    "intact",
    "keep_input",
    "open_temp_beside",
    "output_path",
    "read_bytes",
    "safe_relative_parts",
    "write_atomic",
]

_CHUNK: Final = 1024 * 1024


def read_bytes(path: Path) -> bytes:
    """The file's bytes (``OSError`` if it cannot be read)."""
    return path.read_bytes()


def write_atomic(path: Path, data: bytes, *, mode: int | None = None) -> None:
    """Write ``data`` to ``path`` durably: temp file, fsync, rename, directory fsync (and
    the parent's of each folder made for it). Blocking; async code hands an
    :class:`AtomicWrite` to the run's group committer instead (:func:`commit_atomic`).

    ``mode``: the file's exact permission bits from its creation on (``0o600`` for a
    secret: never readable by others, not even for a moment); ``None`` follows the umask.
    """
    write = AtomicWrite(path, data, mode=mode)
    write.stage()
    write.put_in_place()
    write.make_durable(fsync_dir)


class AtomicWrite:
    """:func:`write_atomic` in the three steps a group committer runs (a
    ``conjure_actors.runtime.disk.FileCommit``): the temporary file written, then fsynced
    and renamed, then its directories fsynced."""

    __slots__ = ("_fd", "_made", "_tmp", "data", "mode", "path")

    def __init__(self, path: Path, data: bytes, *, mode: int | None = None) -> None:
        self.path = path
        self.data = data
        self.mode = mode
        self._made: list[Path] = []
        self._fd: int | None = None
        self._tmp: Path | None = None

    def stage(self) -> None:
        """Temp file (its folder made if missing), written (no fsync yet); on failure the
        temp file and the folders made for it are removed."""
        mode = self.mode
        fd, self._tmp = open_temp_beside(self.path, 0o666 if mode is None else mode, self._made)
        self._fd = fd
        try:
            view = memoryview(self.data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            if mode is not None:
                os.fchmod(fd, mode)  # exactly, whatever the umask
        except BaseException:
            self._drop()
            raise

    def put_in_place(self) -> None:
        """After :meth:`stage`: fsync, rename; on failure the temp file and the folders
        made for it are removed."""
        assert self._fd is not None
        assert self._tmp is not None
        try:
            fd, self._fd = self._fd, None
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(self._tmp, self.path)
            self._tmp = None
        except BaseException:
            self._drop()
            raise

    def _drop(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)
        if self._tmp is not None:
            tmp, self._tmp = self._tmp, None
            tmp.unlink(missing_ok=True)
        unmake_dirs(self._made)

    def make_durable(self, fsync_dir: Callable[[Path], None]) -> None:
        """Fsync the file's directory, then the parent of each folder made for it."""
        fsync_dir(self.path.parent)
        for folder in reversed(self._made):
            fsync_dir(folder.parent)


async def commit_atomic(disk: DiskCommitter, path: Path, data: bytes) -> None:
    """:func:`write_atomic` through ``disk`` (the run's group committer): returns once the
    file and its directories are fsynced; ``OSError`` as :func:`write_atomic` raises it."""
    await disk.commit(AtomicWrite(path, data))


def keep_input(folder: Path, name: str, data: bytes) -> Path:
    """Store an input under ``folder/name`` once (content-addressed names never change)."""
    target = folder / name
    if not target.exists():
        write_atomic(target, data)
    return target


def hash_file(path: Path) -> tuple[int, str]:
    """(size, sha256 hex) of a file, read in chunks (``OSError`` if it cannot be read)."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def intact(path: Path, sha256: str) -> bool:
    """True if ``path`` exists and its bytes hash to ``sha256`` (read in chunks)."""
    try:
        return hash_file(path)[1] == sha256
    except (OSError, ValueError):  # ValueError: a path with a NUL (an old, unsafe log entry)
        return False


def safe_relative_parts(subfolder: str, filename: str) -> tuple[str, ...]:
    """The path components of an output under its job's folder (``domain.output_names``:
    :func:`~conjure_actors.domain.output_names.relative_parts`); raises
    :class:`UnsafeOutputNameError` for anything that is not a plain relative name."""
    try:
        return relative_parts(subfolder, filename)
    except UnsafeName as exc:
        raise UnsafeOutputNameError(str(exc)) from None


def output_path(job_dir: Path, subfolder: str, filename: str) -> Path:
    """Where an output named by a server is saved: ``job_dir/<subfolder parts>/<filename>``.

    The result is always strictly inside ``job_dir`` (checked again after joining);
    anything else raises :class:`UnsafeOutputNameError`.
    """
    path = job_dir.joinpath(*safe_relative_parts(subfolder, filename))
    base = os.path.normpath(job_dir)
    joined = os.path.normpath(path)
    if os.path.commonpath([base, joined]) != base or joined == base:
        raise UnsafeOutputNameError(
            f"output {shown_name(subfolder)}/{shown_name(filename)} would land outside its folder"
        )
    return path


def remove_outputs(job_dir: Path, paths: Iterable[str]) -> int:
    """Remove the files at ``paths`` that lie inside ``job_dir`` (a job's output folder; any
    other path is left alone, e.g. under another run's ``--out``): those an abandoned
    attempt of the job saved. Blocking (a worker thread's); a file already gone or that
    cannot be removed is skipped. How many were removed."""
    root = os.path.realpath(job_dir)
    removed = 0
    for path in paths:
        real = os.path.realpath(path)
        if os.path.commonpath([root, real]) != root or real == root:
            continue
        try:
            os.unlink(real)
        except OSError:
            continue
        removed += 1
    return removed
