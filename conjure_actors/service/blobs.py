"""The blob store: content-addressed bytes on disk, named by their blake3 hash.

A blob is written to a temporary file in the store's directory, flushed and fsynced, then
renamed to its hash (and the directory fsynced), so a blob that exists under its name is
complete: the event that records an asset is logged only after :meth:`BlobStore.put`
returned. Assets are records over blobs (:mod:`conjure_actors.domain.service_events`);
several assets may share one blob.

A blob can still be damaged afterwards, by the disk or by hand: its file gone, cut short,
grown, or its bytes changed. :meth:`BlobStore.open_checked` refuses to serve a blob whose
file is missing or not its recorded size (a stat of the open file: free), and a read of a
whole blob hashes the bytes as they go and fails before its last chunk when they no longer
hash to the blob's name; either way the damage is remembered (:meth:`BlobStore.damaged`,
memory only) until the same bytes are stored again, which replaces the damaged file
(:meth:`BlobStore.put_stream`), or the file is changed or removed.

The store's folder may refuse writes: its disk full, read-only (remounted after errors), or
not the server's to write (another owner, immutable). A store that a write found so raises
:class:`StoreRefusedError` (an ``OSError``), logs one line naming the folder as the refusal
starts (not one per write) and remembers it (:meth:`BlobStore.refusal`, memory only) until a
write succeeds again (:meth:`BlobStore.probe_write` tries one: the health probe's way to
see it recover); nothing of the refused write is left in the folder.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final

import blake3

from conjure_actors.clients.download import fsync_dir

log = logging.getLogger("conjure_actors.service")

HASH_PREFIX: Final = "blake3:"
_HEX = re.compile(r"[0-9a-f]{64}")
CHUNK: Final = 1 << 20

MISSING: Final = "missing"
SHORT: Final = "short"
LONG: Final = "long"
CHANGED: Final = "changed"


class BlobTooLargeError(Exception):
    """The bytes exceed the store's limit for one blob."""


DISK_FULL: Final = frozenset({errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)})
"""The errors of a write on a full disk (or over its quota)."""
REFUSALS: Final = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, *DISK_FULL})
GONE: Final = frozenset({errno.ENOENT, errno.ENOTDIR})
"""The errors of a write in a folder that is not there (removed, replaced by a file, its
disk not mounted): a refusal too when it is the store's own folder that went (QA7: it
read healthy, uploads got 500, and every output failed at once, blamed on its own file)."""
"""The errors of a write the folder refuses, whatever is written: full, read-only, not
writable by the server. Fixed by the operator, never by the client's retry alone."""


@dataclass(frozen=True)
class StoreRefusal:
    """Why the store's folder refuses writes: the ``errno`` of the write that found it."""

    errno: int

    @property
    def disk_full(self) -> bool:
        return self.errno in DISK_FULL

    @property
    def cause(self) -> str:
        """The system's words for it ("Permission denied", "Read-only file system")."""
        return os.strerror(self.errno)

    def remedy(self) -> str:
        """What the operator does about it."""
        if self.disk_full:
            return "free space on its disk"
        if self.errno in GONE:
            return "put the folder back (create it, or mount its disk), writable by the server"
        return "make it writable by the server (its owner, its mode, the disk mounted read-write)"


class RefusalWatch:
    """Whether a folder refuses writes, as the last write (or probe) found it, read and set
    from trio and from worker threads; one log line as a refusal starts (or its cause
    changes), one as writes succeed again. ``started``: the first line (``%s``: the folder,
    the cause, the remedy); ``ended``: the second (``%s``: the folder). The blob store's
    and the output folder's (``service.outfolder``)."""

    def __init__(self, root: Path, started: str, ended: str) -> None:
        self.root = root
        self._started = started
        self._ended = ended
        self._lock = threading.Lock()
        self._refusal: StoreRefusal | None = None

    def get(self) -> StoreRefusal | None:
        """The refusal (None: the last write or probe succeeded, or none was tried)."""
        with self._lock:
            return self._refusal

    def set(self, refusal: StoreRefusal | None) -> None:
        """How the last write (or probe) went."""
        with self._lock:
            before, self._refusal = self._refusal, refusal
        if refusal == before:
            return
        if refusal is not None:
            log.error(self._started, self.root, refusal.cause, refusal.remedy())
        else:
            log.warning(self._ended, self.root)


