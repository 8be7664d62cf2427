"""A submission's 201 waits for its own durable append, not for the work of running jobs."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
import trio
from extras_support import open_extras_service, wait_for

from conjure_actors.domain import service_events as se
from conjure_actors.service.blobs import BlobStore

WORKFLOWS = Path(__file__).resolve().parents[2] / "conjure_actors" / "workflows"


@pytest.mark.slow
async def test_201_does_not_wait_for_another_jobs_output_becoming_an_asset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a finished job's output is still being copied into the blob store, a new
    submission is answered 201; the output becomes an asset once the copy ends."""
    gate = threading.Event()
    put_file = BlobStore.put_file

    def held(self: BlobStore, path: Any) -> Any:
        gate.wait(timeout=60)
        return put_file(self, path)

    monkeypatch.setattr(BlobStore, "put_file", held)
    with trio.fail_after(60):
        try:
            await _submit_while_an_output_is_held(tmp_path, gate)
        finally:
            gate.set()


async def _submit_while_an_output_is_held(tmp_path: Path, gate: threading.Event) -> None:
    graph = json.loads((WORKFLOWS / "invert_save.json").read_text())
    async with open_extras_service(tmp_path) as run:
        first = await run.client.post("/api/v2/jobs", json={"workflow": graph})
        job_id = first.json()["id"]
        await wait_for(run.service, lambda s: bool(s.jobs[job_id].outputs))
        with trio.fail_after(10):
            second = await run.client.post("/api/v2/jobs", json={"workflow": graph})
        assert second.status_code == 201, second.text
        assert not run.service.state.service.job_outputs.get(job_id)
        gate.set()
        await wait_for(run.service, lambda s: bool(s.service.job_outputs.get(job_id)))
        other = second.json()["id"]
        await wait_for(run.service, lambda s: bool(s.service.job_outputs.get(other)))


async def test_a_v2_submission_walks_its_graph_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, autojump_clock: Any
) -> None:
    """The handler validates the graph against the catalogue; the runtime, with nothing to
    bind, does not validate it a second time (bindings_for), and the job runs as before."""
    import conjure_actors.actors.conjure as conjure_module

    calls: list[str] = []
    bindings_for = conjure_module.bindings_for

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append("bindings_for")
        return bindings_for(*args, **kwargs)

    monkeypatch.setattr(conjure_module, "bindings_for", counted)
    graph = json.loads((WORKFLOWS / "invert_save.json").read_text())
    with trio.fail_after(600):
        async with open_extras_service(tmp_path) as run:
            answer = await run.client.post("/api/v2/jobs", json={"workflow": graph})
            assert answer.status_code == 201, answer.text
            job_id = answer.json()["id"]
            await wait_for(run.service, lambda s: s.jobs[job_id].status == "succeeded")
            assert run.service.state.jobs[job_id].bindings == {}
    assert calls == []


@pytest.mark.parametrize(
    "body",
    [
        # NaN, which Python's json module accepts: the body is strict JSON.
        b'{"workflow": {"1": {"class_type": "EmptyImage", "inputs": {"width": NaN}}}}',
        # 3000 nested arrays: the decoder's RecursionError was a 500 upstream_error,
        # blaming the upstream for the client's input (found by review).
        b'{"workflow": {"1": ' + b"[" * 3000 + b"]" * 3000 + b"}}",
    ],
    ids=["nan", "nested-3000-deep"],
)
async def test_a_body_that_is_not_strict_json_is_refused(
    tmp_path: Path, autojump_clock: Any, body: bytes
) -> None:
    """A body that is not strict JSON (NaN, nesting too deep to decode) is 400
    ``invalid_request``, and no job is recorded."""
    with trio.fail_after(600):
        async with open_extras_service(tmp_path) as run:
            answer = await _post_raw(run, body)
            assert answer.status_code == 400, answer.text
            assert answer.json()["error"]["code"] == "invalid_request"
            assert not run.service.state.jobs


async def test_a_body_with_a_utf8_bom_is_accepted(tmp_path: Path, autojump_clock: Any) -> None:
    """A UTF-8 BOM before the JSON (Windows tools write one) is ignored, as json.loads did
    and the other JSON endpoints (budget, estimate, assets) do; RFC 8259 allows it (found
    by review: the msgspec decoder refused it)."""
    graph = json.loads((WORKFLOWS / "invert_save.json").read_text())
    body = b"\xef\xbb\xbf" + json.dumps({"workflow": graph}).encode()
    with trio.fail_after(600):
        async with open_extras_service(tmp_path) as run:
            answer = await _post_raw(run, body)
            assert answer.status_code == 201, answer.text


async def _post_raw(run: Any, body: bytes) -> Any:
    """POST ``body`` as it is to /api/v2/jobs, as application/json."""
    return await run.client.post(
        "/api/v2/jobs", content=body, headers={"Content-Type": "application/json"}
    )


@pytest.mark.slow
async def test_concurrent_submissions_share_their_appends(
    tmp_path: Path, autojump_clock: Any
) -> None:
    """20 submissions in flight at once are made durable in a few shared commits (group
    commit), not one commit (fsync) each; every one is durable before its 201."""
    graph = json.loads((WORKFLOWS / "invert_save.json").read_text())
    commits: list[int] = []
    answers: list[Any] = []
    with trio.fail_after(600):
        async with open_extras_service(tmp_path) as run:

            def on_records(records: list[Any]) -> None:
                accepted = [r for r in records if isinstance(r.event, se.ApiJobAccepted)]
                if accepted:
                    commits.append(len(accepted))

            async def submit() -> None:
                answer = await run.client.post("/api/v2/jobs", json={"workflow": graph})
                assert run.service.state.service.api_jobs[answer.json()["id"]]
                answers.append(answer)

            with run.service.journal.listen(on_records):
                async with trio.open_nursery() as nursery:
                    for _ in range(20):
                        nursery.start_soon(submit)
    assert [a.status_code for a in answers] == [201] * 20
    assert sum(commits) == 20
    assert len(commits) <= 3, commits
