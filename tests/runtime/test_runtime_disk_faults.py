"""The disk committer when a file fails inside a batch, and under a MockClock whose default
thread limiter has a single token."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
import trio
import trio.testing

from conjure_actors.clients import download
from conjure_actors.clients.download import MEMORY_BYTES, FileSink
from conjure_actors.clients.errors import LocalSaveError
from conjure_actors.runtime.disk import DiskCommitter


def test_a_sink_failing_in_a_batch_cleans_up_in_the_batch_before_any_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FileCommit's contract: stage/put_in_place leave no temporary file behind on failure.
    FileSink leaves it (and the folder it made) to its caller's abort, which runs after the
    batch is answered. In one batch, A makes OUT/job/ and fails at its rename; B, in
    OUT/job/, is answered while OUT/job/'s name is not durable (A's abort fsyncs OUT only
    later: before or after B's caller runs, as trio orders the wake-ups)."""
    real_replace = os.replace

    def replace(src: object, dst: object) -> None:
        if str(dst).endswith("a.png"):
            raise OSError(28, "No space left on device")
        real_replace(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "replace", replace)
    bad: list[int] = []
    for attempt in range(16):
        lines: list[str] = []

        def record(directory: Path, lines: list[str] = lines) -> None:
            lines.append(f"fsync {directory.name}")

        monkeypatch.setattr(download, "fsync_dir", record)
        out = tmp_path / f"out{attempt}"
        out.mkdir()

        async def main(out: Path = out, lines: list[str] = lines) -> None:
            disk = DiskCommitter(fsync_dir=lambda d: lines.append(f"fsync {d.name}"), syncfs=None)

            async def one(name: str) -> None:
                sink = FileSink(out / "job" / name, max_bytes=MEMORY_BYTES, what=name)
                sink.write(b"\x89PNG small")
                try:
                    await disk.commit(sink)
                    lines.append(f"answered {name}")
                except LocalSaveError:
                    lines.append(f"failed {name}")
                finally:
                    sink.abort()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(one, "a.png")  # first in the batch: makes OUT/job/
                nursery.start_soon(one, "b.png")
            await disk.aclose()

        trio.run(main)
        assert "answered b.png" in lines
        assert not any(p.name.endswith(".part") for p in (out / "job").iterdir())
        if f"fsync {out.name}" not in lines[: lines.index("answered b.png")]:
            bad.append(attempt)
    assert not bad, f"B answered before OUT/job/ was durable in runs {bad} of 16"


def test_under_the_mock_clock_a_batch_runs_with_a_one_token_default_limiter(
    tmp_path: Path,
) -> None:
    """Under MockClock the runner holds a token of the default limiter from its wait for
    idle to the answer, and its trio.to_thread.run_sync asks that limiter for another: with
    a default limiter of one token the batch never runs, and its caller, marked running,
    cannot even be cancelled (the run hangs; here, in a thread given 10 s)."""
    finished = threading.Event()

    async def main() -> None:
        trio.to_thread.current_default_thread_limiter().total_tokens = 1
        disk = DiskCommitter()
        sink = FileSink(tmp_path / "x.png", max_bytes=MEMORY_BYTES, what="x")
        sink.write(b"\x89PNG small")
        with trio.move_on_after(60):  # mock time: autojump leaps to it
            await disk.commit(sink)
        sink.abort()

    def run() -> None:
        trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
        finished.set()

    threading.Thread(target=run, daemon=True).start()
    assert finished.wait(10), "the commit never ran and could not be cancelled"


def test_a_committer_used_in_another_trio_run_says_so() -> None:
    """Its runner and its answers belong to the run that made it: a second run's commit
    would wait forever, so it is refused."""

    async def make() -> DiskCommitter:
        return DiskCommitter()

    disk = trio.run(make)

    async def use() -> None:
        with pytest.raises(RuntimeError, match="serves the trio run that made it"):
            await disk.commit(FileSink(Path("unused"), max_bytes=MEMORY_BYTES, what="x"))

    trio.run(use)
