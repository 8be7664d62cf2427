"""The AssetActor stops (a crash and restart, or for good) while submissions wait on it:
each waiting request is answered at once with a 503 to retry (nothing was logged for it),
never a 500 or a wait for its 60 s, and the log holds each submission whole or not at all
(found by review)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from extras_support import hold_submissions, open_extras_service, png

from conjure_actors.actors.assets import AssetActor, SweepNow
from conjure_actors.service.errors import ApiError

WORKFLOWS = Path(__file__).resolve().parents[2] / "conjure_actors" / "workflows"


class _Crash:
    """A message the patched AssetActor crashes on."""


@pytest.fixture
def crashable(monkeypatch: pytest.MonkeyPatch) -> None:
    receive = AssetActor.receive

    async def crashing(self: AssetActor, msg: Any) -> Any:
        if isinstance(msg, _Crash):
            raise RuntimeError("injected AssetActor crash")
        return await receive(self, msg)

    monkeypatch.setattr(AssetActor, "receive", crashing)


def _graph() -> dict[str, Any]:
    graph: dict[str, Any] = json.loads((WORKFLOWS / "invert_save.json").read_text())
    return graph


async def _submit(service: Any, key: str, answers: dict[str, tuple[float, str]]) -> None:
    started = trio.current_time()
    try:
        await service.submit_job(_graph(), idempotency_key=key)
        answer = "201"
    except ApiError as exc:
        answer = f"{exc.status} {exc.code}"
    answers[key] = (trio.current_time() - started, answer)


async def _crash_while_held(
    service: Any,
    held: tuple[str, ...],
    after: tuple[str, ...],
    answers: dict[str, tuple[float, str]],
) -> None:
    """Submit ``held`` while the disk holds their appends (the first waits on it, the others
    behind it), crash the AssetActor, submit ``after`` (for the next incarnation), then let
    the disk go and wait for every answer."""
    release = hold_submissions(service)
    async with trio.open_nursery() as nursery:
        for key in held:
            nursery.start_soon(_submit, service, key, answers)
            await trio.sleep(0.001)
        await service.assets.tell(_Crash())
        for key in after:
            nursery.start_soon(_submit, service, key, answers)
        await trio.sleep(0.01)
        release.set()


async def test_a_crash_answers_the_submissions_it_held_503_at_once(
    tmp_path: Path, autojump_clock: Any, crashable: None
) -> None:
    answers: dict[str, tuple[float, str]] = {}
    with trio.fail_after(3600):
        async with open_extras_service(tmp_path) as run:
            await _crash_while_held(run.service, ("k1", "k2", "k3"), (), answers)
    assert {key: answer for key, (_, answer) in answers.items()} == dict.fromkeys(
        ("k1", "k2", "k3"), "503 unavailable"
    )
    assert max(took for took, _ in answers.values()) < 1


@pytest.mark.slow  # ~0.3 s or more: the inner loop runs without it, CI with it
async def test_a_submission_queued_behind_a_crash_is_taken_by_the_restarted_actor(
    tmp_path: Path, autojump_clock: Any, crashable: None
) -> None:
    answers: dict[str, tuple[float, str]] = {}
    with trio.fail_after(3600):
        async with open_extras_service(tmp_path) as run:
            await run.service.assets.tell(_Crash())
            await _submit(run.service, "k1", answers)
            await trio.sleep(600)
            statuses = [job.status for job in run.service.state.jobs.values()]
    assert answers["k1"][1] == "201"
    assert statuses == ["succeeded"]


async def test_after_a_crash_the_log_holds_each_submission_whole_or_not_at_all(
    tmp_path: Path, autojump_clock: Any, crashable: None
) -> None:
    answers: dict[str, tuple[float, str]] = {}
    with trio.fail_after(3600):
        async with open_extras_service(tmp_path) as run:
            await _crash_while_held(run.service, ("k1", "k2"), ("k3",), answers)
            state = run.service.state
    claimed = {claim.split(":", 1)[-1] for claim in state.service.idempotency}
    accepted = {api.idempotency_key for api in state.service.api_jobs.values()}
    assert claimed == accepted == {key for key, (_, a) in answers.items() if a == "201"}
    assert set(state.service.api_jobs) == set(state.jobs)


async def test_a_submission_left_in_the_mailbox_of_a_stopped_actor_is_answered_503(
    tmp_path: Path, autojump_clock: Any
) -> None:
    answers: dict[str, tuple[float, str]] = {}
    with trio.fail_after(3600):
        async with open_extras_service(tmp_path) as run:
            release = hold_submissions(run.service)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_submit, run.service, "k1", answers)  # waits on the disk
                await trio.sleep(0.001)
                await run.service.assets.tell(SweepNow())  # the actor waits for k1's append
                nursery.start_soon(_submit, run.service, "k2", answers)  # in the mailbox
                await trio.sleep(0.001)
                await run.service.conjure.system.stop(run.service.assets)
                release.set()
    took, answer = answers["k2"]
    assert answer == "503 unavailable"
    assert took < 10


def _client(app: Any) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8189")


async def test_a_cancel_waiting_on_a_stopping_asset_actor_is_answered_503(
    tmp_path: Path, autojump_clock: Any
) -> None:
    """The same answer as a submission's, not a 500 (found by review)."""
    with trio.fail_after(3600):
        async with open_extras_service(tmp_path) as run:
            first = await run.client.post("/api/v2/jobs", json={"workflow": _graph()})
            job_id = first.json()["id"]
            release = hold_submissions(run.service)
            answers: dict[str, httpx.Response] = {}

            async def submit() -> None:
                body = {"workflow": _graph()}
                answers["submit"] = await run.client.post("/api/v2/jobs", json=body)

            async def cancel() -> None:
                async with _client(run.app) as client:
                    answers["cancel"] = await client.post(f"/api/v2/jobs/{job_id}/cancel")

            async with trio.open_nursery() as nursery:
                nursery.start_soon(submit)  # its append is held
                await trio.sleep(0.001)
                nursery.start_soon(cancel)  # waits for the append before deciding
                await trio.sleep(0.001)
                await run.service.conjure.system.stop(run.service.assets)
                release.set()
    answer = answers["cancel"]
    assert (answer.status_code, answer.json()["error"]["code"]) == (503, "unavailable")
    assert answer.headers["retry-after"]


async def test_an_upload_to_a_stopped_asset_actor_is_answered_503(
    tmp_path: Path, autojump_clock: Any
) -> None:
    with trio.fail_after(3600):
        async with open_extras_service(tmp_path) as run:
            await run.service.conjure.system.stop(run.service.assets)
            async with _client(run.app) as client:
                answer = await client.post(
                    "/api/v2/assets",
                    files={"file": ("a.png", png(), "image/png")},
                    data={"content_type": "image/png", "file_path": "a.png"},
                )
    assert (answer.status_code, answer.json()["error"]["code"]) == (503, "unavailable")
