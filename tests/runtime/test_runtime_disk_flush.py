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
from conjure_actors.runtime.disk import STAGED, DiskCommitter, system_syncfs
from tests.runtime.test_runtime_disk import MODES, Fake, Recorder


class Flushes:
    """A ``syncfs`` that records each call (its descriptor, and the directory it is open
    on), and fails the calls whose numbers (1-based) are in ``fail``."""

    def __init__(self, rec: Recorder, fail: set[int] | None = None) -> None:
        self.rec = rec
        self.fail = fail or set()
        self.calls = 0
        self.fds: list[int] = []
        self.opened_on: list[str] = []

    def __call__(self, fd: int) -> None:
        self.calls += 1
        self.fds.append(fd)
        self.opened_on.append(os.path.basename(os.readlink(f"/proc/self/fd/{fd}")))
        if self.calls in self.fail:
            self.rec.add(f"syncfs {self.calls} failed")
            raise OSError(5, "Input/output error")
        self.rec.add(f"syncfs {self.calls}")


@pytest.fixture
def local_fs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every file system counts as one syncfs may flush (whatever the test's temp dir is)."""
    monkeypatch.setattr(disk_module, "_file_system_type", lambda device: "ext4")


pytestmark = pytest.mark.skipif(
    not os.path.isdir("/proc/self/fd"), reason="syncfs and these descriptors are Linux's"
)


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
    tmp_path: Path, threaded: bool, local_fs: None
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


async def test_the_names_flush_runs_on_the_descriptor_opened_before_the_renames(
    tmp_path: Path, local_fs: None
) -> None:
    """syncfs reports the write-back errors since its descriptor was opened: the one the
    data flush used (opened before any rename), not a fresh one."""
    rec = Recorder()
    flushes = Flushes(rec)
    disk = DiskCommitter(fsync_dir=rec.fsync_dir, syncfs=flushes)
    await _commit_all(disk, _items(rec, tmp_path))
    assert len(flushes.fds) == 2
    assert flushes.fds[0] == flushes.fds[1]


async def test_a_flushed_batch_fsyncs_no_directory(tmp_path: Path, local_fs: None) -> None:
    rec = Recorder()
    disk = DiskCommitter(fsync_dir=rec.fsync_dir, syncfs=Flushes(rec))
    await _commit_all(disk, _items(rec, tmp_path))
    stats = disk.statistics()
    assert (stats.batches, stats.commits, stats.dir_fsyncs, stats.syncfs) == (1, 4, 0, 2)
    assert not any(line.startswith("fsync") for line in rec.lines)


async def test_a_folder_made_for_a_file_has_its_parent_fsynced_even_when_flushed(
    tmp_path: Path, local_fs: None
) -> None:
    """A folder made before the batch (a streamed download's) may have had its write-back
    error seen by an earlier flush: its name is made durable by its parent's own fsync."""
    rec = Recorder()
    disk = DiskCommitter(fsync_dir=rec.fsync_dir, syncfs=Flushes(rec))
    (tmp_path / "new").mkdir()
    await _commit_all(disk, [Fake(rec, tmp_path / "new" / "x", made=tmp_path / "new")])
    assert [line for line in rec.lines if line.startswith("fsync")] == [f"fsync {tmp_path.name}"]


async def test_a_flushed_folder_that_is_also_a_made_folders_parent_is_fsynced(
    tmp_path: Path, local_fs: None
) -> None:
    """OUT/x goes in OUT/ (flushed); OUT/job/y in OUT/job/, made for it: OUT/ is still fsynced."""
    rec = Recorder()
    disk = DiskCommitter(fsync_dir=rec.fsync_dir, syncfs=Flushes(rec))
    (tmp_path / "job").mkdir()
    items = [Fake(rec, tmp_path / "x"), Fake(rec, tmp_path / "job" / "y", made=tmp_path / "job")]
    await _commit_all(disk, items)
    assert [line for line in rec.lines if line.startswith("fsync")] == [f"fsync {tmp_path.name}"]


async def test_a_file_whose_flushed_folder_failed_its_fsync_fails_too(
    tmp_path: Path, local_fs: None
) -> None:
    """OUT/ is x's folder (flushed) and the parent of a folder made for y (fsynced): when
    that fsync fails, x fails with y, as it did without the flush."""
    rec = Recorder()

    def fsync_dir(directory: Path) -> None:
        rec.fsync_dir(directory)
        raise OSError(5, "Input/output error")

    disk = DiskCommitter(fsync_dir=fsync_dir, syncfs=Flushes(rec))
    (tmp_path / "job").mkdir()
    items = [Fake(rec, tmp_path / "x"), Fake(rec, tmp_path / "job" / "y", made=tmp_path / "job")]
    assert await _commit_all(disk, items) == {"x": 5, "y": 5}


async def test_a_shut_down_file_system_whose_flush_says_0_is_fsynced_directory_by_directory(
    tmp_path: Path, local_fs: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ext4 before Linux 6.13 answered syncfs with 0 once a failed journal commit had shut it
    down; a fsync says EIO: the flushed directory's own fsync is asked after the flush."""
    rec = Recorder()
    disk = DiskCommitter(fsync_dir=rec.fsync_dir, syncfs=Flushes(rec))
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if os.path.isdir(os.readlink(f"/proc/self/fd/{fd}")):
            raise OSError(5, "Input/output error")
        real_fsync(fd)

    monkeypatch.setattr(disk_module.os, "fsync", fsync)
    await _commit_all(disk, _items(rec, tmp_path))
    assert sorted(line for line in rec.lines if line.startswith("fsync")) == ["fsync a", "fsync b"]


async def test_a_failed_data_flush_fsyncs_each_directory(tmp_path: Path, local_fs: None) -> None:
    """The data flush consumed the error the names flush would have reported: that file
    system's directories are fsynced one by one."""
    rec = Recorder()
    disk = DiskCommitter(fsync_dir=rec.fsync_dir, syncfs=Flushes(rec, fail={1}))
    results = await _commit_all(disk, _items(rec, tmp_path))
    assert results == {"1": "1", "2": "2"}
    assert sorted(line for line in rec.lines if line.startswith("fsync")) == ["fsync a", "fsync b"]
    assert disk.statistics().syncfs == 1  # no names flush on it


async def test_a_failed_names_flush_fsyncs_each_directory_once(
    tmp_path: Path, local_fs: None
) -> None:
    rec = Recorder()
    disk = DiskCommitter(fsync_dir=rec.fsync_dir, syncfs=Flushes(rec, fail={2}))
    results = await _commit_all(disk, _items(rec, tmp_path))
    assert results == {"1": "1", "2": "2"}
    assert sorted(line for line in rec.lines if line.startswith("fsync")) == ["fsync a", "fsync b"]
    assert rec.lines.index("syncfs 2 failed") < rec.lines.index("fsync a")


async def test_after_a_failed_names_flush_a_directory_fsync_error_is_its_callers_own(
    tmp_path: Path, local_fs: None
) -> None:
    rec = Recorder()

    def fsync_dir(directory: Path) -> None:
        rec.fsync_dir(directory)
        if directory.name == "b":
            raise OSError(5, "Input/output error")

    disk = DiskCommitter(fsync_dir=fsync_dir, syncfs=Flushes(rec, fail={2}))
    results: dict[str, object] = {}

    async def one(item: Fake) -> None:
        try:
            await disk.commit(item)
            results[f"{item.path.parent.name}/{item.path.name}"] = "ok"
        except OSError as exc:
            results[f"{item.path.parent.name}/{item.path.name}"] = exc.errno

    async with trio.open_nursery() as nursery:
        for item in _items(rec, tmp_path):
            nursery.start_soon(one, item)
    assert results == {"a/1": "ok", "a/2": "ok", "b/1": 5, "b/2": 5}


async def test_a_file_failing_to_stage_is_left_out_of_the_flushes(
    tmp_path: Path, local_fs: None
) -> None:
    rec = Recorder()
    flushes = Flushes(rec)
    disk = DiskCommitter(fsync_dir=rec.fsync_dir, syncfs=flushes)
    for folder in ("full", "fine"):
        (tmp_path / folder).mkdir()
    failing = Fake(rec, tmp_path / "full" / "x", fail=True)
    results = await _commit_all(disk, [failing, Fake(rec, tmp_path / "fine" / "y")])
    assert results == {"x": 28, "y": "y"}
    assert flushes.opened_on == ["fine", "fine"]


async def test_a_file_system_outside_the_list_is_fsynced_directory_by_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FUSE's syncfs may do nothing, a network file system's may not reach the server."""
    monkeypatch.setattr(disk_module, "_file_system_type", lambda device: "fuse.sshfs")
    rec = Recorder()
    disk = DiskCommitter(fsync_dir=rec.fsync_dir, syncfs=Flushes(rec))
    await _commit_all(disk, _items(rec, tmp_path))
    assert (disk.statistics().syncfs, disk.statistics().dir_fsyncs) == (0, 2)


async def test_a_batch_over_staged_files_flushes_each_chunks_data(
    tmp_path: Path, local_fs: None
) -> None:
    rec = Recorder()
    disk = DiskCommitter(fsync_dir=rec.fsync_dir, syncfs=Flushes(rec))
    (tmp_path / "a").mkdir()
    items = [Fake(rec, tmp_path / "a" / str(i)) for i in range(STAGED + 1)]
    results = await _commit_all(disk, items)
    assert len(results) == STAGED + 1
    assert (disk.statistics().batches, disk.statistics().syncfs) == (1, 3)


async def test_each_chunk_flushes_the_file_systems_it_staged_on_only(
    tmp_path: Path, local_fs: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """a/ and b/ on two (pretend) file systems: the first chunk stages on both, the second
    (one file) on one: 2 + 1 data flushes, then 2 names flushes."""
    devices = {"a": 1, "b": 2}
    monkeypatch.setattr(
        disk_module._Flush, "_device", lambda self, directory: devices[Path(directory).name]
    )
    rec = Recorder()
    flushes = Flushes(rec)
    disk = DiskCommitter(fsync_dir=rec.fsync_dir, syncfs=flushes)
    for folder in devices:
        (tmp_path / folder).mkdir()
    items = [Fake(rec, tmp_path / "a" / str(i)) for i in range(STAGED - 1)]
    items += [Fake(rec, tmp_path / "b" / "0"), Fake(rec, tmp_path / "b" / "1")]
    await _commit_all(disk, items)
    # Whichever file is left for the second chunk, the first staged on both.
    assert sorted(flushes.opened_on[:2]) == ["a", "b"]
    assert len(flushes.opened_on) == 5
    assert sorted(flushes.opened_on[3:]) == ["a", "b"]


async def test_a_batch_leaves_no_descriptor_open(tmp_path: Path, local_fs: None) -> None:
    rec = Recorder()
    disk = DiskCommitter(fsync_dir=rec.fsync_dir, syncfs=Flushes(rec, fail={2}))
    before = len(os.listdir("/proc/self/fd"))
    await _commit_all(disk, _items(rec, tmp_path))
    assert len(os.listdir("/proc/self/fd")) == before


class NoPath:
    """A commit that breaks the protocol (no ``path``)."""

    def stage(self) -> None:
        pass

    def put_in_place(self) -> None:
        pass

    def make_durable(self, fsync_dir: object) -> str:
        return "never"


async def test_a_batch_that_raises_answers_its_callers_with_the_error(
    tmp_path: Path, local_fs: None
) -> None:
    """A defect inside the batch reaches its callers; the committer does not hang the run."""
    disk = DiskCommitter(syncfs=Flushes(Recorder()))
    with trio.fail_after(10), pytest.raises(AttributeError, match="path"):
        await disk.commit(NoPath())  # type: ignore[arg-type]
    rec = Recorder()
    (tmp_path / "a").mkdir()
    assert await disk.commit(Fake(rec, tmp_path / "a" / "after")) == "after"


async def test_the_systems_flush_commits_a_real_file(tmp_path: Path) -> None:
    """The default committer on this machine (``syncfs`` where Linux reports its errors)."""
    disk = DiskCommitter()
    sink = FileSink(tmp_path / "job" / "x.png", max_bytes=MEMORY_BYTES, what="x")
    sink.write(b"\x89PNG small")
    await disk.commit(sink)
    await disk.aclose()
    assert (tmp_path / "job" / "x.png").read_bytes() == b"\x89PNG small"
    # The file's folder by the flush where there is one; the folder made, by its parent's fsync.
    device = os.stat(tmp_path).st_dev
    flushed = system_syncfs() is not None and disk_module._file_system_type(device) in {
        "ext4",
        "xfs",
        "btrfs",
    }
    assert (disk.statistics().syncfs, disk.statistics().dir_fsyncs) == (
        (2, 1) if flushed else (0, 2)
    )


Uname = namedtuple("Uname", "sysname nodename release version machine")


@pytest.mark.parametrize(
    ("release", "found"),
    [
        ("4.19.0", False),
        ("5.10.0-23-amd64", False),
        ("5.16.20", False),
        ("5.17.0", True),
        ("6.18.44-fc-v1272", True),
    ],
)
def test_syncfs_is_used_only_where_it_reports_write_back_errors(
    monkeypatch: pytest.MonkeyPatch, release: str, found: bool
) -> None:
    """Before Linux 5.17, syncfs could return 0 when a file system's journal commit failed
    (and before 5.8 when write-back failed)."""
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
