"""File helpers of the actors: safe output paths under OUT/<job>/, durable atomic writes."""

from __future__ import annotations

import json
import os
import stat
import tempfile
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.testing
from actor_support import open_test_cloud, run_conjure, sim_config
from hypothesis import assume, example, given
from hypothesis import strategies as st

from conjure_actors.actors import files
from conjure_actors.clients import download
from conjure_actors.clients.errors import DownloadError, UnsafeOutputNameError

# Names a hostile server might send: separators, dots, drives, NUL and controls, unicode.
_hostile_text = st.lists(
    st.one_of(
        st.sampled_from(["/", "\\", ".", "..", ":", "C:", "\x00", "\n", "\x7f", "~", " "]),
        st.text(max_size=8),
        st.text(alphabet="x", min_size=190, max_size=260),
    ),
    max_size=8,
).map("".join)


def _inside(base: Path, path: Path) -> bool:
    base_s, path_s = os.path.normpath(base), os.path.normpath(path)
    return os.path.commonpath([base_s, path_s]) == base_s and path_s != base_s


@pytest.mark.slow
@given(subfolder=_hostile_text, filename=_hostile_text)
@example(subfolder="../..", filename="x.png")
@example(subfolder="/etc", filename="passwd")
@example(subfolder="", filename="a\x00b.png")
@example(subfolder="C:\\Windows", filename="x.png")
@example(subfolder="a/../../b", filename="x.png")
@example(subfolder="", filename="..")
def test_output_path_is_inside_the_job_folder_or_refused(subfolder: str, filename: str) -> None:
    """Any subfolder/filename gives a path strictly inside OUT/<job>/, or a typed refusal."""
    job_dir = Path("/out/job-1")
    refusal: DownloadError | None = None
    try:
        path = files.output_path(job_dir, subfolder, filename)
    except UnsafeOutputNameError as exc:
        refusal = exc
    if refusal is not None:
        assert "\x00" not in str(refusal)
        assert "\n" not in str(refusal)
        return
    assert _inside(job_dir, path)
    assert ".." not in path.relative_to(job_dir).parts
    assert path.name == filename


@pytest.mark.slow  # (just test <= 30 s: CI and just check run it)
@given(subfolder=_hostile_text, filename=_hostile_text)
def test_an_accepted_output_name_can_be_written_where_it_says(
    subfolder: str, filename: str
) -> None:
    """A name output_path accepts is writable on disk, and the file lands inside the folder."""
    try:
        files.safe_relative_parts(subfolder, filename)
    except UnsafeOutputNameError:
        return
    with tempfile.TemporaryDirectory() as tmp:
        job_dir = Path(tmp) / "job-1"
        path = files.output_path(job_dir, subfolder, filename)
        files.write_atomic(path, b"data")
        written = [Path(root) / name for root, _, names in os.walk(tmp) for name in names]
        assert written == [path]
        assert path.read_bytes() == b"data"


@given(name=st.text(min_size=1, max_size=40))
@example(name="a\x7fb")
@example(name="x\u2028y")
def test_a_name_is_refused_for_a_control_character_exactly_when_it_holds_one(name: str) -> None:
    """The printable-ASCII fast path agrees with the per-character check on every name."""
    name = name.replace("/", "_").replace("\\", "_").replace(":", "_")
    assume(name not in (".", ".."))
    if any(unicodedata.category(c) in {"Cc", "Cs", "Zl", "Zp"} for c in name):
        with pytest.raises(UnsafeOutputNameError, match="control character"):
            files.safe_relative_parts("", name)
    else:
        assert files.safe_relative_parts("", name) == (name,)


def test_the_subfolder_is_kept_so_equal_names_do_not_collide() -> None:
    """Two x_00001_.png in different subfolders get different paths under the job folder."""
    job_dir = Path("/out/job-1")
    a = files.output_path(job_dir, "previews", "x_00001_.png")
    b = files.output_path(job_dir, "final/3d", "x_00001_.png")
    assert a == job_dir / "previews" / "x_00001_.png"
    assert b == job_dir / "final" / "3d" / "x_00001_.png"


def test_a_nul_in_a_filename_is_refused_with_one_escaped_line() -> None:
    """A NUL in a filename is refused; the message shows it escaped, on one line."""
    with pytest.raises(UnsafeOutputNameError, match=r"control character \(U\+0000\)") as info:
        files.output_path(Path("/out/j"), "", "evil\x00.png")
    assert "\\x00" in str(info.value)


