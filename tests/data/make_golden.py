"""Write the golden event log (``golden_v1.log``) and the state it must replay to.

Run ``python tests/data/make_golden.py`` ONCE per log-format generation; the files are
checked in, and ``tests/domain/test_domain_golden.py`` replays them on every CI run, so a
change that breaks old logs fails CI (then write an upcaster; never regenerate an existing
golden log to make the test pass). ``--state-only`` rewrites only the expected state JSON
(after a deliberate, documented change of the state's JSON schema).

The story touches every event type of the v1 vocabulary: one CONJURE job that succeeds on a
RunComfy machine after a retry, one that fails validation, one cancelled, one run on an
attached ComfyUI, a crash (no SystemStopped) and a resume that adopts a machine, budget
warnings and a refused launch, and the actor runtime's lifecycle events. Every time and id
is fixed, so the events (and the state) are byte-for-byte reproducible.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import msgspec

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))
sys.path.insert(0, str(HERE))

from golden_story import Story, write_golden  # noqa: E402

from conjure_actors.domain import cost_policy, decide, machines_policy  # noqa: E402
from conjure_actors.domain import events as ev  # noqa: E402
from conjure_actors.domain.prices import default_price_table  # noqa: E402
from conjure_actors.domain.workflow import load_workflow  # noqa: E402
from conjure_actors.runtime import events as rt  # noqa: E402

LOG = HERE / "golden_v1.log"
STATE = HERE / "golden_v1_state.json"
T0 = 1_800_000_000.0
WARN_FRACTION = 0.8
"""The budget's warning fraction when v1 was written (then fixed, now ``budget.warn_fraction``)."""


