"""CONJURE's extras under /api/conjure/ (and the health probe), over the ASGI app in memory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from extras_support import open_extras_service, png, wait_for, wait_idle

from conjure_actors.domain import state as st
from conjure_actors.domain.prices import default_price_table, estimate_job_cost
from conjure_actors.service.extras import DEFAULT_JOB_SECONDS, cold_overheads

PROMPT = "a carved wooden fox"


async def test_health_answers_ok(tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    """GET /api/v2/health is 200 ``ok`` with the version."""
    async with open_extras_service(tmp_path) as run:
        r = await run.client.get("/api/v2/health")
    assert r.status_code == 200
    assert r.json()["status"] == "ok"


async def test_mode_on_the_simulated_cloud(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """The mode says simulated, no ComfyUI URL, and that the (simulated) RunComfy answers."""
    async with open_extras_service(tmp_path) as run:
        r = await run.client.get("/api/conjure/mode")
    body = r.json()
    assert r.status_code == 200
    assert body["mode"] == "simulated"
    assert body["comfyui_url"] is None
    assert body["runcomfy"]["used"] is True
    assert body["runcomfy"]["answers"] is True


@pytest.mark.slow
async def test_post_conjure_job_returns_the_v2_job_and_runs_it(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Multipart image + prompt: 201 with the v2 job object; the job runs to success."""
    async with open_extras_service(tmp_path) as run:
        r = await run.client.post(
            "/api/conjure/jobs",
            files={"image": ("sketch.png", png(), "image/png")},
            data={"prompt": PROMPT},
        )
        assert r.status_code == 201, r.text
        job = r.json()
        assert job["status"] == "queued"
        assert job["urls"]["self"] == f"/api/v2/jobs/{job['id']}"
        assert run.service.state.jobs[job["id"]].prompt == PROMPT
        await wait_idle(run.service)
        assert run.service.state.jobs[job["id"]].status == st.SUCCEEDED


