"""A new job folder made by a download that was then retried (or aborted): its name is made
durable before the output is (found by review)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import pytest
import trio

from conjure_actors.clients import ComfyUIClient, OutputFile, RetryPolicy, download
from conjure_actors.clients.download import MEMORY_BYTES, FileSink
from conjure_actors.sim.media import write_png

BIG = write_png(16, 16, b"x") + b"\0" * (MEMORY_BYTES + 1)  # streamed: past the memory bound
OUTPUT = OutputFile("9", "", "data.bin", "final", "output")


def _record_dir_fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    synced: list[Path] = []
    real = download.fsync_dir

    def fsync_dir(directory: Path) -> None:
        synced.append(Path(directory))
        real(directory)

    monkeypatch.setattr(download, "fsync_dir", fsync_dir)
    return synced


def test_an_aborted_sink_leaves_its_new_folder_whose_name_no_commit_makes_durable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first attempt streams (so makes OUT/job/) and is aborted; the second commits into
    the folder that now exists: nobody ever fsyncs OUT/, so OUT/job/ (and the output) may be
    gone after a power loss although the output was committed."""
    synced = _record_dir_fsyncs(monkeypatch)
    first = FileSink(tmp_path / "job" / "data.bin", max_bytes=10 * len(BIG), what="x")
    first.write(BIG)
    first.abort()
    second = FileSink(tmp_path / "job" / "data.bin", max_bytes=10 * len(BIG), what="x")
    second.write(BIG)
    second.commit()
    assert (tmp_path / "job" / "data.bin").read_bytes() == BIG
    assert tmp_path in synced, f"OUT/ never fsynced after OUT/job/ was made: {synced}"


async def test_a_retried_download_into_a_new_job_folder_makes_its_name_durable(
    tmp_path: Path, autojump_clock: trio.abc.Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """download_to: the first GET sends a short body (retried), the second the whole one."""
    synced = _record_dir_fsyncs(monkeypatch)
    hits: list[int] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        hits.append(1)
        body = BIG if len(hits) > 1 else BIG[: MEMORY_BYTES + 100]
        return httpx.Response(200, headers={"content-length": str(len(BIG))}, content=body)

    target = tmp_path / "job" / "data.bin"
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        client = ComfyUIClient(
            "http://m.invalid:8188", http=http, policy=RetryPolicy(attempts=2), redact="s"
        )
        with trio.fail_after(60):
            size, digest = await client.download_to(OUTPUT, target)
    assert (size, digest) == (len(BIG), hashlib.sha256(BIG).hexdigest())
    assert len(hits) == 2
    assert tmp_path in synced, f"OUT/ never fsynced after OUT/job/ was made: {synced}"


def test_abort_after_commit_touches_no_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """(Guard for the fix) download_to always aborts after commit: no further fsync."""
    synced = _record_dir_fsyncs(monkeypatch)
    sink = FileSink(tmp_path / "job" / "data.bin", max_bytes=10 * len(BIG), what="x")
    sink.write(BIG)
    sink.commit()
    sink.abort()
    assert synced == [tmp_path / "job", tmp_path]
    assert (tmp_path / "job" / "data.bin").read_bytes() == BIG
