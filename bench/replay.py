"""Benchmark: replaying a 1,000,000-event log through the real domain fold.

Generates a realistic log (80% ``NodeProgress``; jobs submitted, queued, leased, run with
nodes started/executed, outputs saved; machines launched, ready, accrued and stopped), then
measures, on the SAME file, in the same run, the median of several repeats of:

- bare: ``eventlog.read`` (read + CRC + typed decode) + a dict fold (last event per type);
- real: ``eventlog.read`` + ``eventlog.fold(apply, initial_state())``, the domain fold;
- real (batch): ``eventlog.read`` + ``apply_all`` (the same fold without a call per event).

Targets (issue 3): real >= 50% of bare, and >= 500k events/s. Run: ``python bench/replay.py``
(``--events N`` for a smaller or larger log, ``--repeats R``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import eventlog
from conjure_actors.domain import events as ev
from conjure_actors.domain.state import apply, apply_all, initial_state

T0 = 1_800_000_000.0


def generate(total: int) -> Iterator[Any]:
    """About ``total`` events of a plausible run: ~80% NodeProgress."""
    yield ev.SystemStarted(run_id="bench", version="0.1.0", mode="simulated", at=T0)
    yield ev.WorkflowRegistered(sha256="w" * 64, name="conjure", graph_json="{}", at=T0)
    yield ev.BudgetSet(limit_micros=None, at=T0)
    count = 3
    now = T0
    job = 0
    machines = 8
    for m in range(machines):
        key, sid = f"launch-{m}", f"srv-{m}"
        yield ev.MachineLaunchRequested(
            request_key=key,
            server_type="medium",
            workflow_version="v1",
            estimated_duration=3600,
            at=now,
        )
        yield ev.MachineLaunched(request_key=key, server_id=sid, at=now)
        yield ev.MachineReady(
            server_id=sid,
            service_ready_at=now + 60,
            estimated_stopping_at=now + 3660,
            rate_micros_per_hour=790_000,
            price_table_version="runcomfy-2025-10",
            at=now + 60,
        )
        count += 3
    while count < total:
        job += 1
        jid, sid, pid = f"job-{job}", f"srv-{job % machines}", f"prompt-{job}"
        now += 1.0
        head = [
            ev.JobSubmitted(
                job_id=jid,
                workflow_sha256="w" * 64,
                bindings={"16.image": '"in.png"'},
                priority=job % 3,
                seed=job,
                at=now,
            ),
            ev.JobQueued(job_id=jid, at=now),
            ev.MachineLeased(server_id=sid, job_id=jid, at=now),
            ev.JobStarted(job_id=jid, attempt=1, server_id=sid, at=now),
            ev.InputUploaded(
                job_id=jid, node_id="16", name="in.png", sha256="a" * 64, size=590, at=now
            ),
            ev.PromptSubmitting(
                job_id=jid, attempt=1, prompt_id=pid, client_id="c", server_id=sid, at=now
            ),
            ev.PromptSubmitted(job_id=jid, prompt_id=pid, number=job, at=now),
            ev.ExecutionStarted(job_id=jid, prompt_id=pid, at=now),
            ev.NodeCached(job_id=jid, prompt_id=pid, nodes=("11", "12", "13"), at=now),
        ]
        yield from head
        count += len(head)
        for node in ("17", "20", "44", "45"):
            yield ev.NodeStarted(job_id=jid, prompt_id=pid, node_id=node, at=now)
            for step in range(1, 26):
                now += 0.05
                yield ev.NodeProgress(
                    job_id=jid, prompt_id=pid, node_id=node, value=step, max=25, at=now
                )
            yield ev.NodeExecuted(job_id=jid, prompt_id=pid, node_id=node, at=now)
            count += 27
        tail = [
            ev.ExecutionSucceeded(job_id=jid, prompt_id=pid, at=now),
            ev.OutputSaved(
                job_id=jid,
                node_id="24",
                filename="flux.png",
                path=f"out/{jid}/flux.png",
                size=123_456,
                sha256="b" * 64,
                kind="image",
                at=now,
            ),
            ev.OutputSaved(
                job_id=jid,
                node_id="33",
                filename="mesh.glb",
                path=f"out/{jid}/mesh.glb",
                size=654_321,
                sha256="c" * 64,
                kind="mesh",
                at=now,
            ),
            ev.JobSucceeded(job_id=jid, at=now),
            ev.MachineReleased(server_id=sid, job_id=jid, at=now),
            ev.CostAccrued(
                server_id=sid,
                amount_micros=int((now - T0) * 790_000 / 3600),
                until=now,
                rate_micros_per_hour=790_000,
                price_table_version="runcomfy-2025-10",
                at=now,
            ),
        ]
        yield from tail
        count += len(tail)
    yield ev.SystemStopped(reason="done", at=now)


def bare(path: str) -> int:
    last: dict[type, Any] = {}
    n = 0
    for record in eventlog.read(path, ev.Event):
        last[type(record.event)] = record.event
        n += 1
    return n


def real(path: str) -> int:
    state = eventlog.fold(eventlog.read(path, ev.Event), apply, initial_state())
    return state.events_applied


def real_batch(path: str) -> int:
    state = apply_all(initial_state(), (r.event for r in eventlog.read(path, ev.Event)))
    return state.events_applied


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "bench.log")
        start = time.perf_counter()
        events = list(generate(args.events))
        with eventlog.open_writer(path, ev.Event, sync="none") as writer:
            for i in range(0, len(events), 10_000):
                writer.append_many(events[i : i + 10_000])
        progress = sum(isinstance(e, ev.NodeProgress) for e in events)
        size = os.path.getsize(path)
        print(
            f"log: {len(events):,} events ({progress / len(events):.0%} NodeProgress),"
            f" {size / 1e6:.1f} MB, written in {time.perf_counter() - start:.1f}s"
        )
        del events
        # Round-robin repeats, so a burst of load from other processes hits every loop alike.
        loops: list[tuple[str, Callable[[str], int]]] = [
            ("bare: read + decode + dict fold", bare),
            ("real: read + eventlog.fold(apply)", real),
            ("real: read + apply_all", real_batch),
        ]
        times: dict[str, list[float]] = {name: [] for name, _ in loops}
        counts: dict[str, int] = {}
        for _ in range(args.repeats):
            for name, fn in loops:
                start = time.perf_counter()
                counts[name] = fn(path)
                times[name].append(time.perf_counter() - start)
        n = counts[loops[0][0]]
        assert all(c == n for c in counts.values()), counts
        rows = [(name, statistics.median(times[name]), n) for name, _ in loops]
        base_t = rows[0][1]
    print(f"median of {args.repeats} round-robin repeats, same file, same run")
    print(f"{'loop':<36} {'seconds':>8} {'events/s':>12} {'vs bare':>8}")
    for name, t, count in rows:
        print(f"{name:<36} {t:>8.3f} {count / t:>12,.0f} {base_t / t:>8.0%}")
    real_rate = n / rows[1][1]
    ratio = base_t / rows[1][1]
    verdict = "PASS" if real_rate >= 500_000 and ratio >= 0.5 else "MISS"
    print(
        f"targets: real fold >= 500,000 events/s and >= 50% of bare:"
        f" {real_rate:,.0f}/s, {ratio:.0%} -> {verdict}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
