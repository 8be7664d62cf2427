"""Write ``golden_v8_draining.log`` (and the state it must replay to): a machine drained since
session 27 (``MachineDraining``): a job gave its re-attach up there before any lookup of its
prompt answered, so the machine takes no new job and is stopped once the other job on it
ends; the log says so with the give-up's release, before the job's retry.

Run ``python tests/data/make_golden_v8_draining.py`` ONCE; the files are checked in and
``tests/domain/test_domain_golden.py`` replays every ``golden_v*.log`` on each CI run (see
``make_golden.py`` for the rules: never regenerate an existing golden log).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))
sys.path.insert(0, str(HERE))

from golden_story import Story, write_golden  # noqa: E402

from conjure_actors.domain import decide, machines_policy  # noqa: E402
from conjure_actors.domain import events as ev  # noqa: E402
from conjure_actors.domain.prices import default_price_table  # noqa: E402

LOG = HERE / "golden_v8_draining.log"
STATE = HERE / "golden_v8_draining_state.json"
T0 = 1_800_700_000.0
WF = "d" * 64
J1 = "00000000-0000-4000-8000-0000000000d1"
J2 = "00000000-0000-4000-8000-0000000000d2"
P1 = "00000000-0000-4000-8000-0000000000a1"
P2 = "00000000-0000-4000-8000-0000000000a2"


def story() -> list[Any]:
    """The golden events, decided against the state as they go (so they are legal)."""
    table = default_price_table("hobby")
    story_ = Story(T0)
    state, out, emit, t = story_.state, story_.out, story_.emit, story_.t

    emit(
        ev.SystemStarted(run_id="run-1", version="0.1.0", mode="runcomfy", at=t(0)),
        ev.WorkflowRegistered(sha256=WF, name="w.json", graph_json="{}", at=t(0)),
    )
    for job in (J1, J2):
        emit(decide.submit_job(state, job_id=job, workflow_sha256=WF, at=t(0)))
        emit(decide.queue_job(state, job, at=t(0)))
    emit(
        decide.request_launch(
            state,
            request_key="launch-1",
            server_type="2x-large",
            workflow_version="wv-1",
            estimated_duration=3600,
            table=table,
            at=t(0),
            max_jobs=2,
        )
    )
    emit(decide.machine_launched(state, request_key="launch-1", server_id="srv-1", at=t(1)))
    emit(
        decide.machine_ready(
            state,
            "srv-1",
            service_ready_at=t(60),
            estimated_stopping_at=t(3660),
            table=table,
            at=t(61),
        ),
        ev.MachineHealthy(server_id="srv-1", at=t(62)),
    )
    for n, (job, prompt) in enumerate(((J1, P1), (J2, P2)), start=1):
        emit(decide.lease_machine(state, "srv-1", job, at=t(62 + n)))
        emit(decide.start_job(state, job, "srv-1", at=t(62 + n)))
        emit(
            ev.PromptSubmitting(
                job_id=job,
                attempt=1,
                prompt_id=prompt,
                client_id="c1",
                server_id="srv-1",
                at=t(62 + n),
            ),
            ev.PromptSubmitted(job_id=job, prompt_id=prompt, number=n, at=t(62 + n)),
        )
    # J1's re-attach (after a restart, not in this story) is given up unlooked-up: the pool
    # logs its release and the machine's draining together, then J1 logs its retry.
    emit(
        decide.release_machine(state, "srv-1", J1, at=t(700)),
        machines_policy.drain_machine(state, "srv-1", reason="reattach_given_up", at=t(700)),
    )
    emit(
        decide.retry_job(state, J1, delay=1.0, reason="server srv-1: re-attach given up", at=t(700))
    )
    emit(
        ev.ExecutionSucceeded(job_id=J2, prompt_id=P2, at=t(800)),
        ev.OutputSaved(
            job_id=J2,
            node_id="9",
            filename="out_00001_.png",
            path="/srv/out/j2/out_00001_.png",
            size=300,
            sha256="5" * 64,
            kind="image",
            at=t(801),
        ),
    )
    emit(decide.succeed_job(state, J2, at=t(801)))
    emit(decide.release_machine(state, "srv-1", J2, at=t(801)))
    emit(decide.stop_machine(state, "srv-1", reason="reattach_given_up", at=t(801)))
    emit(
        machines_policy.bill_after_delete(
            state,
            "srv-1",
            found=True,
            answered_at=t(802),
            server_ready_at=None,
            table=table,
            at=t(802),
        )
    )
    emit(ev.SystemStopped(reason="interrupted", at=t(803)))
    assert state.anomaly_count == 0, state.anomalies
    return out


def main() -> int:
    return write_golden(LOG, STATE, story())


if __name__ == "__main__":
    raise SystemExit(main())
