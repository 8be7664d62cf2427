"""The fold: apply is total, deterministic, and keeps the invariants on legal sequences."""

from __future__ import annotations

import random
from typing import Any

import msgspec
import pytest
from domain_strategies import WARN_FRACTION, LegalRunner, any_event, free_machine
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from conjure_actors.domain import cost_policy, decide, machines_policy
from conjure_actors.domain import events as ev
from conjure_actors.domain.errors import DomainError
from conjure_actors.domain.prices import default_price_table
from conjure_actors.domain.state import (
    TERMINAL_STATUSES,
    State,
    apply,
    apply_all,
    copy_state,
    initial_state,
    state_from_builtins,
    state_to_builtins,
)
from conjure_actors.runtime.events import ActorCrashed, ActorStarted

TABLE = default_price_table("pro")
WF = "f" * 64


def fold(events: list[Any]) -> State:
    state = initial_state()
    for event in events:
        state = apply(state, event)
    return state


@pytest.mark.slow
@given(st.lists(any_event(), max_size=60))
def test_apply_is_total_on_any_event_sequence(events: list[Any]) -> None:
    """No sequence of logged events, however absurd, makes apply raise."""
    state = fold(events)
    assert state.events_applied == len(events)


@given(st.lists(any_event(), max_size=60))
def test_apply_is_deterministic(events: list[Any]) -> None:
    """Folding the same events twice gives equal states."""
    assert fold(events) == fold(events)


@given(st.lists(any_event(), max_size=60))
def test_ledger_is_the_sum_of_machine_costs_on_any_sequence(events: list[Any]) -> None:
    """Even for nonsense logs the ledger total equals the sum of per-machine costs."""
    state = fold(events)
    assert state.ledger.total_micros == sum(m.cost_micros for m in state.machines.values())


@given(st.lists(any_event(), max_size=40))
def test_state_round_trips_through_json(events: list[Any]) -> None:
    """The JSON encoding of a state decodes to an equal state."""
    state = fold(events)
    text = msgspec.json.encode(state_to_builtins(state))
    assert state_from_builtins(msgspec.json.decode(text)) == state


@given(st.lists(any_event(), max_size=40))
def test_apply_all_equals_apply_one_by_one(events: list[Any]) -> None:
    """The batch fold is the same fold."""
    assert apply_all(initial_state(), events) == fold(events)


def test_copy_state_is_independent() -> None:
    """Applying to a copy leaves the original untouched."""
    state = fold([ev.WorkflowRegistered(sha256=WF, name="w", graph_json="{}", at=1.0)])
    other = copy_state(state)
    apply(other, ev.JobSubmitted(job_id="j", workflow_sha256=WF, at=2.0))
    assert "j" not in state.jobs
    assert other != state


def test_terminal_job_stays_terminal() -> None:
    """An event that would move a finished job is an anomaly and changes nothing."""
    state = fold(
        [
            ev.WorkflowRegistered(sha256=WF, name="w", graph_json="{}", at=1.0),
            ev.JobSubmitted(job_id="j", workflow_sha256=WF, at=1.0),
            ev.JobCancelled(job_id="j", reason="user", at=2.0),
            ev.JobStarted(job_id="j", attempt=1, server_id="m", at=3.0),
        ]
    )
    assert state.jobs["j"].status == "cancelled"
    assert state.anomaly_count == 1
    assert "cancelled -> running" in state.anomalies[0]


def test_unknown_job_is_an_anomaly_not_an_error() -> None:
    """Progress for a job the log never submitted is recorded as an anomaly."""
    state = fold([ev.NodeProgress(job_id="x", prompt_id="p", node_id="1", value=1, max=2, at=1)])
    assert state.anomaly_count == 1
    assert "unknown job x" in state.anomalies[0]


def test_stop_of_unknown_machine_still_enters_the_ledger() -> None:
    """Cost facts are never dropped, even for a machine whose launch was never logged."""
    state = fold(
        [
            ev.MachineStopped(
                server_id="s", stopped_at=100.0, billed_seconds=90, cost_micros=1234, at=100.0
            )
        ]
    )
    assert state.ledger.total_micros == 1234
    assert state.machines["s"].status == "stopped"


