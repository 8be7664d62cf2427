"""Hypothesis strategies for domain events (shared by the domain tests).

``any_event()`` builds ANY event of the union with field values drawn from small pools, so
that random sequences hit the same ids often (unknown ids, duplicates, out-of-order facts).
"""

from __future__ import annotations

import types
import typing
from typing import Any

import msgspec
from hypothesis import strategies as st

from conjure_actors.domain import cost_policy, machines_policy
from conjure_actors.domain.events import EVENT_TYPES
from conjure_actors.domain.state import M_READY, State, queue_key

IDS = st.sampled_from(["a", "b", "c", "m1", "p1"])
SMALL_INT = st.integers(min_value=-1, max_value=5)
FLOAT = st.floats(min_value=0.0, max_value=10_000.0, allow_nan=False)


def _for_type(tp: Any) -> st.SearchStrategy[Any]:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is str:
        return IDS
    if tp is int:
        return SMALL_INT
    if tp is float:
        return FLOAT
    if tp is bool:
        return st.booleans()
    if tp is type(None):
        return st.none()
    if origin is typing.Literal:
        return st.sampled_from(args)
    if origin in (typing.Union, types.UnionType):
        return st.one_of(*(_for_type(a) for a in args))
    if origin is dict:
        return st.dictionaries(IDS, IDS, max_size=2)
    if origin is tuple:
        return st.lists(IDS, max_size=3).map(tuple)
    raise NotImplementedError(f"no strategy for {tp!r}")


def event_strategy(cls: type[msgspec.Struct]) -> st.SearchStrategy[Any]:
    """Any instance of one event class."""
    fields = {f.name: _for_type(f.type) for f in msgspec.structs.fields(cls)}
    return st.fixed_dictionaries(fields).map(lambda kw: cls(**kw))


def any_event() -> st.SearchStrategy[Any]:
    """Any event of the :data:`~conjure_actors.domain.events.Event` union."""
    return st.one_of(*(event_strategy(cls) for cls in EVENT_TYPES))


# ------------------------------------------------------------------ random legal runs

WARN_FRACTION = 0.8
"""The budget's warning fraction in random runs (the default of ``budget.warn_fraction``)."""


def free_machine(state: State, workflow_version: str | None) -> str | None:
    """The machine the pool's reuse rule (:func:`machines_policy.pick_machine`) gives a job
    of ``workflow_version`` now, each machine within its own job limit (health is not
    logged by these runs, so every machine counts as healthy)."""
    views = [
        machines_policy.MachineView(
            server_id=m.server_id,
            ready=m.status == M_READY,
            healthy=True,
            workflow_version=m.workflow_version if m.kind == "runcomfy" else None,
            leases=len(m.leases),
        )
        for m in state.machines.values()
        if len(m.leases) < m.max_jobs
    ]
    limit = max((m.max_jobs for m in state.machines.values()), default=1)
    return machines_policy.pick_machine(views, workflow_version, limit)


