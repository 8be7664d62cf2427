"""``GET /api/conjure/events``: one SSE stream follows many jobs (a browser page opens 6
connections to serve at most: one stream per job hung a page with 7 live jobs; QA6 F10)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from extras_support import open_extras_service, sse_events, wait_for, wait_idle
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as hs
from streams_support import by_job, read_stream

from conjure_actors.actors.assets import Retention
from conjure_actors.config import Config
from conjure_actors.domain import state as st
from conjure_actors.service import streams
from conjure_actors.service.app import Settings
from conjure_actors.service.v2_jobs import api_status
from conjure_actors.sim.timings import ComfyTimings

WORKFLOWS = Path(__file__).resolve().parents[2] / "conjure_actors" / "workflows"
TERMINAL = {"succeeded", "failed", "canceled", "expired"}
EXAMPLES = 200 if os.environ.get("HYPOTHESIS_PROFILE") == "fuzz" else 8


def comparable(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` as a frame of either stream has it: whole, ``expires_at`` included (a job
    whose end is not logged yet expired a retention from the moment its view was built, so
    two streams, built microseconds apart, differed: it is its end + the retention now)."""
    return data


def without_job_id(name: str, data: dict[str, Any]) -> dict[str, Any]:
    """A frame's payload as the per-job stream sends it (an ``output`` has its ``job_id``)."""
    return data if name == "output" else {k: v for k, v in data.items() if k != "job_id"}


def graph(name: str = "invert_save.json") -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((WORKFLOWS / name).read_text())
    return loaded


async def submit(
    run: Any, labels: dict[str, str] | None = None, name: str = "invert_save.json"
) -> str:
    body: dict[str, Any] = {"workflow": graph(name)}
    if labels is not None:
        body["metadata"] = labels
    answer = await run.client.post("/api/v2/jobs", json=body)
    assert answer.status_code == 201, answer.text
    job_id: str = answer.json()["id"]
    return job_id


def served(*ids: str, status: str = "succeeded") -> Any:
    """A ``wait_for`` predicate: every job of ``ids`` reads ``status`` in the API."""

    def check(state: Any) -> bool:
        svc = state.service
        return all(api_status(state.jobs[j], svc.api_jobs.get(j), svc) == status for j in ids)

    return check


def machines_at_most(n: int) -> Config:
    config = Config()
    return attrs.evolve(config, pool=attrs.evolve(config.pool, max_machines=n))


def one_machine() -> Config:
    return machines_at_most(1)


@pytest.mark.slow  # (just test <= 30 s: CI and just check run it)
async def test_many_jobs_on_one_stream_reach_their_terminal_status_with_their_outputs(
    tmp_path: Path, autojump_clock: Any
) -> None:
    """Eight jobs on one ``?job=`` stream: each ends with its full terminal status, its
    outputs sent as they became assets, every frame naming its job."""
    with trio.fail_after(3600):
        async with open_extras_service(tmp_path) as run:
            ids = [await submit(run) for _ in range(8)]
            query = "&".join(f"job={job_id}" for job_id in ids)
            got = await read_stream(run.app, f"/api/conjure/events?{query}")
            polled = {j: (await run.client.get(f"/api/v2/jobs/{j}")).json() for j in ids}
    frames = by_job(got)
    assert set(frames) == set(ids)
    for job_id in ids:
        name, last = frames[job_id][-1]
        assert (name, last["status"]) == ("status", "succeeded"), frames[job_id]
        assert last["id"] == job_id
        assert {o["id"] for o in last["outputs"]} == {o["id"] for o in polled[job_id]["outputs"]}
        sent = [d["id"] for n, d in frames[job_id] if n == "output"]
        assert sorted(sent) == sorted(o["id"] for o in polled[job_id]["outputs"])
        assert sum(1 for n, d in frames[job_id] if n == "status" and d["status"] in TERMINAL) == 1