async def test_post_conjure_job_applies_set_overrides(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """``set`` fields in ``--set`` form reach the job's bindings."""
    async with open_extras_service(tmp_path) as run:
        graph = run.service  # the bundled CONJURE workflow: find a KSampler's node id
        from conjure_actors.actors.example import bundled_workflow
        from conjure_actors.domain.workflow import workflow_from_text

        wf = workflow_from_text(bundled_workflow().decode())
        sampler = next(n for n, node in wf.graph.items() if node["class_type"] == "KSampler")
        r = await run.client.post(
            "/api/conjure/jobs",
            files={"image": ("sketch.png", png(), "image/png")},
            data={"prompt": PROMPT, "set": [f"{sampler}.steps=3"]},
        )
        assert r.status_code == 201, r.text
        bindings = graph.state.jobs[r.json()["id"]].bindings
        assert bindings[f"{sampler}.steps"] == "3"


@pytest.mark.parametrize(
    ("files", "data", "code"),
    [
        (None, {"prompt": PROMPT}, "invalid_request"),  # no image
        ({"image": ("s.png", b"", "image/png")}, {"prompt": PROMPT}, "invalid_request"),
        ({"image": ("s.png", b"PNG", "image/png")}, {}, "invalid_request"),  # no prompt
        (
            {"image": ("s.png", b"PNG", "image/png")},
            {"prompt": PROMPT, "workflow": "nope"},
            "invalid_request",
        ),
        (
            {"image": ("s.png", png(), "image/png")},
            {"prompt": PROMPT, "set": "not-a-binding"},
            "invalid_workflow",
        ),
        (
            {"image": ("s.png", b"PNG", "image/png")},  # no image
            {"prompt": PROMPT},
            "invalid_request",
        ),
        (
            {"image": ("s.png", b"PNG", "image/png")},
            {"prompt": PROMPT, "bogus": "1"},
            "invalid_request",
        ),
    ],
)
async def test_bad_conjure_job_is_refused_and_nothing_stored(
    tmp_path: Path,
    autojump_clock: trio.testing.MockClock,
    files: dict | None,
    data: dict,
    code: str,
) -> None:
    """A submission missing its image or prompt, or naming an unknown workflow, is 400; a bad
    override is 422 ``invalid_workflow``; no job is logged."""
    async with open_extras_service(tmp_path) as run:
        if files is None:
            r = await run.client.post("/api/conjure/jobs", data=data, files={"x": ("", b"")})
        else:
            r = await run.client.post("/api/conjure/jobs", data=data, files=files)
        assert r.status_code == (422 if code == "invalid_workflow" else 400), r.text
        assert r.json()["error"]["code"] == code
        assert run.service.state.jobs == {}


async def test_a_malformed_set_field_is_said_in_the_api_s_words(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """A ``set`` field that is not NODE.INPUT=VALUE is 422 naming the form field, not the
    CLI's ``--set`` flag."""
    async with open_extras_service(tmp_path) as run:
        r = await run.client.post(
            "/api/conjure/jobs",
            files={"image": ("sketch.png", png(), "image/png")},
            data={"prompt": PROMPT, "set": "foo"},
        )
    assert r.status_code == 422, r.text
    message = r.json()["error"]["message"]
    assert "form field set=foo:" in message
    assert "--set" not in message


async def test_json_body_on_conjure_jobs_is_400(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """The front-end call is multipart: JSON is refused with a line saying so."""
    async with open_extras_service(tmp_path) as run:
        r = await run.client.post("/api/conjure/jobs", json={"prompt": PROMPT})
    assert r.status_code == 400
    assert "multipart" in r.json()["error"]["message"]


@pytest.mark.slow
async def test_machines_and_costs_after_a_job(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """After a job, the machine it ran on is listed (no URL) and the costs add up."""
    async with open_extras_service(tmp_path) as run:
        r = await run.client.post(
            "/api/conjure/jobs",
            files={"image": ("sketch.png", png(), "image/png")},
            data={"prompt": PROMPT},
        )
        assert r.status_code == 201
        await wait_idle(run.service)
        machines = (await run.client.get("/api/conjure/machines")).json()["machines"]
        costs = (await run.client.get("/api/conjure/costs")).json()
    assert len(machines) == 1
    assert machines[0]["jobs_served"] == 1
    assert "url" not in machines[0]
    assert costs["spent_micros"] == sum(m["cost_micros"] for m in costs["machines"])
    assert costs["spent_micros"] > 0
    assert costs["budget"]["limit_micros"] is None


@pytest.mark.slow  # (just test <= 30 s: CI and just check run it)
async def test_costs_say_what_the_budget_has_available_after_spent_and_committed(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """The budget's ``available`` is what a launch or a renewal is granted on (limit less
    spent and committed: the rest of a Ready machine's lease), as the refusal lines say it;
    ``remaining`` alone (less spent) showed more than a refusal then said was left."""
    async with open_extras_service(tmp_path) as run:
        await run.client.put("/api/conjure/budget", json={"usd": 2.5})
        r = await run.client.post(
            "/api/conjure/jobs",
            files={"image": ("sketch.png", png(), "image/png")},
            data={"prompt": PROMPT},
        )
        assert r.status_code == 201
        await wait_idle(run.service)
        budget = (await run.client.get("/api/conjure/costs")).json()["budget"]
    assert budget["committed_micros"] > 0  # the idle machine's lease runs on
    assert budget["available_micros"] == budget["remaining_micros"] - budget["committed_micros"]
    assert budget["available_usd"] == pytest.approx(budget["available_micros"] / 1e6)


async def test_put_budget_sets_and_lifts_the_limit(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """PUT /api/conjure/budget logs BudgetSet; null lifts the limit."""
    async with open_extras_service(tmp_path) as run:
        r = await run.client.put("/api/conjure/budget", json={"usd": 2.5})
        assert r.status_code == 200
        assert r.json()["budget"]["limit_micros"] == 2_500_000
        assert run.service.state.budget.limit_micros == 2_500_000
        r = await run.client.put("/api/conjure/budget", json={"usd": None})
        assert r.json()["budget"]["limit_micros"] is None
        assert run.service.state.budget.limit_micros is None


@pytest.mark.slow  # (just test <= 30 s: CI and just check run it)
async def test_a_job_submitted_once_the_budget_is_spent_is_402_and_nothing_logged(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """With the budget spent no machine time may be bought: a submission is 402
    ``insufficient_credits`` saying how to go on (not 201 and a job that fails at once);
    raising the budget lets the next one in."""
    async with open_extras_service(tmp_path) as run:

        async def submit() -> httpx.Response:
            return await run.client.post(
                "/api/conjure/jobs",
                files={"image": ("sketch.png", png(), "image/png")},
                data={"prompt": PROMPT},
            )

        assert (await submit()).status_code == 201
        await wait_idle(run.service)
        await run.client.put("/api/conjure/budget", json={"usd": 0.000001})
        await wait_for(run.service, lambda s: s.budget.exceeded)
        jobs = dict(run.service.state.jobs)
        r = await submit()
        assert r.status_code == 402, r.text
        assert r.json()["error"]["code"] == "insufficient_credits"
        assert "PUT /api/conjure/budget" in r.json()["error"]["message"]
        assert run.service.state.jobs == jobs
        await run.client.put("/api/conjure/budget", json={"usd": None})
        assert (await submit()).status_code == 201


@pytest.mark.slow
@pytest.mark.parametrize("body", [{"usd": -1}, {"usd": "5"}, {"usd": True}, {}, {"usd": 1, "x": 1}])
async def test_bad_budget_is_400_and_nothing_logged(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, body: dict
) -> None:
    """A negative, non-numeric or missing amount is 400 ``invalid_request``; no BudgetSet."""
    async with open_extras_service(tmp_path) as run:
        before = run.service.journal.last_seq
        r = await run.client.put("/api/conjure/budget", json=body)
        assert r.status_code == 400
        assert r.json()["error"]["code"] == "invalid_request"
        assert run.service.journal.last_seq == before


async def test_estimate_before_any_job_uses_the_default_and_an_idle_tail(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """With no history and no warm machine: the default run time, plus what a machine
    launched for it bills around it (Ready seen at a poll; the idle reaper's tail)."""
    async with open_extras_service(tmp_path) as run:
        r = await run.client.post("/api/conjure/estimate", json={})
        config = run.service.conjure.ctx.config
    body = r.json()
    assert r.status_code == 200
    assert body["basis"] == "default"
    assert body["warm_machine"] is False
    table = default_price_table(config.runcomfy.plan)
    start, idle = cold_overheads(
        st.initial_state(),
        poll_interval=config.pool.poll_interval,
        idle_timeout=config.pool.idle_timeout,
    )
    expected = estimate_job_cost(
        table, config.runcomfy.server_type, DEFAULT_JOB_SECONDS + start, idle_seconds=idle
    )
    assert body["estimate_micros"] == expected
    assert body["within_budget"] is True


async def test_estimate_after_a_job_uses_its_history_and_the_warm_machine(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """After a job of the workflow, its machine time (lease to end) is the basis, and a warm
    machine means no start nor idle tail."""
    async with open_extras_service(tmp_path) as run:
        r = await run.client.post(
            "/api/conjure/jobs",
            files={"image": ("sketch.png", png(), "image/png")},
            data={"prompt": PROMPT},
        )
        await wait_for(
            run.service,
            lambda state: (
                all(not m.leases for m in state.machines.values())
                and state.jobs[r.json()["id"]].status == st.SUCCEEDED
            ),
        )
        job = run.service.state.jobs[r.json()["id"]]
        name = run.service.state.workflows[job.workflow_sha256].name
        body = (await run.client.post("/api/conjure/estimate", json={"workflow": name})).json()
    assert body["basis"] == "history"
    assert body["job_seconds"] == pytest.approx(job.finished_at - job.started_at)
    assert body["warm_machine"] is True
    assert body["start_seconds"] == body["idle_seconds"] == 0


async def test_estimate_of_an_unknown_server_type_is_400(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """A server type the price table cannot bill is 400 naming the known ones."""
    async with open_extras_service(tmp_path) as run:
        r = await run.client.post("/api/conjure/estimate", json={"server_type": "h100-x9"})
    assert r.status_code == 400
    assert "medium" in r.json()["error"]["message"]


async def test_both_openapi_documents_are_served(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """The extras' and the v2 contracts are served as YAML from the package."""
    async with open_extras_service(tmp_path) as run:
        extras = await run.client.get("/api/conjure/openapi.yaml")
        v2 = await run.client.get("/api/v2/openapi.yaml")
    assert extras.status_code == v2.status_code == 200
    assert "/api/conjure/estimate" in extras.text
    assert "/api/v2/jobs/{id}/events" in v2.text


async def test_conjure_job_idempotency_key_is_single_use(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """A second front-end submission with the same Idempotency-Key is 422; one job only."""
    async with open_extras_service(tmp_path) as run:
        headers = {"Idempotency-Key": "k-1"}
        files = {"image": ("sketch.png", png(), "image/png")}
        first = await run.client.post(
            "/api/conjure/jobs", files=files, data={"prompt": PROMPT}, headers=headers
        )
        again = await run.client.post(
            "/api/conjure/jobs", files=files, data={"prompt": PROMPT}, headers=headers
        )
        assert first.status_code == 201
        assert again.status_code == 422
        assert again.json()["error"]["code"] == "idempotency_key_reuse"
        assert list(run.service.state.jobs) == [first.json()["id"]]


@pytest.mark.slow
async def test_comfy_sdk_follows_a_front_end_job_to_its_outputs(
    tmp_path: Path, sim_config: Any, sdk: Any
) -> None:
    """The front end posts image + prompt; comfy-sdk, as a user's program, waits for that
    job on loopback and downloads its outputs (the sizes it was told, this job's)."""
    import httpx
    from extras_support import serve_args

    from conjure_actors.commands.serve import build_app, open_serve
    from conjure_actors.service.app import Settings

    args = serve_args()
    with trio.fail_after(180):
        async with open_serve(
            sim_config,
            log_path=tmp_path / "serve.log",
            out_dir=tmp_path / "out",
            settings=Settings(),
            app_factory=lambda service: build_app(service, args),
        ) as served:
            async with httpx.AsyncClient(base_url=served.url) as client:
                r = await client.post(
                    "/api/conjure/jobs",
                    files={"image": ("sketch.png", png(), "image/png")},
                    data={"prompt": PROMPT},
                )
            assert r.status_code == 201
            job_id = r.json()["id"]

            def follow() -> list[tuple[int, str | None, bytes]]:
                with sdk(served.url) as comfy:
                    job = comfy.jobs.get(job_id).wait(timeout=150)
                    assert job.status == "succeeded", job.error
                    return [(o.size_bytes, o.job_id, o.to_bytes()) for o in job.outputs]

            outputs = await trio.to_thread.run_sync(follow)
    assert outputs
    for size, owner, data in outputs:
        assert (len(data), owner) == (size, job_id)


@pytest.mark.slow
async def test_mode_names_only_the_comfyui_origin(tmp_path: Path, sim_config: Any) -> None:
    """In front of a ComfyUI, the mode shows its origin, never credentials in its URL, and
    RunComfy is not used (a job costs nothing)."""
    import httpx
    from extras_support import serve_args

    from conjure_actors.commands.serve import build_app, open_serve
    from conjure_actors.config import load_config
    from conjure_actors.service.app import Settings
    from conjure_actors.sim.comfyui import ComfyUISim
    from conjure_actors.sim.serve import serve_comfyui

    args = serve_args()
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            comfy = await nursery.start(serve_comfyui, ComfyUISim())
            url = comfy.url.replace("http://", "http://user:s3cr3t-pass@")
            config = load_config(config_file=None, flags={"comfyui_url": url})
            async with (
                open_serve(
                    config,
                    log_path=tmp_path / "serve.log",
                    out_dir=tmp_path / "out",
                    settings=Settings(),
                    app_factory=lambda service: build_app(service, args),
                ) as served,
                httpx.AsyncClient(base_url=served.url) as client,
            ):
                mode = (await client.get("/api/conjure/mode")).json()
                estimate = (await client.post("/api/conjure/estimate", json={})).json()
            nursery.cancel_scope.cancel()
    assert mode["mode"] == "comfyui"
    assert mode["comfyui_url"] == comfy.url
    assert "s3cr3t" not in str(mode)
    assert mode["runcomfy"]["used"] is False
    assert mode["runcomfy"]["answers"] is None
    assert estimate["estimate_micros"] == 0


def test_machines_view_lists_launches_in_flight_and_running_machines_first() -> None:
    """A launch RunComfy has not answered yet is listed; gone machines come after live ones."""
    from conjure_actors.service.extras import machines_view

    state = st.initial_state()
    state.launch_requests["k1"] = st.LaunchRequest(
        request_key="k1",
        server_type="medium",
        workflow_version="wv",
        estimated_duration=600,
        max_jobs=1,
        at=1_800_000_000.0,
    )
    state.machines["a"] = st.Machine(server_id="a", status=st.M_STOPPED)
    state.machines["b"] = st.Machine(server_id="b", status=st.M_READY)
    view = machines_view(state, 1_800_000_100.0)
    assert [m["id"] for m in view["machines"]] == ["b", "a"]
    assert view["launches"] == [
        {
            "request_key": "k1",
            "server_type": "medium",
            "workflow_version": "wv",
            "requested_at": "2027-01-15T08:00:00Z",
        }
    ]
