"""DiskCommitter with a file-system flush (``syncfs``): one flush for the batch's data before
the files' own fsyncs, one for their names instead of a fsync per directory, and the
directory fsyncs back whenever a flush fails."""

from __future__ import annotations

import os
from collections import namedtuple
from pathlib import Path

import pytest
import trio

from conjure_actors.clients.download import MEMORY_BYTES, FileSink
from conjure_actors.runtime import disk as disk_module
from conjure_actors.runtime.disk import DiskCommitter, system_syncfs
from tests.runtime.test_runtime_disk import MODES, Fake, Recorder


class Flushes:
    """A ``syncfs`` that records each call (and the directory its descriptor is open on),
    and fails the calls whose numbers (1-based) are in ``fail``."""

    def __init__(self, rec: Recorder, fail: set[int] | None = None) -> None:
        self.rec = rec
        self.fail = fail or set()
        self.calls = 0

    def __call__(self, fd: int) -> None:
        self.calls += 1
        os.fstat(fd)  # an open descriptor
        if self.calls in self.fail:
            self.rec.add(f"syncfs {self.calls} failed")
            raise OSError(5, "Input/output error")
        self.rec.add(f"syncfs {self.calls}")


async def _commit_all(disk: DiskCommitter, items: list[Fake]) -> dict[str, object]:
    results: dict[str, object] = {}

    async def one(item: Fake) -> None:
        try:
            results[item.path.name] = await disk.commit(item)
        except OSError as exc:
            results[item.path.name] = exc.errno

    async with trio.open_nursery() as nursery:
        for item in items:
            nursery.start_soon(one, item)
    await disk.aclose()
    return results


def _items(rec: Recorder, tmp_path: Path) -> list[Fake]:
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir(exist_ok=True)
    return [Fake(rec, tmp_path / folder / name) for folder in "ab" for name in ("1", "2")]


@pytest.mark.parametrize("threaded", MODES)
async def test_a_batch_flushes_its_data_before_the_renames_and_its_names_after(
    tmp_path: Path, threaded: bool
) -> None:
    rec = Recorder()
    disk = DiskCommitter(fsync_dir=rec.fsync_dir, syncfs=Flushes(rec), threaded=threaded)
    results = await _commit_all(disk, _items(rec, tmp_path))
    assert results == {"1": "1", "2": "2"}  # names repeat across a/ and b/
    assert [line for line in rec.lines if not line.startswith(("staged", "placed"))] == [
        "syncfs 1",
        "syncfs 2",
    ]
    first_placed = min(i for i, line in enumerate(rec.lines) if line.startswith("placed"))
    last_staged = max(i for i, line in enumerate(rec.lines) if line.startswith("staged"))
    last_placed = max(i for i, line in enumerate(rec.lines) if line.startswith("placed"))
    assert last_staged < rec.lines.index("syncfs 1") < first_placed
    assert last_placed < rec.lines.index("syncfs 2")


async def test_a_flushed_batch_fsyncs_no_directory(tmp_path: Path) -> None:
    rec = Recorder()
    disk = DiskCommitter(fsync_dir=rec.fsync_dir, syncfs=Flushes(rec))
    await _commit_all(disk, _items(rec, tmp_path))
    stats = disk.statistics()
    assert (stats.batches, stats.commits, stats.dir_fsyncs, stats.syncfs) == (1, 4, 0, 2)
    assert not any(line.startswith("fsync") for line in rec.lines)


async def test_a_failed_data_flush_changes_nothing(tmp_path: Path) -> None:
    """The first flush is a hint: each file's own fsync reports that file's errors."""
    rec = Recorder()
    disk = DiskCommitter(fsync_dir=rec.fsync_dir, syncfs=Flushes(rec, fail={1}))
    results = await _commit_all(disk, _items(rec, tmp_path))
    assert results == {"1": "1", "2": "2"}
    assert disk.statistics().dir_fsyncs == 0