async def test_a_job_submitted_after_the_stream_opened_with_its_label_is_followed(
    tmp_path: Path, autojump_clock: Any
) -> None:
    """A ``metadata[tab]=3`` stream follows the tab's job from before it opened and the one
    submitted after, to their ends, and nothing of another tab's job."""
    leave = trio.Event()
    opened = trio.Event()
    got: list[Any] = []
    with trio.fail_after(3600):
        async with open_extras_service(tmp_path) as run:
            before = await submit(run, {"tab": "3"})

            async def watch() -> None:
                got.extend(
                    await read_stream(
                        run.app,
                        "/api/conjure/events?metadata%5Btab%5D=3",
                        leave=leave,
                        opened=opened,
                    )
                )

            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch)
                await opened.wait()
                after = await submit(run, {"tab": "3", "user": "x"})
                other = await submit(run, {"tab": "4"})
                await wait_idle(run.service)
                await trio.testing.wait_all_tasks_blocked()  # the stream's turn
                leave.set()
    frames = by_job(got)
    assert set(frames) == {before, after}, frames.keys()
    assert other not in frames
    for job_id in (before, after):
        assert frames[job_id][-1][1]["status"] == "succeeded", frames[job_id]
    assert frames[after][0][0] == "status"  # its snapshot first


async def test_a_label_stream_stays_open_after_its_jobs_ended(
    tmp_path: Path, autojump_clock: Any
) -> None:
    """With ``metadata`` the stream outlives the jobs it followed (a page's next job is
    followed too) until the client leaves; then its slot of ``max_streams`` is free."""
    leave = trio.Event()
    opened = trio.Event()
    ended = trio.Event()
    with trio.fail_after(3600):
        async with open_extras_service(tmp_path) as run:
            job_id = await submit(run, {"tab": "1"})

            async def watch() -> None:
                await read_stream(
                    run.app, "/api/conjure/events?metadata%5Btab%5D=1", leave=leave, opened=opened
                )
                ended.set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch)
                await opened.wait()
                await wait_for(run.service, lambda s: s.jobs[job_id].status == st.SUCCEEDED)
                await trio.sleep(60)  # long after: still open
                assert not ended.is_set()
                assert run.service.open_streams == 1
                leave.set()
            assert run.service.open_streams == 0


@pytest.mark.slow  # (just test <= 30 s: CI and just check run it)
async def test_a_job_id_stream_ends_after_the_last_of_its_jobs_ended(
    tmp_path: Path, autojump_clock: Any
) -> None:
    """``?job=a&job=b``: the stream ends right after the later job's terminal status, not
    at the first one's."""
    with trio.fail_after(3600):
        async with open_extras_service(tmp_path, comfy=ComfyTimings(scale=100)) as run:
            quick = await submit(run)
            slow = await submit(run, name="slow_blur_chain.json")
            got = await read_stream(run.app, f"/api/conjure/events?job={quick}&job={slow}")
            ended_at = trio.current_time()
            finished = {j: run.service.state.jobs[j].finished_at for j in (quick, slow)}
    assert finished[slow] > finished[quick]
    at, name, data = got[-1]
    assert (name, data["job_id"], data["status"]) == ("status", slow, "succeeded")
    assert ended_at - at < 1


