"""DiskCommitter: group commit of durable file writes (batches, shared directory fsyncs,
per-file errors, cancellation, answers only after the fsyncs), in both of its modes."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import pytest
import trio
import trio.testing

from conjure_actors.runtime.disk import DiskCommitter, FsyncDir, disk_committer
from conjure_actors.runtime.threads import GIL_SWITCH_SECONDS

MODES = [pytest.param(True, id="thread"), pytest.param(False, id="task")]


class Recorder:
    """What happened, in order, across the worker thread and the trio thread."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._lock = threading.Lock()

    def add(self, line: str) -> None:
        with self._lock:
            self.lines.append(line)

    def fsync_dir(self, directory: Path) -> None:
        self.add(f"fsync {directory.name}")


class Fake:
    """A file commit that writes a real file (temp + rename) and records its steps."""

    def __init__(
        self,
        rec: Recorder,
        path: Path,
        *,
        fail: bool = False,
        gate: threading.Event | None = None,
        made: Path | None = None,
    ) -> None:
        self.started = threading.Event()
        self.rec = rec
        self.path = path
        self.fail = fail
        self.gate = gate
        self.made = made

    def stage(self) -> None:
        self.started.set()
        if self.gate is not None:
            self.gate.wait(10)
        if self.fail:
            self.rec.add(f"failed {self.path.name}")
            raise OSError(28, "No space left on device")
        self.path.with_name(f".{self.path.name}.part").write_bytes(b"x")
        self.rec.add(f"staged {self.path.name}")

    def put_in_place(self) -> None:
        os.replace(self.path.with_name(f".{self.path.name}.part"), self.path)
        self.rec.add(f"placed {self.path.name}")

    def make_durable(self, fsync_dir: FsyncDir) -> str:
        fsync_dir(self.path.parent)
        if self.made is not None:
            fsync_dir(self.made.parent)
        return self.path.name


@pytest.mark.parametrize("threaded", MODES)
async def test_commits_queued_together_run_as_one_batch_with_one_fsync_per_directory(
    tmp_path: Path, threaded: bool
) -> None:
    """Files queued in one pass share one batch; a directory is fsynced once per batch."""
    rec = Recorder()
    disk = DiskCommitter(fsync_dir=rec.fsync_dir, syncfs=None, threaded=threaded)
    (tmp_path / "a").mkdir(exist_ok=True)
    (tmp_path / "b").mkdir(exist_ok=True)
    gate = threading.Event()
    answers: list[str] = []

    async def one(item: Fake, out: list[str] = answers) -> None:
        out.append(await disk.commit(item))

    first = Fake(rec, tmp_path / "a" / "first", gate=gate)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(one, first)  # holds the worker until the gate opens
            await trio.to_thread.run_sync(first.started.wait)
            await trio.testing.wait_all_tasks_blocked()  # its batch closed (taken at idle)
            for name in ("a/1", "a/2", "b/3", "a/4"):
                nursery.start_soon(one, Fake(rec, tmp_path / name))
            await trio.testing.wait_all_tasks_blocked()
            gate.set()
    assert sorted(answers) == ["1", "2", "3", "4", "first"]
    stats = disk.statistics()
    assert (stats.commits, stats.batches, stats.largest) == (5, 2, 4)
    # the batch: every file staged, then each fsynced and renamed, then each directory
    # fsynced once
    assert sorted(rec.lines[-10:-6]) == ["staged 1", "staged 2", "staged 3", "staged 4"]
    assert sorted(rec.lines[-6:-2]) == ["placed 1", "placed 2", "placed 3", "placed 4"]
    assert sorted(rec.lines[-2:]) == ["fsync a", "fsync b"]
    await disk.aclose()


@pytest.mark.parametrize("threaded", MODES)
async def test_a_caller_is_answered_only_after_its_file_and_directories_are_fsynced(
    tmp_path: Path, threaded: bool
) -> None:
    """The answer comes after the rename, the directory fsync and the made folder's parent."""
    rec = Recorder()
    disk = DiskCommitter(fsync_dir=rec.fsync_dir, syncfs=None, threaded=threaded)
    (tmp_path / "new").mkdir()
    with trio.fail_after(10):
        name = await disk.commit(Fake(rec, tmp_path / "new" / "x", made=tmp_path / "new"))
    rec.add(f"answered {name}")
    assert rec.lines == [
        "staged x",
        "placed x",
        "fsync new",
        f"fsync {tmp_path.name}",
        "answered x",
    ]
    await disk.aclose()


