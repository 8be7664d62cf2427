"""200 concurrent submissions from 20 clients: each is accepted (201) or refused 429
``queue_full``; no accepted job is lost and none is duplicated."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from service_helpers import serving, workflow

import eventlog
from conjure_actors.domain import events as ev
from conjure_actors.service.app import Settings

pytestmark = pytest.mark.slow

CLIENTS = 20
EACH = 10


def peak_active(log: Path) -> int:
    """The most jobs queued or running at once, read back from the log."""
    active: set[str] = set()
    peak = 0
    for record in eventlog.read(log, ev.Event):
        event = record.event
        if isinstance(event, ev.JobSubmitted):
            active.add(event.job_id)
            peak = max(peak, len(active))
        elif isinstance(event, ev.JobSucceeded | ev.JobFailed | ev.JobCancelled):
            active.discard(event.job_id)
    return peak


async def test_200_concurrent_submissions_none_lost_none_duplicated(
    sim_config: Any, tmp_path: Path
) -> None:
    """Every answer is 201 or 429; the 201 ids are exactly the jobs in the log, once each."""
    body = {"workflow": workflow("invert_save.json")}
    accepted: list[str] = []
    refused: list[httpx.Response] = []
    others: list[httpx.Response] = []
    latencies: list[float] = []
    async with serving(sim_config, tmp_path, settings=Settings(max_queue=150)) as served:

        async def client(n: int) -> None:
            async with httpx.AsyncClient(timeout=60) as http:
                for i in range(EACH):
                    started = time.perf_counter()
                    answer = await http.post(
                        f"{served.url}/api/v2/jobs",
                        json=body,
                        headers={"Idempotency-Key": f"c{n}-{i}"},
                    )
                    latencies.append(time.perf_counter() - started)
                    if answer.status_code == 201:
                        accepted.append(answer.json()["id"])
                    elif answer.status_code == 429:
                        refused.append(answer)
                    else:
                        others.append(answer)

        with trio.fail_after(120):
            async with trio.open_nursery() as nursery:
                for n in range(CLIENTS):
                    nursery.start_soon(client, n)
        state = served.service.state
        logged = list(state.jobs)
        keys = set(state.service.idempotency)
    assert others == [], [(r.status_code, r.text) for r in others[:3]]
    assert len(accepted) + len(refused) == CLIENTS * EACH
    assert peak_active(tmp_path / "serve.log") <= 150, "the bounded queue never overshoots"
    assert all(r.json()["error"]["code"] == "queue_full" for r in refused)
    assert len(set(accepted)) == len(accepted)
    assert sorted(logged) == sorted(accepted)
    assert len(keys) == len(accepted)
    latencies.sort()
    print(
        f"\n201/429: {len(accepted)}/{len(refused)}; submit latency p50 "
        f"{latencies[len(latencies) // 2] * 1000:.1f} ms, p99 "
        f"{latencies[int(len(latencies) * 0.99)] * 1000:.1f} ms"
    )