class LegalRunner:
    """Drives random LEGAL command sequences through ``decide`` and folds them with ``apply``.

    Each :meth:`step` picks, at random, one command the current state allows (launch a
    machine, make it ready, lease it to a waiting job, run the job's prompt with progress,
    succeed / fail / retry / cancel a job, release, accrue, stop or lose a machine) and
    emits what ``decide`` returns. Used by the invariant tests and the golden-log script.
    """

    def __init__(self, rng: Any, *, budget_micros: int | None = 200_000) -> None:
        from conjure_actors.domain import decide
        from conjure_actors.domain import events as ev
        from conjure_actors.domain.prices import default_price_table
        from conjure_actors.domain.state import apply, initial_state

        self.decide = decide
        self.ev = ev
        self.apply = apply
        self.table = default_price_table("pro")
        self.rng = rng
        self.state = initial_state()
        self.log: list[Any] = []
        self.now = 1_800_000_000.0
        self.counter = 0
        self.wf = "f" * 64
        self.emit(ev.WorkflowRegistered(sha256=self.wf, name="w", graph_json="{}", at=self.now))
        self.emit(ev.BudgetSet(limit_micros=budget_micros, at=self.now))

    def emit(self, *events: Any) -> None:
        for event in events:
            self.log.append(event)
            self.apply(self.state, event)

    def tick(self, seconds: float) -> float:
        self.now += seconds
        return self.now

    def new_id(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    def jobs_in(self, *statuses: str) -> list[str]:
        return sorted(j for j, job in self.state.jobs.items() if job.status in statuses)

    def machines_in(self, *statuses: str) -> list[str]:
        return sorted(s for s, m in self.state.machines.items() if m.status in statuses)

    def step(self) -> None:
        """One random legal command (or nothing, when the chosen one does not apply)."""
        actions = [
            (3, self.submit),
            (2, self.launch),
            (2, self.ready),
            (4, self.dispatch),
            (5, self.run_prompt),
            (4, self.finish),
            (1, self.cancel),
            (2, self.release),
            (2, self.accrue),
            (1, self.stop),
            (1, self.lose),
        ]
        weights = [w for w, _ in actions]
        action = self.rng.choices([a for _, a in actions], weights=weights)[0]
        action()

    def submit(self) -> None:
        d, ev = self.decide, self.ev
        parents = sorted(self.state.jobs)
        parent = self.rng.choice(parents) if parents and self.rng.random() < 0.2 else None
        job_id = self.new_id("job")
        self.emit(
            d.submit_job(
                self.state,
                job_id=job_id,
                workflow_sha256=self.wf,
                priority=self.rng.randint(0, 3),
                seed=self.rng.randint(0, 99),
                parent_id=parent,
                bindings={"16.image": '"in.png"'},
                at=self.tick(1),
            )
        )
        self.emit(d.queue_job(self.state, job_id, at=self.tick(0)))
        del ev

    def launch(self) -> None:
        d, ev = self.decide, self.ev
        key = self.new_id("req")
        self.emit(
            d.request_launch(
                self.state,
                request_key=key,
                server_type=self.rng.choice(["medium", "large"]),
                workflow_version="v1",
                estimated_duration=600,
                table=self.table,
                max_jobs=self.rng.randint(1, 2),
                at=self.tick(1),
            )
        )
        if self.rng.random() < 0.15:
            self.emit(ev.MachineLaunchFailed(request_key=key, reason="HTTP 500", at=self.tick(1)))
        else:
            server = self.new_id("srv")
            self.emit(
                d.machine_launched(self.state, request_key=key, server_id=server, at=self.tick(1))
            )

    def ready(self) -> None:
        starting = self.machines_in("starting")
        if starting:
            server = self.rng.choice(starting)
            at = self.tick(self.rng.uniform(5, 180))
            self.emit(
                self.decide.machine_ready(
                    self.state,
                    server,
                    service_ready_at=at,
                    estimated_stopping_at=at + 600,
                    table=self.table,
                    at=at,
                ),
                self.ev.MachineHealthy(server_id=server, at=self.tick(1)),
            )

    def dispatch(self) -> None:
        d = self.decide
        # The pool's serving order: higher priority first, then submission order.
        queued = sorted(
            (j for j in self.state.jobs.values() if j.status == "queued"), key=queue_key
        )
        waiting = [j.job_id for j in queued] + self.jobs_in("retrying")
        server = free_machine(self.state, "v1")
        if waiting and server:
            job = waiting[0]
            self.emit(d.lease_machine(self.state, server, job, at=self.tick(0)))
            self.emit(d.start_job(self.state, job, server, at=self.tick(0)))

    def run_prompt(self) -> None:
        ev = self.ev
        running = [j for j in self.jobs_in("running") if self.state.jobs[j].execution is None]
        if not running:
            return
        job_id = self.rng.choice(running)
        job = self.state.jobs[job_id]
        assert job.server_id is not None
        prompt_id = self.new_id("prompt")
        self.emit(
            ev.InputUploaded(
                job_id=job_id,
                node_id="16",
                name="in.png",
                sha256="1" * 64,
                size=99,
                at=self.tick(1),
            ),
            ev.PromptSubmitting(
                job_id=job_id,
                attempt=job.attempt,
                prompt_id=prompt_id,
                client_id="c",
                server_id=job.server_id,
                at=self.tick(0),
            ),
            ev.PromptSubmitted(job_id=job_id, prompt_id=prompt_id, number=1, at=self.tick(0)),
            ev.ExecutionStarted(job_id=job_id, prompt_id=prompt_id, at=self.tick(1)),
            ev.NodeCached(job_id=job_id, prompt_id=prompt_id, nodes=("11", "12"), at=self.now),
        )
        for node in ("20", "24"):
            self.emit(ev.NodeStarted(job_id=job_id, prompt_id=prompt_id, node_id=node, at=self.now))
            steps = self.rng.randint(0, 5)
            for value in range(1, steps + 1):
                self.emit(
                    ev.NodeProgress(
                        job_id=job_id,
                        prompt_id=prompt_id,
                        node_id=node,
                        value=value,
                        max=steps,
                        at=self.tick(1),
                    )
                )
            self.emit(
                ev.NodeExecuted(job_id=job_id, prompt_id=prompt_id, node_id=node, at=self.now)
            )
        if self.rng.random() < 0.2:
            self.emit(
                ev.ExecutionFailed(
                    job_id=job_id,
                    prompt_id=prompt_id,
                    node_id="24",
                    node_type="SaveImage",
                    exception_type="OSError",
                    message="disk",
                    at=self.tick(1),
                )
            )
            return
        self.emit(
            ev.ExecutionSucceeded(job_id=job_id, prompt_id=prompt_id, at=self.tick(0)),
            ev.OutputSaved(
                job_id=job_id,
                node_id="24",
                filename="flux_00001_.png",
                path=f"out/{job_id}/flux_00001_.png",
                size=1234,
                sha256="2" * 64,
                kind="image",
                at=self.tick(1),
            ),
        )

    def _release_all(self, job_id: str) -> None:
        for server, machine in sorted(self.state.machines.items()):
            if job_id in machine.leases:
                self.emit(self.decide.release_machine(self.state, server, job_id, at=self.now))

    def finish(self) -> None:
        d = self.decide
        ran = [j for j in self.jobs_in("running") if self.state.jobs[j].execution is not None]
        if not ran:
            return
        job_id = self.rng.choice(ran)
        job = self.state.jobs[job_id]
        if job.execution == "succeeded" and job.outputs:
            self.emit(d.succeed_job(self.state, job_id, at=self.tick(1)))
        elif job.attempt < 3 and self.rng.random() < 0.7:
            self.emit(
                d.retry_job(
                    self.state, job_id, delay=2.0**job.attempt, reason="node error", at=self.tick(1)
                )
            )
        else:
            self.emit(
                d.fail_job(
                    self.state,
                    job_id,
                    error_type="OSError",
                    message="disk",
                    retryable=True,
                    at=self.tick(1),
                )
            )
        self._release_all(job_id)

    def cancel(self) -> None:
        active = self.jobs_in("pending", "queued", "running", "retrying")
        if active:
            job_id = self.rng.choice(active)
            self.emit(self.decide.cancel_job(self.state, job_id, reason="user", at=self.tick(1)))
            self._release_all(job_id)

    def release(self) -> None:
        for server, machine in sorted(self.state.machines.items()):
            for job_id in list(machine.leases):
                if self.state.jobs[job_id].status not in ("running",):
                    self.emit(self.decide.release_machine(self.state, server, job_id, at=self.now))

    def accrue(self) -> None:
        billing = self.machines_in("ready", "stopping")
        if billing:
            until = self.tick(self.rng.uniform(1, 120))
            self.emit(*cost_policy.accruals(self.state, now=until, at=until))
            self.emit(
                *cost_policy.budget_events(
                    self.state, now=self.now, warn_fraction=WARN_FRACTION, at=self.now
                )
            )

    def stop(self) -> None:
        idle = [
            s for s in self.machines_in("ready", "starting") if not self.state.machines[s].leases
        ]
        if idle:
            server = self.rng.choice(idle)
            self.emit(self.decide.stop_machine(self.state, server, reason="idle", at=self.now))
            stopped_at = self.tick(self.rng.uniform(0, 60))
            self.emit(
                machines_policy.machine_stopped(
                    self.state,
                    server,
                    stopped_at=stopped_at,
                    server_ready_at=None,
                    table=self.table,
                    at=stopped_at,
                )
            )
            self.emit(
                *cost_policy.budget_events(
                    self.state, now=self.now, warn_fraction=WARN_FRACTION, at=self.now
                )
            )

    def lose(self) -> None:
        alive = self.machines_in("ready", "starting")
        if alive and self.rng.random() < 0.3:
            server = self.rng.choice(alive)
            jobs = list(self.state.machines[server].leases)
            self.emit(self.ev.MachineLost(server_id=server, reason="404", at=self.tick(1)))
            for job_id in jobs:
                if self.state.jobs[job_id].status == "running":
                    self.emit(self.decide.queue_job(self.state, job_id, at=self.now, reason="lost"))
