"""``run --resume`` of a log cut short in the middle of its launch record (a copy of a live
log, a restored backup, a disk that lost its last writes): the machine the killed run
launched bills on, unknown to the log. The resume names it, on the terminal and as a
``run.warning`` record, with the command that stops it (QA session 29, H2)."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from test_cmd_run_cloud import VERSION, _env, _is, served_cloud, start_run

import conjure_actors
import eventlog
from conjure_actors.domain import events as ev
from conjure_actors.domain.events import Event
from eventlog._format import FRAME, FRAME_SIZE, HEADER_SIZE

pytestmark = pytest.mark.slow


def _cut_into(log: Path, seq: int, extra: int) -> None:
    """Keep the records before ``seq`` and ``extra`` bytes of it (a torn tail)."""
    data = log.read_bytes()
    pos = HEADER_SIZE
    while True:
        _, length, at, _ = FRAME.unpack_from(data, pos)
        if at == seq:
            break
        pos += FRAME_SIZE + length
    log.write_bytes(data[: pos + extra])


async def _killed_and_cut(cloud: Any, log: Path) -> str:
    """A run killed while its prompt runs, its log cut 30 bytes into its launch intent:
    the id of the machine it left running."""
    first = await start_run(cloud, log.parent, "--log", str(log))
    with trio.fail_after(120):
        await first.until(_is("exec.prompt_submitted"))
    first.process.send_signal(signal.SIGKILL)
    await first.process.wait()
    (orphan,) = cloud.runcomfy.running()
    records = list(eventlog.read(log, Event))
    seq = next(r.seq for r in records if isinstance(r.event, ev.MachineLaunchRequested))
    _cut_into(log, seq, 30)
    return str(orphan)


async def test_a_resume_of_a_log_cut_in_its_launch_record_names_the_machine_left_billing(
    tmp_path: Path,
) -> None:
    """Killed while its prompt runs, the log cut 30 bytes into its launch intent: the
    resume runs the job on a new machine and names the killed run's machine (its id, its
    cost so far, `machine down --server-id`), which it does not stop."""
    log = tmp_path / "run.log"
    async with served_cloud() as cloud:
        orphan = await _killed_and_cut(cloud, log)
        second = await start_run(cloud, tmp_path, "--resume", str(log))
        with trio.fail_after(180):
            await second.until(_is("run.summary"))
            code = await second.finish()
        assert orphan in cloud.runcomfy.running()
    err = second.stderr.decode()
    assert code == 0, err
    (line,) = [x for x in err.splitlines() if "this log does not know" in x]
    assert line.startswith(f"note: RunComfy lists a machine this log does not know: {orphan}")
    assert " so far" in line
    assert f"python -m conjure_actors machine down --server-id {orphan}" in line
    warnings = [x for x in second.lines if x.get("type") == "run.warning"]
    assert [w["server_id"] for w in warnings if "server_id" in w] == [orphan]


async def _serve(cloud: Any, log: Path) -> tuple[Any, str]:
    """A ``serve`` process on ``log`` against ``cloud``, and its URL once it serves."""
    process = await trio.lowlevel.open_process(
        [
            *(sys.executable, "-m", "conjure_actors", "serve", "--port", "0"),
            *("--log", str(log), "--workflow-version", VERSION),
        ],
        cwd=log.parent,
        env=_env(cloud),
        stdout=-1,
        stderr=-1,
    )
    out = b""
    with trio.fail_after(60):
        while b"serving the Comfy API v2 on " not in out or not out.endswith(b"\n"):
            chunk = await process.stdout.receive_some(65536)
            assert chunk, out
            out += chunk
    return process, out.decode().split("serving the Comfy API v2 on ")[1].split()[0]


async def _stop(process: Any) -> bytes:
    """SIGTERM: serve stops its machines and exits; its stderr."""
    process.send_signal(signal.SIGTERM)
    err = b""
    with trio.fail_after(60):
        while chunk := await process.stderr.receive_some(65536):
            err += chunk
        await process.wait()
    return err


async def test_serve_started_on_a_log_names_the_account_machines_it_does_not_know(
    tmp_path: Path,
) -> None:
    """serve, restarted on its log (one job served), names a machine another client
    started on the account meanwhile, as run --resume does, and leaves it running."""
    log = tmp_path / "serve.log"
    graph = json.loads(
        (Path(conjure_actors.__file__).parent / "workflows/invert_save.json").read_text()
    )
    async with served_cloud() as cloud, httpx.AsyncClient() as http:
        process, url = await _serve(cloud, log)
        job = (await http.post(f"{url}/api/v2/jobs", json={"workflow": graph})).json()["id"]

        async def status() -> str:
            return str((await http.get(f"{url}/api/v2/jobs/{job}")).json()["status"])

        with trio.fail_after(60):
            while await status() != "succeeded":  # noqa: ASYNC110 - the API is polled
                await trio.sleep(0.1)
        await _stop(process)
        body = {"workflow_version_id": VERSION, "server_type": "medium", "estimated_duration": 3600}
        foreign = cloud.runcomfy._launch(json.dumps(body).encode())["server_id"]
        process, _ = await _serve(cloud, log)
        err = (await _stop(process)).decode()
        assert foreign in cloud.runcomfy.running()
    (line,) = [x for x in err.splitlines() if "this log does not know" in x]
    assert line.startswith(f"note: RunComfy lists a machine this log does not know: {foreign}")
    assert f"python -m conjure_actors machine down --server-id {foreign}" in line