def test_final_bill_supersedes_accruals() -> None:
    """After MachineStopped, a late CostAccrued does not change the machine's cost."""
    events: list[Any] = [
        ev.MachineLaunchRequested(
            request_key="k",
            server_type="medium",
            workflow_version="v",
            estimated_duration=600,
            at=0.0,
        ),
        ev.MachineLaunched(request_key="k", server_id="s", at=1.0),
        ev.MachineReady(
            server_id="s",
            service_ready_at=10.0,
            estimated_stopping_at=610.0,
            rate_micros_per_hour=3_600_000,
            price_table_version="t",
            at=10.0,
        ),
        ev.CostAccrued(
            server_id="s",
            amount_micros=50_000,
            until=60.0,
            rate_micros_per_hour=3_600_000,
            price_table_version="t",
            at=60.0,
        ),
        ev.MachineStopped(
            server_id="s", stopped_at=70.0, billed_seconds=60, cost_micros=60_000, at=70.0
        ),
        ev.CostAccrued(
            server_id="s",
            amount_micros=99_000,
            until=99.0,
            rate_micros_per_hour=3_600_000,
            price_table_version="t",
            at=99.0,
        ),
    ]
    state = fold(events)
    assert state.machines["s"].cost_micros == 60_000
    assert state.ledger.total_micros == 60_000
    assert state.launch_requests == {}


def test_actor_health_follows_lifecycle_events() -> None:
    """Runtime lifecycle events update the actor's health entry."""
    state = fold(
        [
            ActorStarted(actor="cost", incarnation=1, at=1.0),
            ActorCrashed(actor="cost", incarnation=1, error_type="ValueError", message="x", at=2),
        ]
    )
    assert state.actors["cost"].status == "crashed"
    assert state.actors["cost"].crashes == 1


def check_invariants(state: State, finished: dict[str, str]) -> None:
    """The domain invariants every legal run keeps (``finished`` carries terminal statuses)."""
    assert state.anomaly_count == 0, state.anomalies
    machines = state.machines.values()
    assert state.ledger.total_micros == sum(m.cost_micros for m in machines)
    for machine in machines:
        assert len(machine.leases) <= machine.max_jobs
    for job_id, job in state.jobs.items():
        if job.status == "succeeded":
            assert job.outputs
        if job_id in finished:
            assert job.status == finished[job_id]
        elif job.status in TERMINAL_STATUSES:
            finished[job_id] = job.status


# The slow twins' examples: 100, or the loaded profile's count if more (`just fuzz`).
_MANY = max(100, settings.default.max_examples)


# Up to 150 commands an example: the inner loop runs 10 examples, the slow tests _MANY.
@settings(max_examples=10)
@given(st.randoms(use_true_random=False), st.integers(min_value=10, max_value=150))
def test_random_legal_runs_keep_the_invariants(rng: random.Random, steps: int) -> None:
    """Random legal command sequences: invariants after every step, replay equals live."""
    _check_random_legal_run(rng, steps)


@pytest.mark.slow
@settings(max_examples=_MANY)
@given(st.randoms(use_true_random=False), st.integers(min_value=10, max_value=150))
def test_random_legal_runs_keep_the_invariants_over_many_examples(
    rng: random.Random, steps: int
) -> None:
    """The same property as above, over many more runs."""
    _check_random_legal_run(rng, steps)


def _check_random_legal_run(rng: random.Random, steps: int) -> None:
    runner = LegalRunner(rng)
    finished: dict[str, str] = {}
    for _ in range(steps):
        runner.step()
        check_invariants(runner.state, finished)
    assert fold(runner.log) == runner.state


def test_legal_runner_reaches_every_outcome() -> None:
    """The random runs are deep enough to succeed, fail, cancel, retry and stop machines."""
    runner = LegalRunner(random.Random(7))
    for _ in range(600):
        runner.step()
    statuses = {job.status for job in runner.state.jobs.values()}
    assert {"succeeded", "failed", "cancelled"} <= statuses
    assert any(job.attempt > 1 for job in runner.state.jobs.values())
    assert any(m.status == "stopped" and m.cost_micros > 0 for m in runner.state.machines.values())
    assert runner.state.budget.warned


