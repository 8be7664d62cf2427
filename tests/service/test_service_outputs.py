"""A job's outputs become assets; a small output whose bytes are stored already is recorded
by the AssetActor itself, without a worker thread's copy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio
from extras_support import open_extras_service, wait_for

from conjure_actors.service.blobs import BlobStore

WORKFLOWS = Path(__file__).resolve().parents[2] / "conjure_actors" / "workflows"


async def test_a_small_output_already_stored_is_recorded_without_a_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, autojump_clock: Any
) -> None:
    """Two jobs saving the same small output: put_file (a copy in a worker thread) runs for
    the first only; both outputs become assets over the one blob."""
    calls: list[str] = []
    put_file = BlobStore.put_file

    def counted(self: BlobStore, path: Any) -> Any:
        calls.append(str(path))
        return put_file(self, path)

    monkeypatch.setattr(BlobStore, "put_file", counted)
    graph = json.loads((WORKFLOWS / "invert_save.json").read_text())
    with trio.fail_after(600):
        async with open_extras_service(tmp_path) as run:
            ids = []
            for _ in range(2):
                answer = await run.client.post("/api/v2/jobs", json={"workflow": graph})
                assert answer.status_code == 201, answer.text
                ids.append(answer.json()["id"])
                job_id = ids[-1]
                await wait_for(run.service, lambda s, j=job_id: bool(s.service.job_outputs.get(j)))
            svc = run.service.state.service
            hashes = {svc.assets[a].hash for j in ids for a in svc.job_outputs[j].values()}
    assert len(calls) == 1
    assert len(hashes) == 1
