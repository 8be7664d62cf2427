"""GET /metrics: prometheus-client on a private registry, figures read from the state."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
from extras_support import open_extras_service, png, wait_idle
from prometheus_client.parser import text_string_to_metric_families

from conjure_actors.domain import state as st
from conjure_actors.service.metrics import ServiceMetrics, queue_depth


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``{(sample name, sorted labels): value}`` of a Prometheus text exposition."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


async def test_metrics_count_jobs_machines_spend_and_latencies(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """After one job: jobs by status, machines by state, spend, request and append latency."""
    async with open_extras_service(tmp_path) as run:
        r = await run.client.post(
            "/api/conjure/jobs",
            files={"image": ("sketch.png", png(), "image/png")},
            data={"prompt": "a fox"},
        )
        assert r.status_code == 201
        await wait_idle(run.service)
        text = (await run.client.get("/metrics")).text
        spent = sum(
            st.machine_cost_at(m, run.wall.now()) for m in run.service.state.machines.values()
        )
    got = samples(text)
    assert got[("conjure_jobs", (("status", "succeeded"),))] == 1
    assert got[("conjure_jobs", (("status", "queued"),))] == 0
    assert got[("conjure_queue_depth", ())] == 0
    ready = got.get(("conjure_machines", (("kind", "runcomfy"), ("state", "ready"))), 0)
    stopped = got.get(("conjure_machines", (("kind", "runcomfy"), ("state", "stopped"))), 0)
    assert ready + stopped == 1
    assert got[("conjure_spend_usd", ())] == spent / 1_000_000
    key = (
        "conjure_http_request_duration_seconds_count",
        (("method", "POST"), ("route", "post_job"), ("status", "201")),
    )
    assert got[key] == 1
    assert got[("conjure_journal_append_seconds_count", ())] > 0


async def test_refused_requests_are_timed_too(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """A request the security layer refuses is counted with its status."""
    async with open_extras_service(tmp_path, token="t0ken") as run:
        await run.client.get("/api/conjure/costs")
        text = (await run.client.get("/metrics", headers={"Authorization": "Bearer t0ken"})).text
    got = samples(text)
    key = (
        "conjure_http_request_duration_seconds_count",
        (("method", "GET"), ("route", "unmatched"), ("status", "401")),
    )
    assert got[key] == 1


def test_two_services_have_separate_registries() -> None:
    """Each ServiceMetrics has its own registry: a second one does not collide."""
    state = st.initial_state()
    a = ServiceMetrics(lambda: state)
    b = ServiceMetrics(lambda: state)
    a.request_seconds.labels("GET", "x", "200").observe(0.1)
    assert b"conjure_http_request_duration_seconds_count" in a.render()
    assert b'route="x"' not in b.render()


def test_a_commits_records_are_timed_against_one_clock_reading() -> None:
    """A commit's records are published together: the clock is read once for all of
    them, and each is observed as that reading minus its append stamp."""
    readings: list[float] = []

    def now() -> float:
        readings.append(10.0)
        return 10.0

    class Record:
        def __init__(self, ts: float) -> None:
            self.ts = ts

    metrics = ServiceMetrics(lambda: st.initial_state(), now=now)
    metrics.observe_records([Record(9.9997), Record(9.998), Record(10.5)])
    assert len(readings) == 1
    got = samples(metrics.render().decode())
    assert got[("conjure_journal_append_seconds_count", ())] == 3
    # 0.3 ms, 2 ms, and 0 for a stamp ahead of the reading (never negative).
    assert got[("conjure_journal_append_seconds_bucket", (("le", "0.0001"),))] == 1
    assert got[("conjure_journal_append_seconds_bucket", (("le", "0.0005"),))] == 2
    assert got[("conjure_journal_append_seconds_bucket", (("le", "0.0025"),))] == 3
    assert got[("conjure_journal_append_seconds_sum", ())] == pytest.approx(0.0023)


def test_queue_depth_counts_waiting_jobs_only() -> None:
    """Pending, queued and retrying jobs wait; running and finished ones do not."""
    state = st.initial_state()
    for i, status in enumerate(st.JOB_STATUSES):
        state.jobs[f"j{i}"] = st.Job(job_id=f"j{i}", workflow_sha256="w", status=status)
    assert queue_depth(state) == 3


def test_budget_is_nan_when_unlimited() -> None:
    """No budget: conjure_budget_usd is NaN (Prometheus' "no value")."""
    state = st.initial_state()
    got = samples(ServiceMetrics(lambda: state).render().decode())
    value = got[("conjure_budget_usd", ())]
    assert value != value


@pytest.mark.slow
async def test_served_app_observes_journal_appends(tmp_path: Path, sim_config: Any) -> None:
    """Under hypercorn, the app's lifespan watches the journal: appends are timed."""
    import httpx
    from extras_support import serve_args

    from conjure_actors.commands.serve import build_app, open_serve
    from conjure_actors.service.app import Settings

    args = serve_args()
    with trio.fail_after(120):
        async with (
            open_serve(
                sim_config,
                log_path=tmp_path / "serve.log",
                out_dir=tmp_path / "out",
                settings=Settings(),
                app_factory=lambda service: build_app(service, args),
            ) as served,
            httpx.AsyncClient(base_url=served.url) as client,
        ):
            r = await client.put("/api/conjure/budget", json={"usd": 1})
            assert r.status_code == 200
            text = (await client.get("/metrics")).text
    got = samples(text)
    assert got[("conjure_journal_append_seconds_count", ())] > 0
    assert got[("conjure_budget_usd", ())] == 1.0


async def test_metrics_show_the_gate_requests_hold_and_job_work_waits_at(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """With a request held in flight while a job runs, /metrics shows the job work that
    waited at the gate, the bound that let it go, and the request in flight."""
    async with open_extras_service(tmp_path) as run:
        with run.service.gate.foreground():
            r = await run.client.post(
                "/api/conjure/jobs",
                files={"image": ("sketch.png", png(), "image/png")},
                data={"prompt": "a fox"},
            )
            assert r.status_code == 201
            await wait_idle(run.service)
            got = samples((await run.client.get("/metrics")).text)
    assert got[("conjure_requests_in_flight", ())] == 2  # the held one and the scrape
    assert got[("conjure_background_waits_total", ())] > 0
    assert got[("conjure_background_releases_total", (("by", "bound"),))] > 0
    bound = run.service.settings.background_max_wait
    assert 0 < got[("conjure_background_longest_wait_seconds", ())] <= bound + 1e-9
    assert got[("conjure_background_waiting", ())] >= 0


def test_exposition_is_generate_latest_byte_for_byte() -> None:
    """The cached exposition writes what prometheus-client's generate_latest writes, for
    every kind of family and label values that need escaping, scrape after scrape."""
    from prometheus_client import Counter, Gauge, Info, generate_latest

    from conjure_actors.service.metrics import Exposition

    state = st.initial_state()
    state.jobs["j"] = st.Job(job_id="j", workflow_sha256="w", status=st.QUEUED)
    metrics = ServiceMetrics(lambda: state, max_queued=3, last_seq=lambda: 7)
    registry = metrics.registry
    metrics.request_seconds.labels("GET", 'we"ird\\route\nname', "200").observe(0.003)
    metrics.request_seconds.labels("POST", "post_job", "201").observe(12.0)
    metrics.append_seconds.observe(0.0002)
    Counter("c_things", "Help with a \\ and a\nnewline.", ["b", "a"], registry=registry).labels(
        "x", "ü"
    ).inc(2)
    Gauge("g_nan", "A NaN.", registry=registry).set(float("nan"))
    Gauge("g_big", "Big.", registry=registry).set(1.5e300)
    Info("i_build", "Info.", registry=registry).info({"version": "1"})
    exposition = Exposition()
    for _ in range(2):  # the second scrape reads the remembered names and label sets
        assert exposition.render(registry) == generate_latest(registry)
        metrics.request_seconds.labels("POST", "post_job", "201").observe(0.2)
