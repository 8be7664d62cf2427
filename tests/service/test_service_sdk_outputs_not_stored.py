"""comfy-sdk against ``serve``: a job whose output the blob store refused reads failed
(``outputs_not_stored``) to the SDK, and still does after ``serve`` restarts on the same log
with the store writable again (it read succeeded then, before the decision was logged)."""

from __future__ import annotations

import errno
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio
from service_helpers import in_thread, serving, workflow
from test_service_blobs_unwritable import refuse_writes

from conjure_actors.actors import assets as assets_actor

pytestmark = pytest.mark.slow


async def test_the_sdk_reads_a_job_failed_for_outputs_not_stored_the_same_after_a_restart(
    sim_config: Any, tmp_path: Path, sdk: Callable[[str], Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """result() raises JobFailed with outputs_not_stored; after a restart on a fixed store
    the SDK's job is failed with the same error and no outputs, and the list says failed."""
    from comfy_sdk.exceptions import JobFailed

    monkeypatch.setattr(assets_actor, "STORE_RETRY_DELAY", 0.05)  # given up in 0.15 s
    async with serving(sim_config, tmp_path) as served:
        refuse_writes(monkeypatch, served.service.blobs.root, errno.EACCES)

        def run_it() -> Any:
            with sdk(served.url) as client:
                job = client.submit(client.workflows.from_json(workflow("invert_save.json")))
                with pytest.raises(JobFailed):
                    job.result()
                return job

        with trio.fail_after(60):
            before = await in_thread(run_it)
    monkeypatch.undo()  # the store takes writes again
    monkeypatch.setattr(assets_actor, "STORE_RETRY_DELAY", 0.05)
    async with serving(sim_config, tmp_path) as served:

        def read_it() -> tuple[Any, list[str]]:
            with sdk(served.url) as client:
                job = client.jobs.get(before.id)
                listed = [j.status for j in client.list_jobs() if j.id == before.id]
                return job, listed

        with trio.fail_after(60):
            after, listed = await in_thread(read_it)
    assert before.status == "failed"
    assert before.error.code == "outputs_not_stored"
    assert "Permission denied" in before.error.message
    assert after.status == "failed"
    assert (after.error.code, after.error.message) == (before.error.code, before.error.message)
    assert after.outputs == []
    assert listed == ["failed"]