def test_write_atomic_with_mode_0600_leaves_only_the_final_file(tmp_path: Path) -> None:
    """write_atomic(mode=0o600): the bytes, mode 0600, and no temporary file left beside it."""
    target = tmp_path / "state" / "dev.json"
    files.write_atomic(target, b"{}", mode=0o600)
    files.write_atomic(target, b'{"a": 1}', mode=0o600)
    assert target.read_bytes() == b'{"a": 1}'
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert sorted(p.name for p in target.parent.iterdir()) == ["dev.json"]


def test_write_atomic_that_fails_keeps_the_old_file_and_no_temp(tmp_path: Path) -> None:
    """A write that fails (a directory in the way) leaves no temporary file behind."""
    target = tmp_path / "out"
    target.mkdir()
    (target / "keep").write_bytes(b"x")
    with pytest.raises(IsADirectoryError):
        files.write_atomic(target, b"new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_hash_file_matches_the_bytes_and_intact_reads_in_chunks(tmp_path: Path) -> None:
    """hash_file gives (size, sha256) of a multi-chunk file; intact agrees."""
    import hashlib

    data = os.urandom(3 * 1024 * 1024 + 17)
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    assert files.hash_file(path) == (len(data), digest)
    assert files.intact(path, digest)
    assert not files.intact(path, "0" * 64)
    assert not files.intact(tmp_path / "missing", digest)
    assert not files.intact(Path(str(tmp_path) + "/a\x00b"), digest)


def test_dev_machine_state_file_is_written_durably_with_mode_0600(tmp_path: Path) -> None:
    """machine up's state file: 0600 from creation, replaced whole, no temporary file left."""
    from conjure_actors.commands.machine import DevMachine, read_dev_machine, write_dev_machine

    machine = DevMachine("s-1", "https://secret.invalid", "medium", "wv", 1.0, 2.0, 990, "t1", 0.5)
    path = tmp_path / "conjure" / "dev_machine.json"
    write_dev_machine(path, machine)
    write_dev_machine(path, machine)
    assert read_dev_machine(path) == machine
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["dev_machine.json"]


# ---------------------------------------------------------------- a job's outputs, end to end


class _RenamingTransport(httpx.AsyncBaseTransport):
    """The cloud's transport, with every output entry of /history answers rewritten."""

    def __init__(
        self,
        inner: httpx.AsyncBaseTransport,
        rename: Callable[[dict], None],
        originals: dict[str, str],
    ) -> None:
        self._inner, self._rename, self._originals = inner, rename, originals

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        name = request.url.params.get("filename")
        if request.url.path == "/view" and name in self._originals:
            # Ask the simulator for the file where it really is.
            url = request.url.copy_set_param("subfolder", self._originals[name])
            request = httpx.Request(request.method, url, headers=request.headers)
        response = await self._inner.handle_async_request(request)
        if not request.url.path.startswith("/history/") or response.status_code != 200:
            return response
        body = json.loads(await response.aread())
        for entry in body.values():
            for ui in entry.get("outputs", {}).values():
                for files_ in ui.values():
                    for item in files_:
                        if isinstance(item, dict) and "filename" in item:
                            subfolder = item.get("subfolder", "")
                            self._rename(item)
                            self._originals[item["filename"]] = subfolder
        return httpx.Response(200, json=body)


class _HostileCloud:
    """The simulated cloud, answering /history with outputs renamed by ``rename``."""

    def __init__(self, cloud: Any, rename: Callable[[dict], None]) -> None:
        self._cloud, self._rename = cloud, rename
        self._originals: dict[str, str] = {}  # renamed filename -> the sim's subfolder

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cloud, name)

    def http_transport(self) -> httpx.AsyncBaseTransport:
        return _RenamingTransport(self._cloud.http_transport(), self._rename, self._originals)


async def _run_one_job(cloud: Any, tmp_path: Path, wall: Any) -> tuple[Any, list[Any]]:

    import eventlog
    from conjure_actors.actors.example import bundled_workflow, example_sketch_png
    from conjure_actors.domain.events import Event

    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    graph = json.loads(bundled_workflow())
    async with run_conjure(cloud, log, tmp_path, sim_config(cloud), wall) as conjure:
        job = await conjure.submit(graph, image=example_sketch_png(), prompt="a fox")
        with trio.fail_after(3600):
            await conjure.wait_until_idle()
        return conjure.state.jobs[job], [r.event for r in log.records()]