class StoreRefusedError(OSError):
    """The store's folder refused a write (:class:`StoreRefusal`); nothing was stored."""

    def __init__(self, refusal: StoreRefusal, root: Path) -> None:
        super().__init__(refusal.errno, refusal.cause, str(root))
        self.refusal = refusal


@dataclass(frozen=True)
class BlobDamage:
    """What is wrong with a stored blob: ``problem`` is :data:`MISSING` (no file),
    :data:`SHORT` or :data:`LONG` (the file's size, ``on_disk``, is not the ``size`` its
    assets record) or :data:`CHANGED` (the size is right, the bytes no longer hash to the
    blob's name)."""

    problem: str
    size: int
    on_disk: int | None

    def describe(self) -> str:
        """What happened, to follow "the stored bytes of asset X ..."."""
        if self.problem == MISSING:
            return "are gone from the server's disk"
        if self.problem == CHANGED:
            return "are damaged: they no longer match their blake3 hash"
        if self.problem == SHORT:
            return f"are damaged: only {self.on_disk} of its {self.size} bytes are on the disk"
        return f"are damaged: {self.on_disk} bytes are on the disk where {self.size} were stored"


def _size_damage(size: int, on_disk: int) -> BlobDamage:
    """The damage of a file of ``on_disk`` bytes where ``size`` were stored (not equal)."""
    return BlobDamage(SHORT if on_disk < size else LONG, size, on_disk)


class BlobDamagedError(Exception):
    """A blob is damaged (:class:`BlobDamage`); ``first``: this is when it was found (not a
    damage found before and remembered)."""

    def __init__(self, hash_text: str, damage: BlobDamage, *, first: bool) -> None:
        super().__init__(f"{hash_text} {damage.describe()}")
        self.hash_text = hash_text
        self.damage = damage
        self.first = first


_FileKey = tuple[int, int, int]
"""``(inode, size, mtime)`` of a blob's file: a damage found in a file is remembered for that
file only (one put back by hand, or stored again, is a different file)."""


def _key(info: os.stat_result) -> _FileKey:
    return info.st_ino, info.st_size, info.st_mtime_ns


def parse_hash(text: str) -> str | None:
    """The hex digest of ``blake3:<64 hex>`` (None when malformed)."""
    if not text.startswith(HASH_PREFIX):
        return None
    hexdigest = text[len(HASH_PREFIX) :].lower()
    return hexdigest if _HEX.fullmatch(hexdigest) else None


def blake3_of(data: bytes) -> str:
    """``blake3:<hex>`` of ``data``."""
    return HASH_PREFIX + blake3.blake3(data).hexdigest()