async def test_a_stream_of_jobs_that_all_ended_sends_their_snapshots_and_ends(
    tmp_path: Path, autojump_clock: Any
) -> None:
    """Jobs already ended: their full terminal status each, then the stream ends."""
    with trio.fail_after(3600):
        async with open_extras_service(tmp_path) as run:
            ids = [await submit(run) for _ in range(2)]
            await wait_for(run.service, served(*ids))
            got = await sse_events(run.app, f"/api/conjure/events?job={ids[0]}&job={ids[1]}")
    statuses = [(d["job_id"], d["status"]) for _, n, d in got if n == "status"]
    assert statuses == [(ids[0], "succeeded"), (ids[1], "succeeded")]


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("", "invalid_request"),
        ("?tab=3", "invalid_request"),
        ("?job=", "invalid_request"),
        ("?" + "&".join(f"job=j{i}" for i in range(streams.MAX_JOB_IDS + 1)), "invalid_request"),
        ("?metadata%5B%5D=x", "invalid_metadata_filter"),
    ],
)
async def test_a_stream_asked_without_a_valid_choice_of_jobs_is_refused(
    tmp_path: Path, autojump_clock: Any, query: str, code: str
) -> None:
    """No ``job`` nor ``metadata``, an unknown parameter, an empty id, too many ids or an
    empty label key: refused in the error envelope, in one line."""
    async with open_extras_service(tmp_path) as run:
        answer = await run.client.get(f"/api/conjure/events{query}")
        assert answer.status_code in (400, 422), answer.text
        error = answer.json()["error"]
        assert error["code"] == code
        assert "\n" not in error["message"]
        assert run.service.open_streams == 0


async def test_a_stream_naming_an_unknown_job_is_404(tmp_path: Path, autojump_clock: Any) -> None:
    """An unknown id among known ones: 404 ``not_found`` naming it, no stream opened."""
    async with open_extras_service(tmp_path) as run:
        known = await submit(run)
        answer = await run.client.get(f"/api/conjure/events?job={known}&job=nope")
        assert answer.status_code == 404, answer.text
        assert answer.json()["error"]["code"] == "not_found"
        assert "nope" in answer.json()["error"]["message"]
        assert run.service.open_streams == 0


async def test_an_expired_job_is_404_by_id_and_left_out_of_a_label_stream(
    tmp_path: Path, autojump_clock: Any
) -> None:
    """A job past its retention: ``job=`` it is 404, as its own stream is; a label stream
    that matches it sends only the jobs still kept."""
    settings = Settings(retention=Retention(jobs=60.0, assets=60.0))
    with trio.fail_after(3600):
        async with open_extras_service(tmp_path, settings=settings) as run:
            old = await submit(run, {"tab": "1"})
            await wait_for(run.service, served(old))
            await trio.sleep(61)  # past its retention
            kept = await submit(run, {"tab": "1"})
            by_id = await run.client.get(f"/api/conjure/events?job={old}")
            own = await run.client.get(f"/api/v2/jobs/{old}/events")
            leave = trio.Event()
            opened = trio.Event()
            got: list[Any] = []

            async def watch() -> None:
                got.extend(
                    await read_stream(
                        run.app,
                        "/api/conjure/events?metadata%5Btab%5D=1",
                        leave=leave,
                        opened=opened,
                    )
                )

            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch)
                await opened.wait()
                await wait_for(run.service, served(kept))
                await trio.testing.wait_all_tasks_blocked()
                leave.set()
    assert (by_id.status_code, own.status_code) == (404, 404)
    assert by_id.json()["error"]["code"] == "not_found"
    assert set(by_job(got)) == {kept}


async def test_a_stream_of_many_jobs_takes_one_slot_of_max_streams(
    tmp_path: Path, autojump_clock: Any
) -> None:
    """With ``max_streams=1``, a stream following three jobs is the one stream: a second is
    429 ``too_many_streams``; once it ends the slot is free again."""
    with trio.fail_after(3600):
        async with open_extras_service(tmp_path, settings=Settings(max_streams=1)) as run:
            ids = [await submit(run, {"tab": "1"}) for _ in range(3)]
            leave = trio.Event()
            opened = trio.Event()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(
                    lambda: read_stream(
                        run.app,
                        "/api/conjure/events?metadata%5Btab%5D=1",
                        leave=leave,
                        opened=opened,
                    )
                )
                await opened.wait()
                assert run.service.open_streams == 1
                second = await run.client.get(f"/api/conjure/events?job={ids[0]}")
                per_job = await run.client.get(f"/api/v2/jobs/{ids[0]}/events")
                leave.set()
            assert second.status_code == 429
            assert second.json()["error"]["code"] == "too_many_streams"
            assert per_job.status_code == 429
            assert run.service.open_streams == 0
            await wait_for(run.service, served(ids[0]))
            again = await sse_events(run.app, f"/api/conjure/events?job={ids[0]}")
    assert [d["status"] for _, n, d in again if n == "status"] == ["succeeded"]


