"""serve's health probe is ``degraded`` while the budget refuses launches (QA G8: it said
``ok`` while jobs waited because the budget refused a second machine), with the refusal's
words, and ``ok`` again once the budget is raised and a launch fits."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import Any

import pytest
import trio
from extras_support import open_extras_service, wait_for

from conjure_actors.commands.serve import budget_lines
from conjure_actors.config import BudgetConfig, Config, PoolConfig
from conjure_actors.domain import state as st

WORKFLOWS = Path(__file__).resolve().parents[2] / "conjure_actors" / "workflows"


def _graph() -> dict[str, Any]:
    graph: dict[str, Any] = json.loads((WORKFLOWS / "slow_blur_chain.json").read_text())
    return graph


async def test_health_is_degraded_while_the_budget_refuses_launches(
    tmp_path: Path, autojump_clock: Any
) -> None:
    # One lease fits $0.20, a second does not.
    config = Config(pool=PoolConfig(max_machines=2), budget=BudgetConfig(usd=0.2))
    with trio.fail_after(3600):
        async with open_extras_service(tmp_path, config=config) as run:
            jobs = [
                (await run.client.post("/api/v2/jobs", json={"workflow": _graph()})).json()["id"]
                for _ in range(2)
            ]
            conjure = run.service.conjure
            await wait_for(run.service, lambda s: conjure.budget_problem is not None)
            degraded = (await run.client.get("/api/v2/health")).json()
            put = await run.client.put("/api/conjure/budget", json={"usd": 5.0})
            assert put.status_code == 200
            await wait_for(
                run.service, lambda s: all(s.jobs[j].status == st.SUCCEEDED for j in jobs)
            )
            healthy = (await run.client.get("/api/v2/health")).json()
    assert degraded["status"] == "degraded"
    assert degraded["reason"].startswith("the budget refuses launches: launch refused: needs")
    assert healthy["status"] == "ok"


async def test_serve_says_a_launch_refusal_once_on_its_terminal_not_per_job(
    tmp_path: Path, autojump_clock: Any
) -> None:
    """QA G8: serve's stderr had only its banner while the budget refused launches; now the
    line run shows, once for the episode (three jobs wait, one machine fits)."""
    config = Config(pool=PoolConfig(max_machines=3), budget=BudgetConfig(usd=0.2))
    terminal = io.StringIO()
    with trio.fail_after(3600):
        async with open_extras_service(tmp_path, config=config) as run:
            conjure = run.service.conjure
            with conjure.journal.listen(budget_lines(terminal)):
                for _ in range(3):
                    await run.client.post("/api/v2/jobs", json={"workflow": _graph()})
                await wait_for(run.service, lambda s: s.budget.launches_refused >= 2)
    lines = [line for line in terminal.getvalue().splitlines() if "launch refused" in line]
    assert len(lines) == 1
    assert lines[0].startswith("budget: launch refused: needs $0.1650")


async def test_health_is_degraded_while_the_budget_is_exceeded(
    tmp_path: Path, autojump_clock: Any
) -> None:
    config = Config(pool=PoolConfig(max_machines=1), budget=BudgetConfig(usd=1.0))
    with trio.fail_after(3600):
        async with open_extras_service(tmp_path, config=config) as run:
            job = (await run.client.post("/api/v2/jobs", json={"workflow": _graph()})).json()
            await wait_for(run.service, lambda s: s.jobs[job["id"]].status == st.SUCCEEDED)
            await run.client.put("/api/conjure/budget", json={"usd": 0.0001})
            await wait_for(run.service, lambda s: s.budget.exceeded)
            degraded = (await run.client.get("/api/v2/health")).json()
    assert degraded["status"] == "degraded"
    assert degraded["reason"].startswith("the budget is exceeded")


async def test_health_is_ok_again_once_the_jobs_the_budget_refused_a_launch_failed(
    tmp_path: Path, autojump_clock: Any
) -> None:
    """The budget cannot cover one lease: the job fails BudgetRefused, and with nothing
    left waiting for a launch the probe is ``ok`` again (it said the refusal for good)."""
    config = Config(pool=PoolConfig(max_machines=1), budget=BudgetConfig(usd=0.1))
    with trio.fail_after(3600):
        async with open_extras_service(tmp_path, config=config) as run:
            job = (await run.client.post("/api/v2/jobs", json={"workflow": _graph()})).json()
            await wait_for(run.service, lambda s: s.jobs[job["id"]].status == st.FAILED)
            await wait_for(run.service, lambda s: run.service.conjure.budget_problem is None)
            health = (await run.client.get("/api/v2/health")).json()
    assert health["status"] == "ok"


@pytest.mark.slow  # ~0.27 s: the failed-job case above runs without it
async def test_health_is_ok_again_once_a_running_machine_took_the_job_refused_a_launch(
    tmp_path: Path, autojump_clock: Any
) -> None:
    """One lease fits, a second does not: the second job waits for the first machine, and
    once that machine took it nothing waits for a launch: ``ok``, the budget unchanged."""
    config = Config(pool=PoolConfig(max_machines=2), budget=BudgetConfig(usd=0.2))
    with trio.fail_after(3600):
        async with open_extras_service(tmp_path, config=config) as run:
            conjure = run.service.conjure
            jobs = [
                (await run.client.post("/api/v2/jobs", json={"workflow": _graph()})).json()["id"]
                for _ in range(2)
            ]
            await wait_for(run.service, lambda s: conjure.budget_problem is not None)
            await wait_for(
                run.service, lambda s: all(s.jobs[j].status == st.SUCCEEDED for j in jobs)
            )
            health = (await run.client.get("/api/v2/health")).json()
    assert health["status"] == "ok"


async def test_the_end_of_a_launch_refusal_is_said_once_and_the_next_one_said_again(
    tmp_path: Path, autojump_clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Serve's terminal says the refusal, then once that nothing waits for a launch any
    more; a job submitted after that is refused again: said again, health degraded again."""
    caplog.set_level(logging.WARNING, logger="conjure_actors.actors.conjure")
    config = Config(pool=PoolConfig(max_machines=1), budget=BudgetConfig(usd=0.1))
    terminal = io.StringIO()
    with trio.fail_after(3600):
        async with open_extras_service(tmp_path, config=config) as run:
            conjure = run.service.conjure
            with conjure.journal.listen(budget_lines(terminal)):
                for _ in range(2):
                    posted = await run.client.post("/api/v2/jobs", json={"workflow": _graph()})
                    job_id = posted.json()["id"]
                    await wait_for(run.service, lambda s: conjure.budget_problem is not None)
                    await wait_for(
                        run.service,
                        lambda s, job_id=job_id: s.jobs[job_id].status == st.FAILED,
                    )
                    await wait_for(run.service, lambda s: conjure.budget_problem is None)
    refused = [line for line in terminal.getvalue().splitlines() if "launch refused" in line]
    over = [r.getMessage() for r in caplog.records if "refused launch" in r.getMessage()]
    assert len(refused) == 2
    assert (
        over
        == [
            "budget: no job waits on a refused launch any more; a new job's launch is judged"
            " against the budget again"
        ]
        * 2
    )