@pytest.mark.parametrize("threaded", MODES)
async def test_one_file_failing_fails_its_caller_only(tmp_path: Path, threaded: bool) -> None:
    """A put_in_place error reaches its own caller, as raised; the batch's others succeed."""
    rec = Recorder()
    disk = DiskCommitter(fsync_dir=rec.fsync_dir, syncfs=None, threaded=threaded)
    results: dict[str, object] = {}

    async def one(name: str, fail: bool) -> None:
        try:
            results[name] = await disk.commit(Fake(rec, tmp_path / name, fail=fail))
        except OSError as exc:
            results[name] = exc

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            for name, fail in (("ok1", False), ("bad", True), ("ok2", False)):
                nursery.start_soon(one, name, fail)
    assert results["ok1"] == "ok1"
    assert results["ok2"] == "ok2"
    bad = results["bad"]
    assert isinstance(bad, OSError)
    assert bad.strerror == "No space left on device"
    await disk.aclose()


@pytest.mark.parametrize("threaded", MODES)
async def test_a_directory_fsync_failing_fails_each_of_its_files_with_its_own_error(
    tmp_path: Path, threaded: bool
) -> None:
    """A directory whose fsync fails is tried once; every file in it fails, each caller with
    an exception of its own; files elsewhere succeed."""
    rec = Recorder()

    def fsync_dir(directory: Path) -> None:
        rec.fsync_dir(directory)
        if directory.name == "broken":
            raise OSError(5, "Input/output error", str(directory))

    disk = DiskCommitter(fsync_dir=fsync_dir, syncfs=None, threaded=threaded)
    (tmp_path / "broken").mkdir()
    (tmp_path / "fine").mkdir()
    results: dict[str, object] = {}

    async def one(name: str) -> None:
        try:
            results[name] = await disk.commit(Fake(rec, tmp_path / name))
        except OSError as exc:
            results[name] = exc

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            for name in ("broken/1", "fine/2", "broken/3"):
                nursery.start_soon(one, name)
    assert results["fine/2"] == "2"
    one_error, other = results["broken/1"], results["broken/3"]
    assert isinstance(one_error, OSError)
    assert isinstance(other, OSError)
    assert one_error is not other
    assert one_error.errno == other.errno == 5
    assert rec.lines.count("fsync broken") == 1
    await disk.aclose()


@pytest.mark.parametrize("threaded", MODES)
async def test_a_commit_cancelled_while_queued_is_withdrawn_and_never_written(
    tmp_path: Path, threaded: bool
) -> None:
    """Cancelled while queued: its file is never touched (no temp file, no final file)."""
    rec = Recorder()
    disk = DiskCommitter(fsync_dir=rec.fsync_dir, syncfs=None, threaded=threaded)
    gate = threading.Event()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            first = Fake(rec, tmp_path / "first", gate=gate)
            nursery.start_soon(disk.commit, first)
            await trio.to_thread.run_sync(first.started.wait)  # the worker is busy with it
            # ... and its batch closed (at idle): a commit made while a batch is open is
            # handed to the worker at once, and cannot be withdrawn (runtime/disk.py).
            await trio.testing.wait_all_tasks_blocked()
            scope = trio.CancelScope()

            async def queued() -> None:
                with scope:
                    await disk.commit(Fake(rec, tmp_path / "queued"))

            nursery.start_soon(queued)
            await trio.testing.wait_all_tasks_blocked()
            scope.cancel()
            await trio.testing.wait_all_tasks_blocked()
            gate.set()
    assert scope.cancelled_caught
    assert sorted(os.listdir(tmp_path)) == ["first"]
    assert disk.statistics().withdrawn == 1
    await disk.aclose()


async def test_a_commit_cancelled_while_running_waits_for_it_then_is_cancelled(
    tmp_path: Path,
) -> None:
    """Cancelled while its batch runs: the cancel waits for the commit (the file complete,
    no temp file) and fires at the next checkpoint."""
    rec = Recorder()
    disk = DiskCommitter(fsync_dir=rec.fsync_dir, syncfs=None, threaded=True)
    gate = threading.Event()
    reached: list[str] = []
    item = Fake(rec, tmp_path / "x", gate=gate)
    scope = trio.CancelScope()

    async def commit() -> None:
        with scope:
            reached.append(await disk.commit(item))
            await trio.lowlevel.checkpoint()
            reached.append("after checkpoint")

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(commit)
            await trio.to_thread.run_sync(item.started.wait)  # its batch runs
            scope.cancel()
            await trio.testing.wait_all_tasks_blocked()
            gate.set()
    assert scope.cancelled_caught
    assert reached == ["x"]
    assert os.listdir(tmp_path) == ["x"]