async def test_a_followed_queued_job_gets_each_new_queue_position(
    tmp_path: Path, autojump_clock: Any
) -> None:
    """One machine, four jobs on one stream: the last one's frames say 3, 2, 1 as those
    before it are canceled, as its own stream would."""
    with trio.fail_after(3600):
        async with open_extras_service(
            tmp_path, config=one_machine(), comfy=ComfyTimings(scale=100)
        ) as run:
            ids = []
            for _ in range(4):
                ids.append(await submit(run, name="slow_blur_chain.json"))
                await trio.sleep(0.01)  # submitted at distinct times: the queue's order
            await wait_for(run.service, lambda s: s.jobs[ids[0]].status == st.RUNNING)
            got: list[Any] = []
            opened = trio.Event()

            async def watch() -> None:
                query = "&".join(f"job={j}" for j in ids)
                got.extend(
                    await read_stream(run.app, f"/api/conjure/events?{query}", opened=opened)
                )

            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch)
                await opened.wait()
                await trio.testing.wait_all_tasks_blocked()
                for job_id in ids[1:3]:
                    await run.client.post(f"/api/v2/jobs/{job_id}/cancel")
                    await wait_for(
                        run.service, lambda s, j=job_id: s.jobs[j].status == st.CANCELLED
                    )
                    await trio.testing.wait_all_tasks_blocked()
                await run.client.post(f"/api/v2/jobs/{ids[0]}/cancel")
                await wait_for(run.service, lambda s: s.jobs[ids[-1]].status == st.RUNNING)
                await trio.testing.wait_all_tasks_blocked()
                await run.client.post(f"/api/v2/jobs/{ids[-1]}/cancel")
    last = [(d["status"], d["queue_position"]) for n, d in by_job(got)[ids[-1]] if n == "status"]
    assert last[:4] == [("queued", 3), ("queued", 2), ("queued", 1), ("running", None)], last
    assert last[-1][0] == "canceled"


