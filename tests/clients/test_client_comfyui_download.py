"""ComfyUIClient.download_to against hostile /view servers: in memory and over loopback."""

from __future__ import annotations

import functools
import hashlib
import itertools
import os
import tempfile
import tracemalloc
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from conjure_actors.clients import ComfyUIClient, OutputFile, RetryPolicy, download
from conjure_actors.clients.download import MEMORY_BYTES, FileSink
from conjure_actors.clients.errors import (
    DownloadError,
    DownloadStalledError,
    DownloadTooLargeError,
    LocalSaveError,
)
from conjure_actors.sim.media import write_png

SECRET_BASE = "http://machine-7f3a.secret.invalid:8188"
PNG = write_png(16, 16, b"x")
OUTPUT = OutputFile("9", "images", "x_00001_.png", "final", "output")
POLICY = RetryPolicy(attempts=2, base_delay=0.5, max_delay=1.0)


class Body(httpx.AsyncByteStream):
    """A response body: some chunks, then the end, a hang, or an endless stream of zeros."""

    def __init__(self, chunks: list[bytes], then: str = "end", chunk: int = 64 * 1024) -> None:
        self.chunks, self.then, self.chunk = chunks, then, chunk
        self._gen = self._generate()

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._gen

    async def aclose(self) -> None:
        await self._gen.aclose()

    async def _generate(self) -> AsyncGenerator[bytes, None]:
        for chunk in self.chunks:
            await trio.lowlevel.checkpoint()
            yield chunk
        if self.then == "hang":
            await trio.sleep_forever()
        while self.then == "endless":
            await trio.lowlevel.checkpoint()
            yield bytes(self.chunk)


def client_for(answer: Callable[[httpx.Request], httpx.Response], http_hits: list[int]) -> Any:
    async def handler(request: httpx.Request) -> httpx.Response:
        http_hits.append(1)
        return answer(request)

    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


def comfy(http: httpx.AsyncClient) -> ComfyUIClient:
    return ComfyUIClient(SECRET_BASE, http=http, policy=POLICY, redact="server s-1")


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.is_file())


async def test_download_to_streams_verifies_and_renames_into_place(tmp_path: Path) -> None:
    """A good PNG lands at its path with its size and sha256; no temporary file is left."""
    hits: list[int] = []
    target = tmp_path / "job" / "final" / OUTPUT.filename
    async with client_for(lambda r: httpx.Response(200, content=PNG), hits) as http:
        size, digest = await comfy(http).download_to(OUTPUT, target)
    assert (size, digest) == (len(PNG), hashlib.sha256(PNG).hexdigest())
    assert target.read_bytes() == PNG
    assert leftovers(tmp_path) == [OUTPUT.filename]


async def test_endless_body_is_capped_with_bounded_memory(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    """A body that never ends: DownloadTooLargeError at the cap, memory stays a few chunks."""
    hits: list[int] = []
    cap = 32 * 1024 * 1024

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=Body([PNG[:16]], then="endless"))

    target = tmp_path / "out.png"
    async with client_for(answer, hits) as http:
        tracemalloc.start()
        try:
            with trio.fail_after(60), pytest.raises(DownloadTooLargeError, match="cap"):
                await comfy(http).download_to(OUTPUT, target, max_bytes=cap)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert peak < 2 * 1024 * 1024, peak
    assert hits == [1]  # too large is not retried
    assert leftovers(tmp_path) == []


async def test_declared_length_over_the_cap_is_refused_before_reading(tmp_path: Path) -> None:
    """A Content-Length above the cap is refused at once: no file is created."""
    hits: list[int] = []

    def answer(request: httpx.Request) -> httpx.Response:
        headers = {"content-length": str(10**12)}
        return httpx.Response(200, headers=headers, stream=Body([], then="hang"))

    async with client_for(answer, hits) as http:
        with trio.fail_after(5), pytest.raises(DownloadTooLargeError, match="declares"):
            await comfy(http).download_to(OUTPUT, tmp_path / "x.png", max_bytes=1024)
    assert leftovers(tmp_path) == []