class LegalRun(RuleBasedStateMachine):
    """Random legal command sequences, decided by ``decide`` and folded by ``apply``.

    After every step: the live state equals a fresh replay of the log, no anomaly was
    recorded (legal commands make legal events), and the domain invariants hold.
    """

    def __init__(self) -> None:
        super().__init__()
        self.state = initial_state()
        self.log: list[Any] = []
        self.now = 1_000.0
        self.counter = 0
        self.finished: dict[str, str] = {}
        self.emit(ev.WorkflowRegistered(sha256=WF, name="w", graph_json="{}", at=self.now))
        self.emit(ev.BudgetSet(limit_micros=50_000, at=self.now))

    def emit(self, *events: Any) -> None:
        for event in events:
            self.log.append(event)
            apply(self.state, event)

    def tick(self, seconds: float) -> float:
        self.now += seconds
        return self.now

    def new_id(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    def try_emit(self, make: Any) -> None:
        """Run a decide call; a rejected command emits nothing (that is the point)."""
        try:
            out = make()
        except DomainError:
            return
        if out is None:
            return
        self.emit(*(out if isinstance(out, list) else [out]))

    def jobs_in(self, *statuses: str) -> list[str]:
        return [j for j, job in self.state.jobs.items() if job.status in statuses]

    def pick(self, data: st.DataObject, pool: list[str]) -> str | None:
        return data.draw(st.sampled_from(sorted(pool))) if pool else None

    # ---- jobs

    @rule(priority=st.integers(0, 3), parent=st.booleans())
    def submit(self, priority: int, parent: bool) -> None:
        parent_id = next(iter(sorted(self.state.jobs)), None) if parent else None
        job_id = self.new_id("job")
        self.try_emit(
            lambda: decide.submit_job(
                self.state,
                job_id=job_id,
                workflow_sha256=WF,
                priority=priority,
                parent_id=parent_id,
                at=self.tick(1),
            )
        )

    @rule(data=st.data())
    def queue(self, data: st.DataObject) -> None:
        job = self.pick(data, self.jobs_in("pending", "running", "retrying"))
        if job:
            self.try_emit(lambda: decide.queue_job(self.state, job, at=self.tick(1)))

    @rule(data=st.data())
    def start(self, data: st.DataObject) -> None:
        holders = {j: s for s, m in self.state.machines.items() for j in m.leases}
        job = self.pick(data, list(holders))
        server = holders.get(job) if job else None
        if job and server:
            self.try_emit(lambda: decide.start_job(self.state, job, server, at=self.tick(1)))

    @rule(data=st.data())
    def run_prompt(self, data: st.DataObject) -> None:
        running = [j for j, job in self.state.jobs.items() if job.status == "running"]
        job_id = self.pick(data, running)
        if job_id is None:
            return
        job = self.state.jobs[job_id]
        prompt_id = self.new_id("prompt")
        assert job.server_id is not None
        self.emit(
            ev.PromptSubmitting(
                job_id=job_id,
                attempt=job.attempt,
                prompt_id=prompt_id,
                client_id="c",
                server_id=job.server_id,
                at=self.tick(1),
            ),
            ev.PromptSubmitted(job_id=job_id, prompt_id=prompt_id, number=1, at=self.tick(0)),
            ev.ExecutionStarted(job_id=job_id, prompt_id=prompt_id, at=self.tick(1)),
            ev.NodeStarted(job_id=job_id, prompt_id=prompt_id, node_id="3", at=self.tick(1)),
        )
        steps = data.draw(st.integers(0, 4))
        for value in range(steps):
            self.emit(
                ev.NodeProgress(
                    job_id=job_id,
                    prompt_id=prompt_id,
                    node_id="3",
                    value=value + 1,
                    max=steps,
                    at=self.tick(1),
                )
            )
        self.emit(
            ev.NodeExecuted(job_id=job_id, prompt_id=prompt_id, node_id="3", at=self.tick(1)),
            ev.ExecutionSucceeded(job_id=job_id, prompt_id=prompt_id, at=self.tick(0)),
            ev.OutputSaved(
                job_id=job_id,
                node_id="3",
                filename="a.png",
                path=f"out/{job_id}/a.png",
                size=10,
                sha256="0" * 64,
                kind="image",
                at=self.tick(1),
            ),
        )

    @rule(data=st.data())
    def succeed(self, data: st.DataObject) -> None:
        job = self.pick(data, self.jobs_in("running"))
        if job:
            self.try_emit(lambda: decide.succeed_job(self.state, job, at=self.tick(1)))

    @rule(data=st.data(), retryable=st.booleans())
    def fail(self, data: st.DataObject, retryable: bool) -> None:
        job = self.pick(data, list(self.state.jobs))
        if job:
            self.try_emit(
                lambda: decide.fail_job(
                    self.state,
                    job,
                    error_type="E",
                    message="boom",
                    retryable=retryable,
                    at=self.tick(1),
                )
            )

    @rule(data=st.data())
    def retry(self, data: st.DataObject) -> None:
        job = self.pick(data, list(self.state.jobs))
        if job:
            self.try_emit(
                lambda: decide.retry_job(self.state, job, delay=2.0, reason="x", at=self.tick(1))
            )

    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        job = self.pick(data, list(self.state.jobs))
        if job:
            self.try_emit(lambda: decide.cancel_job(self.state, job, reason="u", at=self.tick(1)))

    # ---- machines

    @rule(max_jobs=st.integers(1, 2))
    def launch(self, max_jobs: int) -> None:
        key = self.new_id("req")
        self.try_emit(
            lambda: decide.request_launch(
                self.state,
                request_key=key,
                server_type="medium",
                workflow_version="v1",
                estimated_duration=600,
                table=TABLE,
                max_jobs=max_jobs,
                at=self.tick(1),
            )
        )

    @rule(data=st.data(), ok=st.booleans())
    def launch_outcome(self, data: st.DataObject, ok: bool) -> None:
        key = self.pick(data, list(self.state.launch_requests))
        if key is None:
            return
        if ok:
            server = self.new_id("srv")
            self.try_emit(
                lambda: decide.machine_launched(
                    self.state, request_key=key, server_id=server, at=self.tick(1)
                )
            )
        else:
            self.emit(ev.MachineLaunchFailed(request_key=key, reason="500", at=self.tick(1)))

    @rule(data=st.data(), startup=st.floats(0, 200))
    def ready(self, data: st.DataObject, startup: float) -> None:
        starting = [s for s, m in self.state.machines.items() if m.status == "starting"]
        server = self.pick(data, starting)
        if server:
            at = self.tick(startup)
            self.try_emit(
                lambda: decide.machine_ready(
                    self.state,
                    server,
                    service_ready_at=at,
                    estimated_stopping_at=at + 600,
                    table=TABLE,
                    at=at,
                )
            )

    @rule(data=st.data())
    def lease(self, data: st.DataObject) -> None:
        server = self.pick(data, [s for s, m in self.state.machines.items() if m.status == "ready"])
        job = self.pick(data, self.jobs_in("pending", "queued", "retrying"))
        if server and job:
            self.try_emit(lambda: decide.lease_machine(self.state, server, job, at=self.tick(0)))

    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        server = self.pick(data, list(self.state.machines))
        if server and self.state.machines[server].leases:
            job = data.draw(st.sampled_from(self.state.machines[server].leases))
            self.try_emit(lambda: decide.release_machine(self.state, server, job, at=self.tick(1)))

    @rule(data=st.data(), seconds=st.floats(0, 900))
    def accrue(self, data: st.DataObject, seconds: float) -> None:
        server = self.pick(data, list(self.state.machines))
        if server:
            until = self.tick(seconds)
            self.try_emit(lambda: cost_policy.accruals(self.state, now=until, at=until))
            self.try_emit(
                lambda: cost_policy.budget_events(
                    self.state, now=self.now, warn_fraction=WARN_FRACTION, at=self.now
                )
            )

    @rule(data=st.data(), seconds=st.floats(0, 900))
    def stop(self, data: st.DataObject, seconds: float) -> None:
        server = self.pick(data, list(self.state.machines))
        if server is None:
            return
        self.try_emit(lambda: decide.stop_machine(self.state, server, reason="idle", at=self.now))
        if self.state.machines[server].status == "stopping":
            stopped_at = self.tick(seconds)
            self.try_emit(
                lambda: machines_policy.machine_stopped(
                    self.state,
                    server,
                    stopped_at=stopped_at,
                    server_ready_at=None,
                    table=TABLE,
                    at=stopped_at,
                )
            )
            self.try_emit(
                lambda: cost_policy.budget_events(
                    self.state, now=self.now, warn_fraction=WARN_FRACTION, at=self.now
                )
            )

    @rule(startup=st.floats(0, 200))
    def provision(self, startup: float) -> None:
        """Launch, launched and ready in one step (the common path, so runs get far)."""
        key, server = self.new_id("req"), self.new_id("srv")
        self.launch_key(key)
        self.try_emit(
            lambda: decide.machine_launched(
                self.state, request_key=key, server_id=server, at=self.tick(1)
            )
        )
        at = self.tick(startup)
        self.try_emit(
            lambda: decide.machine_ready(
                self.state,
                server,
                service_ready_at=at,
                estimated_stopping_at=at + 600,
                table=TABLE,
                at=at,
            )
        )

    @rule(data=st.data())
    def dispatch(self, data: st.DataObject) -> None:
        """Lease a free ready machine to a waiting job and start it (the common path)."""
        server = free_machine(self.state, "v1")
        job = self.pick(data, self.jobs_in("pending", "queued", "retrying"))
        if server and job:
            self.try_emit(lambda: decide.lease_machine(self.state, server, job, at=self.tick(0)))
            self.try_emit(lambda: decide.start_job(self.state, job, server, at=self.tick(1)))

    def launch_key(self, key: str, max_jobs: int = 1) -> None:
        self.try_emit(
            lambda: decide.request_launch(
                self.state,
                request_key=key,
                server_type="medium",
                workflow_version="v1",
                estimated_duration=600,
                table=TABLE,
                max_jobs=max_jobs,
                at=self.tick(1),
            )
        )

    @precondition(lambda self: bool(self.state.machines))
    @rule(data=st.data())
    def lose(self, data: st.DataObject) -> None:
        server = self.pick(data, list(self.state.machines))
        if server and self.state.machines[server].status not in ("stopped", "lost"):
            self.emit(ev.MachineLost(server_id=server, reason="404", at=self.tick(1)))

    # ---- invariants

    @invariant()
    def replay_equals_live(self) -> None:
        assert fold(self.log) == self.state

    @invariant()
    def legal_commands_make_no_anomaly(self) -> None:
        assert self.state.anomaly_count == 0, self.state.anomalies

    @invariant()
    def succeeded_jobs_have_outputs(self) -> None:
        for job in self.state.jobs.values():
            if job.status == "succeeded":
                assert job.outputs

    @invariant()
    def leases_within_limit(self) -> None:
        for machine in self.state.machines.values():
            assert len(machine.leases) <= machine.max_jobs
            assert len(set(machine.leases)) == len(machine.leases)

    @invariant()
    def ledger_is_sum_of_machine_costs(self) -> None:
        machines = self.state.machines.values()
        assert self.state.ledger.total_micros == sum(m.cost_micros for m in machines)

    @invariant()
    def terminal_jobs_stay_terminal(self) -> None:
        for job_id, status in self.finished.items():
            assert self.state.jobs[job_id].status == status
        for job_id, job in self.state.jobs.items():
            if job.status in TERMINAL_STATUSES:
                self.finished[job_id] = job.status


# 40 steps an example: the inner loop runs 10 examples, the slow tests _MANY.
LegalRun.TestCase.settings = settings(max_examples=10, stateful_step_count=40, deadline=None)
TestLegalRun = LegalRun.TestCase


@pytest.mark.slow
class TestLegalRunOverManyExamples(LegalRun.TestCase):
    """The same state machine as TestLegalRun, over many more runs."""

    settings = settings(max_examples=_MANY, stateful_step_count=40, deadline=None)


def test_a_new_attempt_leaves_out_the_assets_of_the_earlier_ones_outputs() -> None:
    """The job service's assets of attempt 1's outputs are not attempt 2's outputs (their
    files are removed as it starts; it saves its own at the same paths)."""
    from conjure_actors.domain import service_events as se

    state = initial_state()
    for event in (
        ev.JobSubmitted(job_id="j", workflow_sha256="0" * 64, at=1.0),
        ev.JobQueued(job_id="j", at=1.0),
        ev.JobStarted(job_id="j", attempt=1, server_id="s", at=2.0),
        ev.OutputSaved(
            job_id="j",
            node_id="9",
            filename="o.png",
            path="/o/j/o.png",
            size=1,
            sha256="0" * 64,
            kind="image",
            at=3.0,
        ),
        se.AssetRecorded(
            asset_id="a1",
            hash="blake3:" + "0" * 64,
            size=1,
            content_type="image/png",
            job_id="j",
            node_id="9",
            kind="image",
            source_path="/o/j/o.png",
            expires_at=99.0,
            at=4.0,
        ),
        ev.JobRetrying(job_id="j", attempt=1, delay=1.0, reason="machine lost", at=5.0),
        ev.JobStarted(job_id="j", attempt=2, server_id="s", at=6.0),
    ):
        apply(state, event)
    assert state.service.job_outputs.get("j", {}) == {}
    assert "a1" in state.service.assets  # its record stays (no longer the job's output)