def story() -> list[Any]:
    """The golden events, decided against the state as they go (so they are legal)."""
    table = default_price_table("pro")
    workflow = load_workflow(HERE.parent.parent / "conjure_actors/workflows/conjure_flux_mesh.json")
    story_ = Story(T0)
    state, out, emit, t = story_.state, story_.out, story_.emit, story_.t

    emit(
        ev.SystemStarted(run_id="run-1", version="0.1.0", mode="runcomfy", at=t(0)),
        rt.ActorStarted(actor="machines", incarnation=1, at=t(0)),
        rt.ActorStarted(actor="cost", incarnation=1, at=t(0)),
        ev.WorkflowRegistered(
            sha256=workflow.sha256,
            name=workflow.name,
            graph_json=workflow.canonical_json(),
            at=t(0),
        ),
        ev.BudgetSet(limit_micros=115_000, at=t(0)),
    )
    bindings = {"16.image": '"sketch.png"', "34.clip_l": '"a fox"', "34.t5xxl": '"a fox"'}
    emit(
        decide.submit_job(
            state,
            job_id="job-1",
            workflow_sha256=workflow.sha256,
            bindings=bindings,
            image_path="in/sketch.png",
            image_sha256="a" * 64,
            prompt="a fox",
            seed=42,
            at=t(1),
        )
    )
    emit(
        decide.submit_job(
            state, job_id="job-2", workflow_sha256=workflow.sha256, parent_id="job-1", at=t(1)
        ),
        decide.submit_job(state, job_id="job-3", workflow_sha256=workflow.sha256, at=t(1)),
    )
    emit(*(decide.queue_job(state, j, at=t(2)) for j in ("job-1", "job-2", "job-3")))
    emit(
        decide.request_launch(
            state,
            request_key="launch-1",
            server_type="medium",
            workflow_version="wv-1",
            estimated_duration=600,
            table=table,
            at=t(3),
        )
    )
    emit(decide.machine_launched(state, request_key="launch-1", server_id="srv-1", at=t(4)))
    emit(ev.MachineStatusObserved(server_id="srv-1", status="Starting", at=t(5)))
    emit(
        decide.machine_ready(
            state,
            "srv-1",
            service_ready_at=t(120),
            estimated_stopping_at=t(720),
            table=table,
            at=t(121),
        ),
        ev.MachineHealthy(server_id="srv-1", at=t(122)),
    )
    emit(decide.lease_machine(state, "srv-1", "job-1", at=t(123)))
    emit(decide.start_job(state, "job-1", "srv-1", at=t(123)))
    emit(
        ev.InputUploaded(
            job_id="job-1", node_id="16", name="sketch.png", sha256="a" * 64, size=590, at=t(124)
        ),
        ev.PromptSubmitting(
            job_id="job-1",
            attempt=1,
            prompt_id="00000000-0000-4000-8000-000000000001",
            client_id="c-1",
            server_id="srv-1",
            at=t(125),
        ),
        ev.PromptSubmitted(
            job_id="job-1", prompt_id="00000000-0000-4000-8000-000000000001", number=1, at=t(125)
        ),
        ev.ExecutionStarted(
            job_id="job-1", prompt_id="00000000-0000-4000-8000-000000000001", at=t(126)
        ),
        ev.NodeCached(
            job_id="job-1",
            prompt_id="00000000-0000-4000-8000-000000000001",
            nodes=("11", "12", "13"),
            at=t(126),
        ),
        ev.NodeStarted(
            job_id="job-1",
            prompt_id="00000000-0000-4000-8000-000000000001",
            node_id="20",
            at=t(127),
        ),
        ev.NodeProgress(
            job_id="job-1",
            prompt_id="00000000-0000-4000-8000-000000000001",
            node_id="20",
            value=1,
            max=20,
            at=t(128),
        ),
        ev.ExecutionFailed(
            job_id="job-1",
            prompt_id="00000000-0000-4000-8000-000000000001",
            node_id="20",
            node_type="KSampler",
            exception_type="torch.OutOfMemoryError",
            message="CUDA out of memory",
            at=t(130),
        ),
    )
    emit(decide.retry_job(state, "job-1", delay=2.0, reason="OutOfMemoryError", at=t(131)))
    emit(decide.start_job(state, "job-1", "srv-1", at=t(133)))
    p2 = "00000000-0000-4000-8000-000000000002"
    emit(
        ev.PromptSubmitting(
            job_id="job-1",
            attempt=2,
            prompt_id=p2,
            client_id="c-2",
            server_id="srv-1",
            at=t(134),
        ),
        ev.PromptSubmitted(job_id="job-1", prompt_id=p2, number=2, at=t(134)),
        ev.ExecutionStarted(job_id="job-1", prompt_id=p2, at=t(135)),
        ev.NodeStarted(job_id="job-1", prompt_id=p2, node_id="20", at=t(135)),
    )
    emit(
        *(
            ev.NodeProgress(
                job_id="job-1", prompt_id=p2, node_id="20", value=i, max=20, at=t(135 + i)
            )
            for i in range(1, 21)
        )
    )
    emit(
        ev.NodeExecuted(job_id="job-1", prompt_id=p2, node_id="20", at=t(156)),
        ev.JobStalled(job_id="job-1", idle_seconds=60.0, at=t(216)),
        ev.NodeExecuted(job_id="job-1", prompt_id=p2, node_id="24", at=t(217)),
        ev.NodeExecuted(job_id="job-1", prompt_id=p2, node_id="33", at=t(230)),
        ev.ExecutionSucceeded(job_id="job-1", prompt_id=p2, at=t(230)),
        ev.OutputSaved(
            job_id="job-1",
            node_id="24",
            filename="flux_00001_.png",
            path="out/job-1/flux_00001_.png",
            size=123_456,
            sha256="b" * 64,
            kind="image",
            at=t(231),
        ),
        ev.OutputSaved(
            job_id="job-1",
            node_id="33",
            filename="mesh_00001_.glb",
            path="out/job-1/mesh_00001_.glb",
            size=654_321,
            sha256="c" * 64,
            kind="mesh",
            at=t(232),
        ),
    )
    emit(decide.succeed_job(state, "job-1", at=t(233)))
    emit(decide.release_machine(state, "srv-1", "job-1", at=t(233)))
    # job-2: rejected by ComfyUI's validation (not retryable).
    emit(decide.lease_machine(state, "srv-1", "job-2", at=t(234)))
    emit(decide.start_job(state, "job-2", "srv-1", at=t(234)))
    p3 = "00000000-0000-4000-8000-000000000003"
    emit(
        ev.PromptSubmitting(
            job_id="job-2",
            attempt=1,
            prompt_id=p3,
            client_id="c-3",
            server_id="srv-1",
            at=t(235),
        ),
        ev.PromptRejected(
            job_id="job-2",
            prompt_id=p3,
            error_type="prompt_outputs_failed_validation",
            message="node 16: image not found",
            at=t(235),
        ),
    )
    emit(
        decide.fail_job(
            state,
            "job-2",
            error_type="PromptRejected",
            message="node 16: image not found",
            at=t(236),
        )
    )
    emit(decide.release_machine(state, "srv-1", "job-2", at=t(236)))
    emit(ev.LeaseRenewed(server_id="srv-1", estimated_stopping_at=t(1320), at=t(300)))
    emit(*cost_policy.accruals(state, now=t(420), at=t(420)))
    # job-3 is interrupted and then cancelled by the user.
    emit(decide.lease_machine(state, "srv-1", "job-3", at=t(421)))
    emit(decide.start_job(state, "job-3", "srv-1", at=t(421)))
    p4 = "00000000-0000-4000-8000-000000000004"
    emit(
        ev.PromptSubmitting(
            job_id="job-3",
            attempt=1,
            prompt_id=p4,
            client_id="c-4",
            server_id="srv-1",
            at=t(422),
        ),
        ev.PromptSubmitted(job_id="job-3", prompt_id=p4, number=3, at=t(422)),
        ev.ExecutionStarted(job_id="job-3", prompt_id=p4, at=t(423)),
        ev.NodeStarted(job_id="job-3", prompt_id=p4, node_id="17", at=t(423)),
        ev.ExecutionInterrupted(job_id="job-3", prompt_id=p4, node_id="17", at=t(424)),
    )
    emit(decide.cancel_job(state, "job-3", reason="user", at=t(425)))
    emit(decide.release_machine(state, "srv-1", "job-3", at=t(425)))
    emit(*cost_policy.budget_events(state, now=t(425), warn_fraction=WARN_FRACTION, at=t(425)))
    # A launch that fails, and one refused by the budget.
    emit(
        decide.request_launch(
            state,
            request_key="launch-2",
            server_type="large",
            workflow_version="wv-1",
            estimated_duration=600,
            table=table,
            at=t(430),
        ),
        ev.MachineLaunchFailed(request_key="launch-2", reason="HTTP 503", at=t(431)),
    )
    emit(decide.submit_job(state, job_id="job-4", workflow_sha256=workflow.sha256, at=t(432)))
    emit(decide.queue_job(state, "job-4", at=t(432)))
    refused = cost_policy.check_launch(
        state, "job-4", estimate=500_000, lease_micros=0, now=t(433), at=t(433)
    )
    assert refused is not None
    # v1 logged what remained of the limit after the ACCRUED cost; today's rule also takes
    # off the running cost and the leases' commitment. The log keeps v1's figure.
    limit = state.budget.limit_micros
    assert limit is not None
    emit(msgspec.structs.replace(refused, remaining_micros=limit - state.ledger.total_micros))
    # An attached ComfyUI (no cost) runs job-4.
    emit(ev.MachineAttached(server_id="local-comfyui", kind="comfyui", at=t(440)))
    emit(decide.lease_machine(state, "local-comfyui", "job-4", at=t(441)))
    emit(decide.start_job(state, "job-4", "local-comfyui", at=t(441)))
    # The runtime crashes here (no SystemStopped), with a launch intent and a prompt in flight.
    emit(
        rt.ActorCrashed(
            actor="machines", incarnation=1, error_type="RuntimeError", message="boom", at=t(450)
        ),
        rt.ActorRestarted(actor="machines", incarnation=2, delay=0.5, at=t(450.5)),
        rt.SupervisorEscalated(
            supervisor="root", child="machines", restarts=3, window=60.0, at=t(451)
        ),
        decide.request_launch(
            state,
            request_key="launch-3",
            server_type="medium",
            workflow_version="wv-1",
            estimated_duration=600,
            table=table,
            at=t(452),
        ),
        ev.PromptSubmitting(
            job_id="job-4",
            attempt=1,
            prompt_id="00000000-0000-4000-8000-000000000005",
            client_id="c-5",
            server_id="local-comfyui",
            at=t(453),
        ),
    )
    # Resume: adopt the machine the dangling launch started, requeue job-4, stop everything.
    emit(
        ev.SystemStarted(run_id="run-2", version="0.1.0", mode="runcomfy", at=t(600)),
        ev.MachineAdopted(
            server_id="srv-3",
            request_key="launch-3",
            server_type="medium",
            workflow_version="wv-1",
            status="Ready",
            service_ready_at=t(560),
            estimated_stopping_at=t(1160),
            rate_micros_per_hour=table.rate("medium"),
            price_table_version=table.version,
            at=t(601),
        ),
        ev.PromptRejected(
            job_id="job-4",
            prompt_id="00000000-0000-4000-8000-000000000005",
            error_type="unknown_after_crash",
            message="not in /queue or /history",
            at=t(602),
        ),
    )
    emit(decide.queue_job(state, "job-4", reason="resume", at=t(602)))
    emit(decide.cancel_job(state, "job-4", reason="shutdown", at=t(603)))
    emit(decide.release_machine(state, "local-comfyui", "job-4", at=t(603)))
    # v1 checked the budget here on the accrued cost alone (under 80%: nothing due); today's
    # rule counts the cost up to now and would warn at 603, which v1 did not log.
    for server, stopped in (("srv-1", 610.4), ("srv-3", 612.0)):
        emit(decide.stop_machine(state, server, reason="shutdown", at=t(605)))
        bill = machines_policy.machine_stopped(
            state, server, stopped_at=t(stopped), server_ready_at=None, table=table, at=t(stopped)
        )
        # v1's MachineStopped had no final-record fields (they decode to their defaults).
        emit(
            msgspec.structs.replace(
                bill, service_ready_at=None, rate_micros_per_hour=0, price_table_version=""
            )
        )
    emit(*cost_policy.budget_events(state, now=t(613), warn_fraction=WARN_FRACTION, at=t(613)))
    emit(
        ev.MachineLost(server_id="local-comfyui", reason="connection refused", at=t(614)),
        rt.ActorStopped(actor="machines", incarnation=2, reason="shutdown", at=t(615)),
        rt.ActorStopped(actor="cost", incarnation=1, reason="shutdown", at=t(615)),
        ev.SystemStopped(reason="done", at=t(616)),
    )
    assert state.anomaly_count == 0, state.anomalies
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--state-only", action="store_true", help="rewrite the state JSON only")
    args = parser.parse_args()
    events = story()
    if code := write_golden(LOG, STATE, events, state_only=args.state_only):
        return code
    missing = {cls.__name__ for cls in ev.EVENT_TYPES} - {type(e).__name__ for e in events}
    print(f"event types missing from the story: {missing}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
