"""The blob store keeps each content once: a file whose bytes are stored already is hashed
and answered, not copied again."""

from __future__ import annotations

import contextlib
import io
import os
import threading
from pathlib import Path

import pytest

from conjure_actors.service import blobs
from conjure_actors.service.blobs import BlobDamagedError, BlobStore, BlobTooLargeError


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


def test_stored_as_answers_a_small_file_whose_bytes_are_stored(tmp_path: Path) -> None:
    """stored_as gives the hash and size of a small file whose blob exists, and writes nothing."""
    store = BlobStore(tmp_path / "blobs")
    (tmp_path / "a.png").write_bytes(b"\x89PNG same bytes")
    (tmp_path / "b.png").write_bytes(b"\x89PNG same bytes")
    hash_text, size, _ = store.put_file(tmp_path / "a.png")
    assert store.stored_as(tmp_path / "b.png", 1024) == (hash_text, size)
    assert len(os.listdir(tmp_path / "blobs")) == 1


def test_stored_as_is_none_for_new_bytes_or_a_file_past_the_limit(tmp_path: Path) -> None:
    """Bytes not stored yet, or more than the limit, answer None (then put_file copies them)."""
    store = BlobStore(tmp_path / "blobs")
    (tmp_path / "new").write_bytes(b"never stored")
    (tmp_path / "big").write_bytes(b"x" * 100)
    store.put_file(tmp_path / "big")
    assert store.stored_as(tmp_path / "new", 1024) is None
    assert store.stored_as(tmp_path / "big", 99) is None
    assert len(os.listdir(tmp_path / "blobs")) == 1


def test_a_new_store_folder_s_name_is_made_durable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[Path] = []
    monkeypatch.setattr(blobs, "fsync_dir", lambda folder: synced.append(Path(folder)))
    blobs.BlobStore(tmp_path / "a" / "b")
    assert synced == [tmp_path / "a", tmp_path]


def test_an_open_range_reads_its_bytes_though_the_blob_is_removed(tmp_path: Path) -> None:
    """open_checked opens the file at once: a removal after it takes the name, not the bytes
    (a download answered 200 gets every byte its Content-Length announced)."""
    store = BlobStore(tmp_path / "blobs")
    data = bytes(range(256)) * 10_000
    hash_text, _, _ = store.put_stream(io.BytesIO(data))
    chunks = store.open_checked(hash_text, len(data), 10, len(data) - 1)
    store.remove(hash_text)
    assert b"".join(chunks) == data[10:]


def test_open_checked_of_a_removed_blob_raises_at_once(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs")
    hash_text, _, _ = store.put_stream(io.BytesIO(b"bytes"))
    store.remove(hash_text)
    with pytest.raises(BlobDamagedError):
        store.open_checked(hash_text, 5, 0, 4)


def test_two_concurrent_stores_of_the_same_new_bytes_create_it_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An upload and a job's output (or two uploads) of the same new bytes, each in its
    worker thread, both find no blob: exactly one of them creates it (the AssetActor
    relies on 'created': a refused upload drops the blob it created; an output whose
    blob it created and that is gone is judged removed by hand and not kept)."""
    store = BlobStore(tmp_path)
    barrier = threading.Barrier(2, timeout=2)
    real_chmod = os.chmod

    def chmod_together(path: object, mode: int) -> None:
        # Reached only by a store that found no blob: hold both there (the window between
        # is_file() and os.replace() that two worker threads share in production).
        if threading.current_thread().name.startswith("put-"):
            with contextlib.suppress(threading.BrokenBarrierError):  # no overlap: fine
                barrier.wait()
        real_chmod(path, mode)

    monkeypatch.setattr(blobs.os, "chmod", chmod_together)
    results: list[tuple[str, int, bool]] = []

    def put() -> None:
        results.append(store.put_stream(io.BytesIO(b"the same new bytes")))

    threads = [threading.Thread(target=put, name=f"put-{i}") for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r[2] for r in results].count(True) == 1, results