async def test_a_commit_about_one_job_views_only_that_job(
    tmp_path: Path, autojump_clock: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Thirty jobs followed, one running on the only machine: while it runs (its progress
    commits) the stream builds the view of that job only, never of the 29 waiting."""
    viewed: list[str] = []
    real = streams.job_view

    def counted(request: Any, service: Any, job_id: str) -> Any:
        viewed.append(job_id)
        return real(request, service, job_id)

    monkeypatch.setattr(streams, "job_view", counted)
    with trio.fail_after(3600):
        async with open_extras_service(
            tmp_path, config=one_machine(), comfy=ComfyTimings(scale=100)
        ) as run:
            ids = [await submit(run, {"tab": "1"}, name="slow_blur_chain.json") for _ in range(30)]
            await wait_for(run.service, lambda s: s.jobs[ids[0]].status == st.RUNNING)
            leave = trio.Event()
            opened = trio.Event()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(
                    lambda: read_stream(
                        run.app,
                        "/api/conjure/events?metadata%5Btab%5D=1",
                        leave=leave,
                        opened=opened,
                    )
                )
                await opened.wait()
                await trio.testing.wait_all_tasks_blocked()
                snapshot = len(viewed)
                await wait_for(run.service, lambda s: s.jobs[ids[0]].prompt_id is not None)
                await wait_for(run.service, lambda s: s.jobs[ids[0]].status == st.SUCCEEDED)
                leave.set()
    assert snapshot == 30
    assert set(viewed[snapshot:]) == {ids[0]}, set(viewed[snapshot:])
    assert len(viewed) - snapshot > 3  # it did look at the running job as it ran


async def test_a_label_stream_ends_with_each_jobs_status_when_serving_stops(
    tmp_path: Path, autojump_clock: Any
) -> None:
    """Serving stops while a followed job runs and another waits: the stream ends with the
    status each is left in (``queued``: they run at the next start), as the per-job one."""
    got: list[Any] = []
    with trio.fail_after(3600):
        async with open_extras_service(
            tmp_path, config=one_machine(), comfy=ComfyTimings(scale=100)
        ) as run:
            ids = [await submit(run, {"tab": "1"}, name="slow_blur_chain.json") for _ in range(2)]
            await wait_for(run.service, lambda s: s.jobs[ids[0]].status == st.RUNNING)
            opened = trio.Event()

            async def watch() -> None:
                got.extend(
                    await read_stream(
                        run.app, "/api/conjure/events?metadata%5Btab%5D=1", opened=opened
                    )
                )

            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch)
                await opened.wait()
                await run.service.conjure.shutdown("interrupted")  # no drain: cut short
                run.service.stopping.set()
    frames = by_job(got)
    for job_id in ids:
        assert frames[job_id][-1] == (
            "status",
            {
                "job_id": job_id,
                "status": "queued",
                "queue_position": frames[job_id][-1][1]["queue_position"],
            },
        ), frames[job_id]
    assert got[-1][1] == "status"


plans = hs.lists(
    hs.tuples(
        hs.sampled_from(["invert_save.json", "slow_blur_chain.json"]),
        hs.none() | hs.floats(0.0, 3.0),  # canceled this long after the streams opened
    ),
    min_size=1,
    max_size=4,
)


@pytest.mark.slow
@settings(max_examples=EXAMPLES, suppress_health_check=list(HealthCheck))
@example(plan=[("slow_blur_chain.json", None)] * 4, machines=1, opened_after=0.0)
@given(plan=plans, machines=hs.sampled_from([1, 3]), opened_after=hs.sampled_from([0.0, 0.5, 2.0]))
async def test_for_any_jobs_each_jobs_frames_are_its_own_streams_with_its_id(
    tmp_path_factory: pytest.TempPathFactory,
    autojump_clock: Any,
    plan: list[tuple[str, float | None]],
    machines: int,
    opened_after: float,
) -> None:
    """Any few jobs (quick or slow, on one machine or several, some canceled as they wait or
    run), followed by one stream and each by its own, opened together after they were
    submitted: per job, the same frames but previews, with ``job_id`` added."""
    tmp_path = tmp_path_factory.mktemp("streams")
    mine: list[Any] = []
    theirs: dict[str, list[Any]] = {}
    with trio.fail_after(3600):
        async with open_extras_service(
            tmp_path, config=machines_at_most(machines), comfy=ComfyTimings(scale=20)
        ) as run:
            ids = [await submit(run, name=name) for name, _ in plan]
            await trio.sleep(opened_after)

            async def own(job_id: str) -> None:
                theirs[job_id] = await sse_events(run.app, f"/api/v2/jobs/{job_id}/events")

            async def many() -> None:
                query = "&".join(f"job={j}" for j in ids)
                mine.extend(await read_stream(run.app, f"/api/conjure/events?{query}"))

            async def cancel(job_id: str, after: float) -> None:
                # Once every stream took its snapshot (opening takes no time on this clock):
                # a cancel at 0 landed between two streams' snapshots, one saw the job
                # queued, the other canceling, and their frames differed by that alone.
                await trio.sleep(after + 0.001)
                await run.client.post(f"/api/v2/jobs/{job_id}/cancel")

            async with trio.open_nursery() as nursery:
                for job_id in ids:
                    nursery.start_soon(own, job_id)
                nursery.start_soon(many)
                for job_id, (_, after) in zip(ids, plan, strict=True):
                    if after is not None:
                        nursery.start_soon(cancel, job_id, after)
    frames = by_job(mine)
    for job_id in ids:
        want = [(n, comparable(d)) for _, n, d in theirs[job_id] if n != "preview"]
        got = [(n, comparable(without_job_id(n, d))) for n, d in frames[job_id]]
        assert got == want, job_id