async def test_a_failed_names_flush_fsyncs_each_directory_once(tmp_path: Path) -> None:
    rec = Recorder()
    disk = DiskCommitter(fsync_dir=rec.fsync_dir, syncfs=Flushes(rec, fail={2}))
    results = await _commit_all(disk, _items(rec, tmp_path))
    assert results == {"1": "1", "2": "2"}
    assert sorted(line for line in rec.lines if line.startswith("fsync")) == ["fsync a", "fsync b"]
    assert rec.lines.index("syncfs 2 failed") < rec.lines.index("fsync a")


async def test_after_a_failed_names_flush_a_directory_fsync_error_is_its_callers_own(
    tmp_path: Path,
) -> None:
    rec = Recorder()

    def fsync_dir(directory: Path) -> None:
        rec.fsync_dir(directory)
        if directory.name == "b":
            raise OSError(5, "Input/output error")

    disk = DiskCommitter(fsync_dir=fsync_dir, syncfs=Flushes(rec, fail={2}))
    items = _items(rec, tmp_path)
    results: dict[str, object] = {}

    async def one(item: Fake) -> None:
        try:
            await disk.commit(item)
            results[f"{item.path.parent.name}/{item.path.name}"] = "ok"
        except OSError as exc:
            results[f"{item.path.parent.name}/{item.path.name}"] = exc.errno

    async with trio.open_nursery() as nursery:
        for item in items:
            nursery.start_soon(one, item)
    assert results == {"a/1": "ok", "a/2": "ok", "b/1": 5, "b/2": 5}


async def test_a_file_failing_to_stage_is_left_out_of_the_flushes(tmp_path: Path) -> None:
    rec = Recorder()
    disk = DiskCommitter(fsync_dir=rec.fsync_dir, syncfs=Flushes(rec))
    (tmp_path / "a").mkdir()
    items = [Fake(rec, tmp_path / "a" / "ok"), Fake(rec, tmp_path / "a" / "full", fail=True)]
    results = await _commit_all(disk, items)
    assert results == {"ok": "ok", "full": 28}
    assert disk.statistics().syncfs == 2


async def test_the_systems_flush_commits_a_real_file(tmp_path: Path) -> None:
    """The default committer on this machine (``syncfs`` where Linux reports its errors)."""
    disk = DiskCommitter()
    sink = FileSink(tmp_path / "job" / "x.png", max_bytes=MEMORY_BYTES, what="x")
    sink.write(b"\x89PNG small")
    await disk.commit(sink)
    await disk.aclose()
    assert (tmp_path / "job" / "x.png").read_bytes() == b"\x89PNG small"
    flushed = system_syncfs() is not None
    assert (disk.statistics().syncfs, disk.statistics().dir_fsyncs) == (
        (2, 0) if flushed else (0, 2)
    )


Uname = namedtuple("Uname", "sysname nodename release version machine")


@pytest.mark.parametrize(
    ("release", "found"),
    [("5.7.19-generic", False), ("4.19.0", False), ("5.8.0", True), ("6.18.44-fc-v1272", True)],
)
def test_syncfs_is_used_only_where_it_reports_write_back_errors(
    monkeypatch: pytest.MonkeyPatch, release: str, found: bool
) -> None:
    """Before Linux 5.8, syncfs returned 0 even when write-back failed."""
    if os.uname().sysname != "Linux":
        pytest.skip("syncfs is Linux's")
    monkeypatch.setattr(disk_module.os, "uname", lambda: Uname("Linux", "h", release, "", ""))
    assert (system_syncfs() is not None) is found


def test_syncfs_raises_the_errno_of_a_bad_descriptor() -> None:
    syncfs = system_syncfs()
    if syncfs is None:
        pytest.skip("no syncfs here")
    with pytest.raises(OSError, match="Bad file descriptor"):
        syncfs(-1)
