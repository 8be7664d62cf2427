"""``run --resume`` of a log that ends right after a launch intent (kill -9, a power cut
during the launch) while another client of the account launched a machine with the same
marker: neither is adopted, the ambiguity is said once, and the run ends naming both with
the command that stops the one that is ours (QA session 29, H9: "adopting none" was said at
every listing, the launch closed "no server found", and ours billed on, named nowhere)."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import trio
from test_cmd_run_cloud import VERSION, _is, served_cloud, start_run
from test_cmd_run_resume_cut_log import _cut_into

import eventlog
from conjure_actors.domain import events as ev
from conjure_actors.domain.events import Event

pytestmark = pytest.mark.slow


async def test_a_resume_whose_launch_two_servers_echo_names_both_at_its_end(
    tmp_path: Path,
) -> None:
    log = tmp_path / "run.log"
    async with served_cloud() as cloud:
        first = await start_run(cloud, tmp_path, "--log", str(log))
        with trio.fail_after(120):
            await first.until(_is("exec.prompt_submitted"))
        first.process.send_signal(signal.SIGKILL)
        await first.process.wait()
        (ours,) = cloud.runcomfy.running()
        records = list(eventlog.read(log, Event))
        intent = next(r for r in records if isinstance(r.event, ev.MachineLaunchRequested))
        _cut_into(log, intent.seq + 1, 0)
        body = {
            "workflow_version_id": VERSION,
            "server_type": intent.event.server_type,
            "estimated_duration": intent.event.estimated_duration,
        }
        theirs = cloud.runcomfy._launch(json.dumps(body).encode())["server_id"]
        second = await start_run(cloud, tmp_path, "--resume", str(log))
        with trio.fail_after(240):
            await second.until(_is("run.summary"))
            for sid in (ours, theirs):  # named after the summary, with its server id
                await second.until(
                    lambda x, sid=sid: x.get("type") == "run.warning" and x.get("server_id") == sid
                )
            code = await second.finish()
        assert {ours, theirs} <= set(cloud.runcomfy.running())  # neither stopped
    err = second.stderr.decode()
    assert code == 0, err
    assert err.count("all match it; adopting none") == 1, err
    (failed,) = [x for x in second.lines if x.get("type") == "machine.launch_failed"]
    assert failed["request_key"] == intent.event.request_key
    assert failed["reason"].startswith("2 servers matched; not provably ours")
    notes = [x for x in err.splitlines() if x.startswith("note: RunComfy lists a machine")]
    for sid in (ours, theirs):
        assert any(f"machine down --server-id {sid}" in x for x in notes), err