async def test_a_nul_in_an_output_filename_fails_the_job_once(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """A NUL in an output's filename: the job fails once with one line, no retry, no crash."""

    from conjure_actors.clock import TrioWallClock

    def nul(item: dict) -> None:
        item["filename"] = "evil\x00" + item["filename"]

    wall = TrioWallClock()
    async with open_test_cloud(wall.now) as cloud:
        job, events = await _run_one_job(_HostileCloud(cloud, nul), tmp_path / "out", wall)
    assert job.status == "failed"
    assert job.error.error_type == "UnsafeOutputName"
    assert "\n" not in job.error.message
    assert "\x00" not in job.error.message
    assert job.attempt == 1
    kinds = [type(e).__name__ for e in events]
    assert kinds.count("JobFailed") == 1
    assert "JobRetrying" not in kinds
    assert "ActorCrashed" not in kinds


async def test_a_subfolder_climbing_out_fails_the_job_and_writes_nothing(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """An output in subfolder '../../..': refused, nothing is written outside OUT/<job>/."""

    from conjure_actors.clock import TrioWallClock

    def climb(item: dict) -> None:
        item["subfolder"] = "../../.."

    wall = TrioWallClock()
    async with open_test_cloud(wall.now) as cloud:
        job, _ = await _run_one_job(_HostileCloud(cloud, climb), tmp_path / "out", wall)
    assert job.error.error_type == "UnsafeOutputName"
    written = [p for p in tmp_path.rglob("*") if p.is_file()]  # noqa: ASYNC240
    assert all((tmp_path / "out") in p.parents for p in written), written


async def test_outputs_keep_their_subfolder_under_the_job_folder(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """Outputs in subfolder 'a/b' are saved as OUT/<job>/a/b/<filename>, sha256 intact."""

    from conjure_actors.clock import TrioWallClock

    def nest(item: dict) -> None:
        item["subfolder"] = "a/b"

    wall = TrioWallClock()
    async with open_test_cloud(wall.now) as cloud:
        job, _ = await _run_one_job(_HostileCloud(cloud, nest), tmp_path / "out", wall)
    assert job.status == "succeeded", job
    for output in job.outputs:
        path = Path(output.path)
        assert path.parent == tmp_path / "out" / job.job_id / "a" / "b"
        assert files.hash_file(path) == (output.size, output.sha256)


@pytest.mark.slow  # (just test <= 30 s: CI and just check run it)
async def test_a_download_that_never_answers_fails_the_job_instead_of_hanging(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """Every /view hangs for a day: each attempt gives up after the stall timeout, the job
    fails after its attempts, long before the hang would end."""
    import attrs

    import eventlog
    from conjure_actors.actors.example import bundled_workflow, example_sketch_png
    from conjure_actors.clock import TrioWallClock
    from conjure_actors.config import DownloadsConfig
    from conjure_actors.domain.events import Event
    from conjure_actors.sim.comfyui import ComfyFaults

    wall = TrioWallClock()
    faults = ComfyFaults(slow_download_rate=1.0, slow_download_seconds=86400.0)
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    async with open_test_cloud(wall.now, comfy_faults=faults) as cloud:
        config = attrs.evolve(sim_config(cloud), downloads=DownloadsConfig(stall_seconds=5.0))
        start = trio.current_time()
        async with run_conjure(cloud, log, tmp_path, config, wall) as conjure:
            job_id = await conjure.submit(
                json.loads(bundled_workflow()), image=example_sketch_png(), prompt="a fox"
            )
            with trio.fail_after(20000):
                await conjure.wait_until_idle()
            job = conjure.state.jobs[job_id]
        elapsed = trio.current_time() - start
    assert job.status == "failed"
    assert "no answer within 5 s" in job.error.message
    assert elapsed < 3600


def test_write_atomic_in_new_folders_makes_their_names_durable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """write_atomic into folders it makes fsyncs the file's folder, then each made folder's
    parent, innermost first; into an existing folder, that folder alone."""
    synced: list[Path] = []
    real = download.fsync_dir

    def fsync_dir(directory: Path) -> None:
        synced.append(Path(directory))
        real(directory)

    monkeypatch.setattr(download, "fsync_dir", fsync_dir)
    monkeypatch.setattr(files, "fsync_dir", fsync_dir)
    files.write_atomic(tmp_path / "a" / "b" / "x.json", b"{}")
    assert synced == [tmp_path / "a" / "b", tmp_path / "a", tmp_path]
    synced.clear()
    files.write_atomic(tmp_path / "a" / "b" / "y.json", b"{}")
    assert synced == [tmp_path / "a" / "b"]
