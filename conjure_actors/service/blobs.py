"""The blob store: content-addressed bytes on disk, named by their blake3 hash.

A blob is written to a temporary file in the store's directory, flushed and fsynced, then
renamed to its hash (and the directory fsynced), so a blob that exists under its name is
complete: the event that records an asset is logged only after :meth:`BlobStore.put`
returned. Assets are records over blobs (:mod:`conjure_actors.domain.service_events`);
several assets may share one blob.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Final

import blake3

from conjure_actors.clients.download import fsync_dir

HASH_PREFIX: Final = "blake3:"
_HEX = re.compile(r"[0-9a-f]{64}")
CHUNK: Final = 1 << 20


class BlobTooLargeError(Exception):
    """The bytes exceed the store's limit for one blob."""


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

    def __init__(self, root: str | os.PathLike[str], *, max_bytes: int | None = None) -> None:
        self.root = Path(root)
        self.max_bytes = max_bytes
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

    def put_stream(self, source: BinaryIO) -> tuple[str, int, bool]:
        """Copy ``source`` into the store; returns ``(blake3:<hex>, size, created_new)``.

        Blocking (file I/O): run it in a worker thread. Raises :class:`BlobTooLargeError`
        past ``max_bytes`` (nothing is kept)."""
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
            if target.is_file():
                os.unlink(tmp)
                return hash_text, size, False
            os.chmod(tmp, 0o600)
            try:
                # link, not replace: of two stores of the same new bytes at once, exactly
                # one creates the blob (the AssetActor and uploads rely on 'created').
                os.link(tmp, target)
            except FileExistsError:  # stored meanwhile by another: its name made durable
                self._sync_dir()
                return hash_text, size, False
            finally:
                os.unlink(tmp)
            self._sync_dir()
            return hash_text, size, True
        except BaseException:
            if os.path.exists(tmp):
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
        return (hash_text, len(data)) if self.has(hash_text) else None

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
            if (self.max_bytes is None or size <= self.max_bytes) and self.has(hash_text):
                return hash_text, size, False
            source.seek(0)
            return self.put_stream(source)

    def open_range(self, hash_text: str, start: int, end: int) -> BlobRange:
        """The bytes ``start..end`` (inclusive) of a blob, in chunks, from a file opened
        now: ``FileNotFoundError`` here when the blob is gone, and once open the bytes stay
        readable though the blob is removed meanwhile (removal unlinks the name). Close it
        if it is not read to its end."""
        path = self.path_of(hash_text)
        if path is None:
            raise FileNotFoundError(hash_text)
        return BlobRange(open(path, "rb"), start, end)  # BlobRange closes it

    def remove(self, hash_text: str) -> None:
        """Delete a blob no asset refers to any more (missing is fine)."""
        path = self.path_of(hash_text)
        if path is not None:
            path.unlink(missing_ok=True)

    def _sync_dir(self) -> None:
        fd = os.open(self.root, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class BlobRange:
    """An open blob's bytes ``start..end`` (inclusive), in chunks (blocking reads); the file
    is closed at the end or by :meth:`close`."""

    def __init__(self, source: BinaryIO, start: int, end: int) -> None:
        self._source = source
        source.seek(start)
        self._left = end - start + 1

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        chunk = self._source.read(min(CHUNK, self._left)) if self._left > 0 else b""
        if not chunk:
            self.close()
            raise StopIteration
        self._left -= len(chunk)
        return chunk

    def close(self) -> None:
        self._source.close()
