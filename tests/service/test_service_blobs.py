"""The blob store keeps each content once: a file whose bytes are stored already is hashed
and answered, not copied again."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conjure_actors.service.blobs import BlobStore, BlobTooLargeError


def test_put_file_of_known_bytes_writes_nothing(tmp_path: Path) -> None:
    """The second put_file of the same bytes answers created_new False and leaves the stored
    blob untouched (same inode, nothing else in the store)."""
    store = BlobStore(tmp_path / "blobs")
    for name in ("a.png", "b.png"):
        (tmp_path / name).write_bytes(b"\x89PNG same bytes")
    first = store.put_file(tmp_path / "a.png")
    stored = store.path_of(first[0])
    assert stored is not None
    inode = os.stat(stored).st_ino
    second = store.put_file(tmp_path / "b.png")
    assert first[2] is True
    assert second == (first[0], first[1], False)
    assert os.stat(stored).st_ino == inode
    assert os.listdir(tmp_path / "blobs") == [stored.name]


def test_put_file_over_the_cap_is_refused_even_if_known(tmp_path: Path) -> None:
    """A file past max_bytes is refused whether or not its bytes are stored."""
    (tmp_path / "big").write_bytes(b"x" * 100)
    BlobStore(tmp_path / "blobs").put_file(tmp_path / "big")
    with pytest.raises(BlobTooLargeError):
        BlobStore(tmp_path / "blobs", max_bytes=10).put_file(tmp_path / "big")