async def test_body_shorter_than_its_content_length_is_a_typed_error(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    """A body that ends before its Content-Length: retried, then DownloadError naming both."""
    hits: list[int] = []

    def answer(request: httpx.Request) -> httpx.Response:
        headers = {"content-length": str(len(PNG) + 100)}
        return httpx.Response(200, headers=headers, stream=Body([PNG]))

    async with client_for(answer, hits) as http:
        with trio.fail_after(60), pytest.raises(DownloadError, match=f"got {len(PNG)} of"):
            await comfy(http).download_to(OUTPUT, tmp_path / "x.png")
    assert len(hits) == POLICY.attempts
    assert leftovers(tmp_path) == []


async def test_body_that_stops_mid_way_is_a_stall_within_the_stall_timeout(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    """A body that stops sending (long Content-Length, no more bytes): DownloadStalledError."""
    hits: list[int] = []

    def answer(request: httpx.Request) -> httpx.Response:
        headers = {"content-length": str(len(PNG) * 10)}
        return httpx.Response(200, headers=headers, stream=Body([PNG[:20]], then="hang"))

    start = trio.current_time()
    async with client_for(answer, hits) as http:
        with trio.fail_after(600), pytest.raises(DownloadStalledError, match="no byte for 5 s"):
            await comfy(http).download_to(OUTPUT, tmp_path / "x.png", stall_timeout=5.0)
    elapsed = trio.current_time() - start
    assert elapsed <= POLICY.attempts * 5.0 + POLICY.max_delay + 0.1
    assert leftovers(tmp_path) == []


async def test_a_failed_download_keeps_the_previous_file(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    """A truncated answer never replaces a file already saved under the final name."""
    hits: list[int] = []
    target = tmp_path / "x.png"
    target.write_bytes(PNG)
    async with client_for(lambda r: httpx.Response(200, content=PNG[:-8]), hits) as http:
        with trio.fail_after(60), pytest.raises(DownloadError, match="IEND"):
            await comfy(http).download_to(OUTPUT, target)
    assert target.read_bytes() == PNG
    assert leftovers(tmp_path) == ["x.png"]


async def test_a_404_is_not_retried(tmp_path: Path) -> None:
    """/view answering 404: DownloadError at once, one request."""
    hits: list[int] = []
    async with client_for(lambda r: httpx.Response(404), hits) as http:
        with pytest.raises(DownloadError, match="missing") as info:
            await comfy(http).download_to(OUTPUT, tmp_path / "x.png")
    assert info.value.status == 404
    assert hits == [1]


async def test_a_transient_503_is_retried_then_saved(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    """One 503, then the file: saved on the second attempt."""
    hits: list[int] = []

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503 if len(hits) == 1 else 200, content=PNG)

    async with client_for(answer, hits) as http:
        with trio.fail_after(60):
            size, _ = await comfy(http).download_to(OUTPUT, tmp_path / "x.png")
    assert size == len(PNG)
    assert len(hits) == 2


class Trickle(httpx.AsyncByteStream):
    """A body sent one chunk every ``every`` seconds (a slow but live server)."""

    def __init__(self, chunks: list[bytes], every: float) -> None:
        self.chunks, self.every = chunks, every

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            await trio.sleep(self.every)
            yield chunk


async def test_a_body_slower_in_total_than_the_stall_timeout_but_never_silent_is_saved(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    """Chunks 4 s apart under a 5 s stall timeout (40 s in all): saved, one request."""
    hits: list[int] = []
    pieces = [PNG[i : i + 10] for i in range(0, len(PNG), 10)]
    assert len(pieces) >= 8

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=Trickle(pieces, every=4.0))

    async with client_for(answer, hits) as http:
        with trio.fail_after(600):
            size, _ = await comfy(http).download_to(OUTPUT, tmp_path / "x.png", stall_timeout=5.0)
    assert size == len(PNG)
    assert hits == [1]
    assert trio.current_time() >= 4.0 * len(pieces)


async def test_view_asks_for_identity_and_carries_names_that_need_escaping(
    tmp_path: Path,
) -> None:
    """/view gets the output's filename, subfolder and type back exactly (spaces, &, =, %,
    non-ASCII), and asks for the bytes unencoded."""
    seen: list[httpx.Request] = []
    weird = OutputFile("9", "images", "a b&c=d%20é+.png", "sub dir/ü", "temp")

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=PNG)

    async with client_for(answer, []) as http:
        await comfy(http).download_to(weird, tmp_path / "x.png")
    (request,) = seen
    assert request.url.path == "/view"
    assert dict(request.url.params) == {
        "filename": "a b&c=d%20é+.png",
        "subfolder": "sub dir/ü",
        "type": "temp",
    }
    assert request.headers["accept-encoding"] == "identity"


def test_a_temporary_name_already_taken_is_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A leftover .part file with the next temporary name is neither reused nor touched."""
    monkeypatch.setattr(download, "_TEMP_IDS", itertools.count())
    target = tmp_path / "x.png"
    taken = tmp_path / f".x.png.{os.getpid():x}-0.part"
    taken.write_bytes(b"left by a crashed run")
    fd, tmp = download.open_temp_beside(target)
    os.close(fd)
    assert tmp != taken
    assert tmp.name.startswith(".x.png.")
    assert tmp.name.endswith(".part")
    assert taken.read_bytes() == b"left by a crashed run"


def test_a_temporary_file_in_a_missing_folder_makes_the_folder(tmp_path: Path) -> None:
    """The folders of a new job are made on the first file's open."""
    fd, tmp = download.open_temp_beside(tmp_path / "job" / "sub" / "x.png")
    os.close(fd)
    assert tmp.parent == tmp_path / "job" / "sub"
    assert tmp.exists()


# ------------------------------------------------------------------ loopback (real h11)


async def serve_raw(
    nursery: trio.Nursery, response: bytes, *, hold: bool
) -> tuple[int, list[bytes]]:
    """A TCP server on port 0 that answers every request with ``response`` verbatim, then
    holds the connection open (``hold``) or closes it. Returns (port, requests seen)."""
    seen: list[bytes] = []

    async def handler(stream: trio.SocketStream) -> None:
        seen.append(await stream.receive_some(65536))
        await stream.send_all(response)
        if hold:
            await trio.sleep_forever()
        await stream.aclose()

    listeners = await nursery.start(trio.serve_tcp, handler, 0)
    return listeners[0].socket.getsockname()[1], seen


def raw_response(body: bytes, declared: int) -> bytes:
    head = f"HTTP/1.1 200 OK\r\ncontent-type: image/png\r\ncontent-length: {declared}\r\n\r\n"
    return head.encode() + body


async def test_loopback_long_content_length_held_open_stalls_not_hangs(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    """Over a real socket: Content-Length 10x the body, connection held open -> stall error."""
    async with trio.open_nursery() as nursery:
        port, seen = await serve_raw(nursery, raw_response(PNG, len(PNG) * 10), hold=True)
        async with httpx.AsyncClient() as http:
            client = ComfyUIClient(
                f"http://127.0.0.1:{port}", http=http, policy=POLICY, redact="server s-1"
            )
            start = trio.current_time()
            with trio.fail_after(120), pytest.raises(DownloadStalledError) as info:
                await client.download_to(OUTPUT, tmp_path / "x.png", stall_timeout=5.0)
        assert trio.current_time() - start <= POLICY.attempts * 5.0 + POLICY.max_delay + 0.1
        assert str(port) not in str(info.value)
        assert len(seen) == POLICY.attempts
        nursery.cancel_scope.cancel()
    assert leftovers(tmp_path) == []


async def test_loopback_connection_closed_before_content_length_is_a_typed_error(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    """Over a real socket: the server closes before its Content-Length -> DownloadError."""
    async with trio.open_nursery() as nursery:
        port, _ = await serve_raw(nursery, raw_response(PNG, len(PNG) + 50), hold=False)
        async with httpx.AsyncClient() as http:
            client = ComfyUIClient(f"http://127.0.0.1:{port}", http=http, policy=POLICY)
            with trio.fail_after(120), pytest.raises(DownloadError) as info:
                await client.download_to(OUTPUT, tmp_path / "x.png", stall_timeout=5.0)
        assert not isinstance(info.value, DownloadStalledError)
        nursery.cancel_scope.cancel()
    assert leftovers(tmp_path) == []


async def test_stall_error_never_names_the_machine_url(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    """With redact set, a download error names the server, never its (secret) URL."""
    hits: list[int] = []

    def answer(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadError(f"connection to {SECRET_BASE}/view reset")

    async with client_for(answer, hits) as http:
        with trio.fail_after(60), pytest.raises(DownloadError) as info:
            await comfy(http).download_to(OUTPUT, tmp_path / "x.png")
    message = str(info.value)
    assert "server s-1" in message
    assert "secret.invalid" not in message


async def test_an_output_name_with_control_characters_is_escaped_in_errors(
    tmp_path: Path,
) -> None:
    """A 404 for an output whose name holds a newline: the message stays on one line."""
    hits: list[int] = []
    weird = OutputFile("9", "images", "a\nb\x00.png", "sub\x1b[2J", "output")
    async with client_for(lambda r: httpx.Response(404), hits) as http:
        with pytest.raises(DownloadError) as info:
            await comfy(http).download_to(weird, tmp_path / "x.png")
    assert "\n" not in str(info.value)
    assert "\x00" not in str(info.value)
    assert "\\n" in str(info.value)


@given(
    body=st.one_of(st.just(PNG), st.binary(max_size=200)),
    cuts=st.lists(st.integers(0, 200), max_size=4),
    declared_delta=st.one_of(st.none(), st.integers(-20, 20)),
    then=st.sampled_from(["end", "hang"]),
    max_bytes=st.sampled_from([50, 10_000]),
)
def test_download_to_saves_exactly_the_body_or_nothing(
    body: bytes, cuts: list[int], declared_delta: int | None, then: str, max_bytes: int
) -> None:
    """Any body, chunking, Content-Length and ending: the file holds exactly the body and
    its sha256, or a DownloadError is raised and no file (final or temporary) is left."""
    edges = sorted({0, len(body), *(c for c in cuts if c < len(body))})
    chunks = [body[a:b] for a, b in itertools.pairwise(edges)]
    declared = None if declared_delta is None else max(0, len(body) + declared_delta)
    headers = {} if declared is None else {"content-length": str(declared)}

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers=headers, stream=Body(list(chunks), then=then))

    async def scenario(target: Path) -> tuple[int, str] | DownloadError:
        hits: list[int] = []
        async with client_for(answer, hits) as http:
            try:
                return await comfy(http).download_to(
                    OUTPUT, target, max_bytes=max_bytes, stall_timeout=5.0
                )
            except DownloadError as exc:
                return exc

    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "x.png"
        result = trio.run(scenario, target, clock=trio.testing.MockClock(autojump_threshold=0))
        if isinstance(result, DownloadError):
            assert leftovers(Path(tmp)) == []
        else:
            assert result == (len(body), hashlib.sha256(body).hexdigest())
            assert target.read_bytes() == body
            assert leftovers(Path(tmp)) == ["x.png"]
            assert len(body) <= max_bytes
            assert declared in (None, len(body))


def test_a_small_body_touches_the_disk_only_at_commit(tmp_path: Path) -> None:
    """A body within MEMORY_BYTES is held: no folder, no temporary file until commit."""
    target = tmp_path / "job" / "final" / OUTPUT.filename
    sink = FileSink(target, max_bytes=10 * MEMORY_BYTES, what="x")
    sink.write(PNG[:10])
    sink.write(PNG[10:])
    assert not (tmp_path / "job").exists()
    sink.commit()
    sink.abort()  # after commit: nothing
    assert target.read_bytes() == PNG
    assert (sink.size, sink.sha256) == (len(PNG), hashlib.sha256(PNG).hexdigest())
    assert leftovers(tmp_path) == [OUTPUT.filename]


def test_a_body_past_the_memory_bound_streams_to_a_temporary_file(tmp_path: Path) -> None:
    """The chunk that takes a body past MEMORY_BYTES opens the temporary file: from then on
    the body is on disk, and commit renames it into place whole."""
    body = bytes(range(256)) * (MEMORY_BYTES // 256 + 1)
    target = tmp_path / "out.bin"
    sink = FileSink(target, max_bytes=10 * MEMORY_BYTES, what="x")
    sink.write(body[:MEMORY_BYTES])
    assert leftovers(tmp_path) == []
    sink.write(body[MEMORY_BYTES:])
    assert [p.endswith(".part") for p in leftovers(tmp_path)] == [True]
    sink.commit()
    assert target.read_bytes() == body
    assert leftovers(tmp_path) == ["out.bin"]


def test_abort_of_a_held_body_leaves_nothing_and_commit_is_refused(tmp_path: Path) -> None:
    """Aborting a small body writes nothing; a later commit is a programming error."""
    sink = FileSink(tmp_path / "a" / "x.png", max_bytes=MEMORY_BYTES, what="x")
    sink.write(PNG)
    sink.abort()
    assert leftovers(tmp_path) == []
    with pytest.raises(AssertionError):
        sink.commit()


def test_a_held_body_whose_folder_cannot_be_made_fails_at_commit_as_a_local_save_error(
    tmp_path: Path,
) -> None:
    """A file where the job's folder should be: LocalSaveError (a DownloadError, one line:
    this machine's fault, not the server's), nothing left."""
    (tmp_path / "job").write_bytes(b"not a folder")
    sink = FileSink(tmp_path / "job" / "x.png", max_bytes=MEMORY_BYTES, what="x.png")
    sink.write(PNG)
    with pytest.raises(LocalSaveError, match=r"cannot save x\.png locally"):
        sink.commit()
    sink.abort()
    assert leftovers(tmp_path) == ["job"]


def _record_dir_fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    synced: list[Path] = []
    real = download.fsync_dir

    def fsync_dir(directory: Path) -> None:
        synced.append(Path(directory))
        real(directory)

    monkeypatch.setattr(download, "fsync_dir", fsync_dir)
    return synced


def test_commit_makes_the_names_of_the_folders_it_made_durable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file in folders made for it: its folder is fsynced, then the parent of each folder
    made, innermost first (else a power loss could take the new job folder, file and all)."""
    synced = _record_dir_fsyncs(monkeypatch)
    sink = FileSink(tmp_path / "job" / "sub" / "x.png", max_bytes=MEMORY_BYTES, what="x")
    sink.write(PNG)
    sink.commit()
    assert synced == [tmp_path / "job" / "sub", tmp_path / "job", tmp_path]


def test_commit_in_an_existing_folder_fsyncs_that_folder_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No folder made: one directory fsync, as before."""
    (tmp_path / "job").mkdir()
    synced = _record_dir_fsyncs(monkeypatch)
    sink = FileSink(tmp_path / "job" / "x.png", max_bytes=MEMORY_BYTES, what="x")
    sink.write(PNG)
    sink.commit()
    assert synced == [tmp_path / "job"]


def test_a_streamed_body_in_new_folders_makes_their_names_durable_at_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A body past MEMORY_BYTES makes its folders as it opens its temporary file (before
    commit); the commit still fsyncs their parents."""
    synced = _record_dir_fsyncs(monkeypatch)
    sink = FileSink(tmp_path / "job" / "big.bin", max_bytes=10 * MEMORY_BYTES, what="x")
    sink.write(b"\0" * (MEMORY_BYTES + 1))
    assert synced == []
    sink.commit()
    assert synced == [tmp_path / "job", tmp_path]


def test_make_dirs_makes_the_names_of_the_folders_it_made_durable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A folder made ahead of its files (--out): the parent of each new folder is fsynced,
    innermost first (no file's commit will: it makes durable only what it made itself)."""
    (tmp_path / "runs").mkdir()
    synced = _record_dir_fsyncs(monkeypatch)
    download.make_dirs(tmp_path / "runs" / "out" / "day")
    assert (tmp_path / "runs" / "out" / "day").is_dir()
    assert synced == [tmp_path / "runs" / "out", tmp_path / "runs"]


def test_make_dirs_of_an_existing_folder_fsyncs_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced = _record_dir_fsyncs(monkeypatch)
    download.make_dirs(tmp_path)
    assert synced == []


def test_make_dirs_that_fails_leaves_no_folder_behind(tmp_path: Path) -> None:
    """A name too long for the file system after a new folder: the new folder goes too."""
    with pytest.raises(OSError, match="too long"):
        download.make_dirs(tmp_path / "new" / ("x" * 300))
    assert list(tmp_path.iterdir()) == []


BIG = PNG + b"\0" * (MEMORY_BYTES + 1)  # streamed: past the memory bound
BIG_OUTPUT = OutputFile("9", "", "data.bin", "final", "output")


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
            size, digest = await client.download_to(BIG_OUTPUT, target)
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


class GatedCommitter:
    """A committer (``download.Committer``) that holds every commit until ``release``,
    then runs it inline (the sink's three steps), counting them."""

    def __init__(self) -> None:
        self.queued = 0
        self.release = trio.Event()
        self.synced: list[Path] = []

    async def commit(self, item: Any) -> Any:
        self.queued += 1
        await self.release.wait()
        item.stage()
        item.put_in_place()
        return item.make_durable(self.synced.append)


async def test_download_to_commits_through_the_committer_it_is_given(tmp_path: Path) -> None:
    """With ``disk``, the file is written, renamed and its folders fsynced by the committer."""
    hits: list[int] = []
    disk = GatedCommitter()
    disk.release.set()
    target = tmp_path / "job" / "final" / OUTPUT.filename
    async with client_for(lambda r: httpx.Response(200, content=PNG), hits) as http:
        size, _ = await comfy(http).download_to(OUTPUT, target, disk=disk)
    assert (disk.queued, size) == (1, len(PNG))
    assert target.read_bytes() == PNG
    # the file's folder, then the parent of each folder made for it, innermost first
    assert disk.synced == [target.parent, tmp_path / "job", tmp_path]
    assert leftovers(tmp_path) == [OUTPUT.filename]


async def test_a_download_cancelled_while_its_commit_is_queued_leaves_no_file(
    tmp_path: Path,
) -> None:
    """Cancelled while queued at the committer: no temporary file, no final file (a body
    past MEMORY_BYTES, already streamed to its temporary file, is removed)."""
    body = PNG[:16] + bytes(MEMORY_BYTES) + PNG[16:]
    disk = GatedCommitter()
    hits: list[int] = []
    target = tmp_path / "job" / OUTPUT.filename
    async with client_for(lambda r: httpx.Response(200, content=body), hits) as http:
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(
                    functools.partial(comfy(http).download_to, OUTPUT, target, disk=disk)
                )
                await trio.testing.wait_all_tasks_blocked()
                assert disk.queued == 1
                assert [p.endswith(".part") for p in leftovers(tmp_path)] == [True]
                nursery.cancel_scope.cancel()
    assert leftovers(tmp_path) == []