class BlobStore:
    """Blobs under ``root/<hex>`` (mode 0600)."""

    def __init__(
        self, root: str | os.PathLike[str], *, max_bytes: int | None = None, chunk: int = CHUNK
    ) -> None:
        self.root = Path(root)
        self.max_bytes = max_bytes
        self.chunk = chunk
        # Damage found (blake3:<hex> -> the damage, and the file it was found in; None: no
        # file). Read and written from worker threads: a lock keeps each change whole.
        self._damage: dict[str, tuple[BlobDamage, _FileKey | None]] = {}
        self._lock = threading.Lock()
        # The refusal of the last write (None: it succeeded, or none was tried).
        self._refusal = RefusalWatch(
            self.root,
            "cannot write the blob store %s (%s): uploads and job outputs fail until it takes"
            " writes again; %s",
            "the blob store %s takes writes again",
        )
        missing = [p for p in (self.root, *self.root.parents) if not p.exists()]
        self.root.mkdir(parents=True, exist_ok=True)
        # A folder's name is durable only once its parent is fsynced: without it, a power
        # loss could take the new store (and every blob the log says it holds) away.
        for folder in missing:  # innermost first
            fsync_dir(folder.parent)

    def path_of(self, hash_text: str) -> Path | None:
        """Where the blob of ``blake3:<hex>`` lives (None when the hash is malformed)."""
        hexdigest = parse_hash(hash_text)
        return None if hexdigest is None else self.root / hexdigest

    def has(self, hash_text: str) -> bool:
        path = self.path_of(hash_text)
        return path is not None and path.is_file()

    def holds(self, hash_text: str, size: int) -> bool:
        """Whether the blob is stored whole, as far as a stat tells: its file of ``size``
        bytes, not found damaged before (a damaged one is replaced by the next store of the
        same bytes)."""
        path = self.path_of(hash_text)
        try:
            info = os.stat(path) if path is not None else None
        except (FileNotFoundError, NotADirectoryError):
            return False
        if info is None or info.st_size != size:
            return False
        with self._lock:
            known = self._damage.get(hash_text)
        return known is None or known[1] != _key(info)

    def damaged(self) -> dict[str, BlobDamage]:
        """The blobs found damaged (``blake3:<hex>`` -> what is wrong), memory only: found
        by :meth:`open_checked` and the reads it returns, forgotten once the blob is stored
        again, changed (put back by hand: its next read checks it) or removed."""
        with self._lock:
            return {h: damage for h, (damage, _) in self._damage.items()}

    def _found(self, hash_text: str, damage: BlobDamage, key: _FileKey | None) -> bool:
        """Remember a damage; True when it is new (not the same one found before)."""
        with self._lock:
            before = self._damage.get(hash_text)
            self._damage[hash_text] = (damage, key)
        return before != (damage, key)

    def _forget(self, hash_text: str) -> BlobDamage | None:
        with self._lock:
            known = self._damage.pop(hash_text, None)
        return None if known is None else known[0]

    def refusal(self) -> StoreRefusal | None:
        """Why the folder refuses writes, as the last write (or probe) found it; None once
        one succeeded (or before any was tried)."""
        return self._refusal.get()

    def _refused(self, exc: OSError) -> OSError:
        """``exc`` as the store's caller sees it: :class:`StoreRefusedError` for a refusal
        (remembered), else unchanged."""
        if exc.errno in GONE and not self.root.is_dir():
            refusal = StoreRefusal(exc.errno)
            self._refusal.set(refusal)
            return StoreRefusedError(refusal, self.root)
        if exc.errno is None or exc.errno not in REFUSALS:
            return exc
        refusal = StoreRefusal(exc.errno)
        self._refusal.set(refusal)
        return StoreRefusedError(refusal, self.root)

    def probe_write(self) -> StoreRefusal | None:
        """Write one byte to a temporary file in the folder and remove it: whether it takes
        writes now (remembered, as a store's write would be). Blocking."""
        try:
            fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".probe-")
            try:
                os.write(fd, b"\0")
            finally:
                os.close(fd)
                os.unlink(tmp)
        except OSError as exc:
            error = self._refused(exc)
            if isinstance(error, StoreRefusedError):
                return error.refusal
            raise
        self._refusal.set(None)
        return None

    def put_stream(self, source: BinaryIO) -> tuple[str, int, bool]:
        """Copy ``source`` into the store; returns ``(blake3:<hex>, size, created_new)``.

        Blocking (file I/O): run it in a worker thread. Raises :class:`BlobTooLargeError`
        past ``max_bytes``, :class:`StoreRefusedError` when the folder refuses the write
        (nothing is kept either way) unless the bytes are stored already (a seekable
        ``source`` is hashed then: an upload of known bytes needs no write)."""
        try:
            stored = self._put_stream(source)
        except OSError as exc:
            error = self._refused(exc)
            if error is exc:
                raise
            known = self._stored_already(source)
            if known is not None:  # nothing to write: the refusal does not matter
                return known
            raise error from exc
        self._refusal.set(None)
        return stored

    def _stored_already(self, source: BinaryIO) -> tuple[str, int, bool] | None:
        """``(blake3:<hex>, size, False)`` when the bytes of ``source`` (seekable: an
        upload's spooled file) are stored whole already; None otherwise."""
        if not source.seekable():
            return None
        source.seek(0)
        hasher = blake3.blake3()
        size = 0
        while chunk := source.read(CHUNK):
            size += len(chunk)
            if self.max_bytes is not None and size > self.max_bytes:
                return None
            hasher.update(chunk)
        hash_text = HASH_PREFIX + hasher.hexdigest()
        return (hash_text, size, False) if self.holds(hash_text, size) else None

    def _put_stream(self, source: BinaryIO) -> tuple[str, int, bool]:
        hasher = blake3.blake3()
        size = 0
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".incoming-")
        try:
            with os.fdopen(fd, "wb") as out:
                while chunk := source.read(CHUNK):
                    size += len(chunk)
                    if self.max_bytes is not None and size > self.max_bytes:
                        raise BlobTooLargeError(f"more than {self.max_bytes} bytes")
                    hasher.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            hash_text = HASH_PREFIX + hasher.hexdigest()
            target = self.root / hash_text[len(HASH_PREFIX) :]
            if self.holds(hash_text, size):
                os.unlink(tmp)
                return hash_text, size, False
            os.chmod(tmp, 0o600)
            created = True
            try:
                # link, not replace: of two stores of the same new bytes at once, exactly
                # one creates the blob (the AssetActor and uploads rely on 'created').
                os.link(tmp, target)
            except FileExistsError:  # stored meanwhile by another: its name made durable
                created = False
                if not self.holds(hash_text, size):
                    # The name holds damaged bytes (cut, grown, changed): these bytes, whole
                    # and hashed, replace them at once for every asset over them (a read
                    # that opened the damaged file keeps it, and fails as it would have).
                    on_disk = os.stat(target).st_size
                    os.replace(tmp, target)
                    damage = self._forget(hash_text) or _size_damage(size, on_disk)
                    log.warning(
                        "the stored bytes of blob %s %s: the same bytes, stored again now,"
                        " replaced them",
                        hash_text,
                        damage.describe(),
                    )
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
            self._sync_dir()
            return hash_text, size, created
        except BaseException:
            with contextlib.suppress(OSError):  # the error raised says more than this one
                os.unlink(tmp)
            raise

    def stored_as(self, path: str | os.PathLike[str], limit: int) -> tuple[str, int] | None:
        """``(blake3:<hex>, size)`` of a file of at most ``limit`` bytes whose blob is stored
        already; None when it is larger or its bytes are not stored yet (then
        :meth:`put_file` it). Reads the file whole: meant for small files, where a worker
        thread would cost more than the read and the hash."""
        with open(path, "rb") as source:
            data = source.read(limit + 1)
        if len(data) > limit or (self.max_bytes is not None and len(data) > self.max_bytes):
            return None
        hash_text = blake3_of(data)
        return (hash_text, len(data)) if self.holds(hash_text, len(data)) else None

    def put_file(self, path: str | os.PathLike[str]) -> tuple[str, int, bool]:
        """:meth:`put_stream` of a file's bytes; a file whose blob is already stored is only
        read (hashed), never copied nor fsynced again (a job's outputs are often the same
        bytes as an earlier job's, and every fsync here delays the journal's on the disk)."""
        with open(path, "rb") as source:
            hasher = blake3.blake3()
            size = 0
            while chunk := source.read(CHUNK):
                size += len(chunk)
                hasher.update(chunk)
            hash_text = HASH_PREFIX + hasher.hexdigest()
            if (self.max_bytes is None or size <= self.max_bytes) and self.holds(hash_text, size):
                return hash_text, size, False
            source.seek(0)
            return self.put_stream(source)

    def open_checked(self, hash_text: str, size: int, start: int, end: int) -> BlobRange:
        """The bytes ``start..end`` (inclusive) of a blob of ``size`` bytes, in chunks, from
        a file opened now; :class:`BlobDamagedError` at once when the file is gone, is not
        ``size`` bytes long (a stat of the open file) or was found damaged before. A read of
        the whole blob hashes it as it goes: its last chunk is never returned when the
        bytes do not hash to the blob's name (:class:`BlobDamagedError` instead; so too
        when the file is cut while read). Once open the bytes stay readable though the blob
        is removed meanwhile (removal unlinks the name). Close it if it is not read to its
        end. Blocking (an open and a stat)."""
        path = self.path_of(hash_text)
        try:
            if path is None:
                raise FileNotFoundError(hash_text)
            source = open(path, "rb")  # noqa: SIM115 (BlobRange closes it)
        except (FileNotFoundError, NotADirectoryError):
            damage = BlobDamage(MISSING, size, None)
            raise BlobDamagedError(
                hash_text, damage, first=self._found(hash_text, damage, None)
            ) from None
        try:
            key = _key(os.fstat(source.fileno()))
            with self._lock:
                known = self._damage.get(hash_text)
            if known is not None and known[1] == key:  # found in this very file before
                raise BlobDamagedError(hash_text, known[0], first=False)
            if known is not None:  # another file now (stored again, or put back by hand)
                self._forget(hash_text)
            if key[1] != size:
                damage = _size_damage(size, key[1])
                raise BlobDamagedError(hash_text, damage, first=self._found(hash_text, damage, key))
            blob = _Blob(self, hash_text, size, key)
            return BlobRange(source, start, end, blob=blob, verify=start == 0 and end == size - 1)
        except BaseException:
            source.close()
            raise

    def remove(self, hash_text: str) -> None:
        """Delete a blob no asset refers to any more (missing is fine)."""
        path = self.path_of(hash_text)
        if path is not None:
            path.unlink(missing_ok=True)
        self._forget(hash_text)

    def _sync_dir(self) -> None:
        fd = os.open(self.root, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@dataclass(frozen=True)
class _Blob:
    """The blob a :class:`BlobRange` reads: its name, recorded size and file."""

    store: BlobStore
    hash_text: str
    size: int
    key: _FileKey


class BlobRange:
    """An open blob's bytes ``start..end`` (inclusive), in chunks of at most the store's
    ``chunk`` bytes (blocking reads); the file is closed at the end or by :meth:`close`. A read of
    the whole blob (``verify``) hashes the bytes as they are read and gives its last chunk
    only if they hash to the blob's name; a file that ends early fails too. Either raises
    :class:`BlobDamagedError`, the damage remembered by the store."""

    def __init__(
        self, source: BinaryIO, start: int, end: int, *, blob: _Blob, verify: bool
    ) -> None:
        self._source = source
        source.seek(start)
        self._left = end - start + 1
        self._end = end
        self._blob = blob
        self._hasher = blake3.blake3() if verify else None

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        blob = self._blob
        chunk = self._source.read(min(blob.store.chunk, self._left)) if self._left > 0 else b""
        if not chunk:
            self.close()
            if self._left > 0:  # the file was cut while it was read
                self._damaged(BlobDamage(SHORT, blob.size, self._end + 1 - self._left))
            raise StopIteration
        self._left -= len(chunk)
        if self._hasher is not None:
            self._hasher.update(chunk)
            if self._left == 0 and HASH_PREFIX + self._hasher.hexdigest() != blob.hash_text:
                self.close()
                self._damaged(BlobDamage(CHANGED, blob.size, blob.size))
        return chunk

    def _damaged(self, damage: BlobDamage) -> None:
        blob = self._blob
        first = blob.store._found(blob.hash_text, damage, blob.key)
        raise BlobDamagedError(blob.hash_text, damage, first=first)

    def close(self) -> None:
        self._source.close()