@pytest.mark.parametrize("threaded", MODES)
async def test_aclose_waits_for_queued_commits_then_refuses_new_ones(
    tmp_path: Path, threaded: bool
) -> None:
    """aclose answers every commit queued before it, then commit raises ClosedResourceError."""
    rec = Recorder()
    disk = DiskCommitter(fsync_dir=rec.fsync_dir, syncfs=None, threaded=threaded)
    gate = threading.Event()
    answers: list[str] = []

    async def one(name: str) -> None:
        answers.append(await disk.commit(Fake(rec, tmp_path / name, gate=gate)))

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(one, "a")
            nursery.start_soon(one, "b")
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(disk.aclose)
            await trio.testing.wait_all_tasks_blocked()
            gate.set()
    assert sorted(answers) == ["a", "b"]
    with pytest.raises(trio.ClosedResourceError):
        await disk.commit(Fake(rec, tmp_path / "late"))


async def test_the_run_shares_one_committer() -> None:
    """disk_committer() is one object per trio run."""
    assert disk_committer() is disk_committer()


async def test_under_the_mock_clock_a_batch_goes_through_to_thread_run_sync(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under MockClock the committer runs each batch through trio.to_thread.run_sync (what
    the tests run inline and the harness waits for): one call for a batch of files."""
    calls: list[int] = []
    real = trio.to_thread.run_sync

    async def counted(fn, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(len(args[0]))
        return await real(fn, *args, **kwargs)

    monkeypatch.setattr(trio.to_thread, "run_sync", counted)
    rec = Recorder()
    disk = DiskCommitter(fsync_dir=rec.fsync_dir, syncfs=None)
    # (no deadline: autojump would leap to it while the real thread works)
    async with trio.open_nursery() as nursery:
        for name in ("1", "2", "3"):
            nursery.start_soon(disk.commit, Fake(rec, tmp_path / name))
    assert calls == [3]
    await disk.aclose()


async def test_under_the_mock_clock_commits_made_before_the_loop_is_idle_share_a_batch(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under MockClock the batch is taken once the loop is idle: commits reached after a
    different number of scheduler passes (no mock time passing) still share one batch, and
    mock time does not move while they wait (the thread call run inline, as tests do)."""

    async def inline(fn, *args, **_):  # type: ignore[no-untyped-def]
        await trio.lowlevel.checkpoint()
        return fn(*args)

    monkeypatch.setattr(trio.to_thread, "run_sync", inline)
    rec = Recorder()
    disk = DiskCommitter(fsync_dir=rec.fsync_dir, syncfs=None)
    start = trio.current_time()

    async def one(name: str, passes: int) -> None:
        for _ in range(passes):
            await trio.lowlevel.checkpoint()
        await disk.commit(Fake(rec, tmp_path / name))

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            for passes, name in enumerate(("a", "b", "c", "d")):
                nursery.start_soon(one, name, passes * 3)
    assert (disk.statistics().batches, disk.statistics().commits) == (1, 4)
    assert trio.current_time() == start
    await disk.aclose()


async def test_a_file_is_made_durable_while_the_loop_runs_and_answered_once_it_is_idle(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file is written, fsynced, renamed and its folder fsynced as soon as the committer
    takes it, while the other tasks still run (issue 16: ten jobs' outputs waited for the
    loop to be idle, and the loop then sat idle through their whole disk work); its caller is
    answered once the loop is idle, with the others of its batch. Here a task of the loop
    blocks the loop until the worker made the file durable (10 s at most: before, the file
    was staged only once the loop was idle, so never while it blocked)."""

    async def inline(fn, *args, **_):  # type: ignore[no-untyped-def]
        await trio.lowlevel.checkpoint()
        return fn(*args)

    monkeypatch.setattr(trio.to_thread, "run_sync", inline)
    rec = Recorder()
    durable = threading.Event()

    def fsync_dir(directory: Path) -> None:
        rec.fsync_dir(directory)
        durable.set()

    disk = DiskCommitter(fsync_dir=fsync_dir, syncfs=None)

    async def busy() -> None:
        for _ in range(20):
            await trio.lowlevel.checkpoint()
        # deliberate: the loop blocked (no task steps) until the worker thread is done
        rec.add("busy done" if durable.wait(10) else "busy done, the file not durable")

    async def commit() -> None:
        await disk.commit(Fake(rec, tmp_path / "x"))
        rec.add("answered")

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(busy)
            nursery.start_soon(commit)
    assert rec.lines == ["staged x", "placed x", f"fsync {tmp_path.name}", "busy done", "answered"]
    await disk.aclose()


class _Passes(trio.abc.Instrument):
    """The tasks each scheduler pass ran (trio's own left out), sorted: not their order,
    which trio's seeded shuffle decides."""

    def __init__(self) -> None:
        self.passes: list[tuple[str, ...]] = []
        self._pass: list[str] = []

    def after_io_wait(self, timeout: float) -> None:
        if self._pass:
            self.passes.append(tuple(sorted(self._pass)))
            self._pass = []

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if not task.name.startswith("<"):
            self._pass.append(task.name)


def _passes_of_a_run(out: Path, *, disk_first: bool) -> list[tuple[str, ...]]:
    """Under MockClock, two tasks commit a file (a few passes apart) while three others
    step 2,000 times. ``disk_first``: a stepping task blocks the loop until the first file is
    durable (the worker faster than the loop); else the worker is held until the steps end
    (slower than the loop)."""
    rec = Recorder()
    durable = threading.Event()
    gate = threading.Event()
    if disk_first:
        gate.set()

    def fsync_dir(directory: Path) -> None:
        rec.fsync_dir(directory)
        durable.set()

    async def main() -> None:
        disk = DiskCommitter(fsync_dir=fsync_dir, syncfs=None)

        async def busy(waits: bool) -> None:
            for step in range(2000):
                if step == 10 and waits:
                    durable.wait(10)  # deliberate: the loop held until the worker is done
                await trio.lowlevel.checkpoint()
            gate.set()

        async def commit(name: str, passes: int) -> None:
            for _ in range(passes):
                await trio.lowlevel.checkpoint()
            await disk.commit(Fake(rec, out / name, gate=gate))

        async with trio.open_nursery() as nursery:
            for waits in (disk_first, False, False):
                nursery.start_soon(busy, waits)
            nursery.start_soon(commit, "a", 0)
            nursery.start_soon(commit, "b", 20)
        await disk.aclose()

    passes = _Passes()
    out.mkdir()
    trio.run(main, clock=trio.testing.MockClock(), instruments=[passes])
    assert sorted(os.listdir(out)) == ["a", "b"]
    return passes.passes


def test_under_the_mock_clock_the_loop_runs_the_same_passes_whatever_the_disk_speed(
    tmp_path: Path,
) -> None:
    """Under MockClock every step of the committer's task, and so every answer, comes from
    the loop's own state, not from when the worker thread finished: a seeded run writes one
    log (hypothesis replays failures so). With each group's answer delivered to the loop as
    the worker finished it (the overlap's first version), a commit joined the running batch
    or the next, and the committer's steps shifted between the other tasks' passes, as the
    thread's speed had it: CI saw an OutputSaved 1 s of mock time apart between two runs of
    one seed (test_same_seed_same_log_through_comfyui_retries)."""
    fast = _passes_of_a_run(tmp_path / "fast", disk_first=True)
    slow = _passes_of_a_run(tmp_path / "slow", disk_first=False)
    assert fast == slow


async def test_in_the_worker_thread_commits_made_before_the_loop_is_idle_share_a_batch(
    tmp_path: Path,
) -> None:
    """The same moment to take a batch outside MockClock (what production runs): commits
    reached a few scheduler passes apart share one batch in the long-lived thread."""
    rec = Recorder()
    disk = DiskCommitter(fsync_dir=rec.fsync_dir, syncfs=None, threaded=True)

    async def one(name: str, passes: int) -> None:
        for _ in range(passes):
            await trio.lowlevel.checkpoint()
        await disk.commit(Fake(rec, tmp_path / name))

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            for passes, name in enumerate(("a", "b", "c", "d")):
                nursery.start_soon(one, name, passes * 3)
    assert (disk.statistics().batches, disk.statistics().commits) == (1, 4)
    await disk.aclose()


async def test_a_loop_that_is_never_idle_does_not_hold_the_disk_back(tmp_path: Path) -> None:
    """A task that never blocks (only checkpoints) keeps the loop from being idle: the batch
    is still taken, GATHER after it could start."""
    rec = Recorder()
    disk = DiskCommitter(fsync_dir=rec.fsync_dir, syncfs=None, threaded=True)
    done = trio.Event()

    async def busy() -> None:
        while not done.is_set():
            await trio.lowlevel.checkpoint()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(busy)
            assert await disk.commit(Fake(rec, tmp_path / "x")) == "x"
            done.set()
    await disk.aclose()


@pytest.mark.usefixtures("default_switch_interval")
async def test_a_committer_shortens_the_switch_interval() -> None:
    """Its worker thread needs the GIL back after each system call, beside a busy loop."""
    DiskCommitter()
    assert sys.getswitchinterval() == pytest.approx(GIL_SWITCH_SECONDS)
