"""A blob store whose folder refuses writes (read-only, not the server's to write, full):
the store says so once and remembers it until a write succeeds (QA's H13: every upload was
500 ``upstream_error`` "internal error", one stderr line per request, health "ok")."""

from __future__ import annotations

import errno
import io
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest

from conjure_actors.service import blobs
from conjure_actors.service.blobs import BlobStore, StoreRefusal, StoreRefusedError


def refuse_writes(monkeypatch: pytest.MonkeyPatch, root: Path, code: int) -> None:
    """New files in ``root`` fail with ``code`` (as chattr +i, a read-only mount or another
    owner's folder would make them: the tests run as root, whom chmod does not stop)."""
    real = tempfile.mkstemp

    def mkstemp(*args: Any, dir: Any = None, **kwargs: Any) -> Any:
        if dir is not None and Path(dir) == root:
            raise OSError(code, os.strerror(code), str(Path(dir) / ".incoming-x"))
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(blobs.tempfile, "mkstemp", mkstemp)


@pytest.mark.parametrize("code", [errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC])
def test_a_refused_write_raises_store_refused_and_is_remembered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    """put_stream raises StoreRefusedError (an OSError: callers that catch OSError still
    do) carrying the refusal; refusal() tells it until a write succeeds."""
    store = BlobStore(tmp_path / "blobs")
    refuse_writes(monkeypatch, store.root, code)
    with pytest.raises(StoreRefusedError) as raised:
        store.put_stream(io.BytesIO(b"bytes"))
    assert raised.value.refusal == StoreRefusal(code)
    assert isinstance(raised.value, OSError)
    assert store.refusal() == StoreRefusal(code)
    monkeypatch.undo()
    store.put_stream(io.BytesIO(b"bytes"))
    assert store.refusal() is None


def test_a_write_refused_half_way_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk fills during the write (the fsync fails): no temporary file stays."""

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    store = BlobStore(tmp_path / "blobs")
    monkeypatch.setattr(blobs.os, "fsync", full)
    with pytest.raises(StoreRefusedError):
        store.put_stream(io.BytesIO(b"x" * 5000))
    assert list(store.root.iterdir()) == []
    refusal = store.refusal()
    assert refusal is not None
    assert refusal.disk_full


def test_another_error_is_not_a_refusal(tmp_path: Path) -> None:
    """A read of the source that fails (EIO) is raised as it is, nothing remembered."""

    class Broken(io.RawIOBase):
        def readinto(self, buffer: Any) -> int:
            raise OSError(errno.EIO, os.strerror(errno.EIO))

    store = BlobStore(tmp_path / "blobs")
    with pytest.raises(OSError, match="Input/output error") as raised:
        store.put_stream(Broken())  # type: ignore[arg-type]
    assert not isinstance(raised.value, StoreRefusedError)
    assert store.refusal() is None


def test_the_refusal_is_logged_once_and_its_end_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Three refused writes: one ERROR line naming the folder, the cause and the fix; the
    first write that succeeds after them: one line saying so."""
    store = BlobStore(tmp_path / "blobs")
    refuse_writes(monkeypatch, store.root, errno.EROFS)
    for _ in range(3):
        with pytest.raises(StoreRefusedError):
            store.put_stream(io.BytesIO(b"bytes"))
    monkeypatch.undo()
    store.put_stream(io.BytesIO(b"bytes"))
    store.put_stream(io.BytesIO(b"more"))
    lines = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert len(lines) == 2, lines
    level, line = lines[0]
    assert level == logging.ERROR
    assert str(store.root) in line
    assert "Read-only file system" in line
    assert "uploads and job outputs fail" in line
    assert "takes writes again" in lines[1][1]


def test_probe_write_sees_the_folder_recover(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """probe_write answers the refusal while there is one and None once writes succeed,
    leaving no file behind either way."""
    store = BlobStore(tmp_path / "blobs")
    refuse_writes(monkeypatch, store.root, errno.EACCES)
    assert store.probe_write() == StoreRefusal(errno.EACCES)
    assert store.refusal() == StoreRefusal(errno.EACCES)
    monkeypatch.undo()
    assert store.probe_write() is None
    assert store.refusal() is None
    assert list(store.root.iterdir()) == []


def test_known_bytes_are_answered_though_the_folder_refuses_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An upload of bytes stored already needs no write: put_stream of a seekable source
    answers the stored blob (created_new False) while the folder refuses writes; new bytes
    are still refused."""
    store = BlobStore(tmp_path / "blobs")
    hash_text, size, _ = store.put_stream(io.BytesIO(b"known bytes"))
    refuse_writes(monkeypatch, store.root, errno.EROFS)
    assert store.put_stream(io.BytesIO(b"known bytes")) == (hash_text, size, False)
    with pytest.raises(StoreRefusedError):
        store.put_stream(io.BytesIO(b"new bytes"))


@pytest.mark.parametrize("how", ["removed", "replaced by a file"])
def test_a_store_whose_folder_went_refuses_writes(tmp_path: Path, how: str) -> None:
    """The store's folder removed (or a file in its place): a refusal, remembered, with what
    to do, as a read-only one (QA7 F4: health read ok, uploads got 500 and every output
    failed at once, blamed on its own file)."""
    store = BlobStore(tmp_path / "blobs")
    store.root.rmdir()
    if how == "replaced by a file":
        store.root.write_bytes(b"not a folder")
    with pytest.raises(StoreRefusedError):
        store.put_stream(io.BytesIO(b"bytes"))
    refusal = store.refusal()
    assert refusal is not None
    assert "put the folder back" in refusal.remedy()
    assert store.probe_write() is not None


def test_a_missing_output_file_is_not_a_refusal(tmp_path: Path) -> None:
    """The store's folder is there: an output file that went is that file's problem."""
    store = BlobStore(tmp_path / "blobs")
    with pytest.raises(FileNotFoundError):
        store.put_file(tmp_path / "no-such-output.png")
    assert store.refusal() is None
