"""Write ``golden_v2_jobs.log`` (and the state it must replay to): the job events added after
v1, ``JobInterrupted`` and ``JobResumed``.

Run ``python tests/data/make_golden_v2_jobs.py`` ONCE; the files are checked in and
``tests/domain/test_domain_golden.py`` replays every ``golden_v*.log`` on each CI run (see
``make_golden.py`` for the rules: never regenerate an existing golden log).

The story: two jobs on an attached ComfyUI; the run is interrupted (Ctrl-C) while job-1's
prompt runs and job-2 waits; a resume re-attaches job-1 to its prompt (it succeeds) and
takes job-2 up from the queue (the user cancels it).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))
sys.path.insert(0, str(HERE))

from golden_story import Story, write_golden  # noqa: E402

from conjure_actors.domain import decide  # noqa: E402
from conjure_actors.domain import events as ev  # noqa: E402

LOG = HERE / "golden_v2_jobs.log"
STATE = HERE / "golden_v2_jobs_state.json"
T0 = 1_800_100_000.0
WF = "d" * 64
P1 = "00000000-0000-4000-8000-0000000000a1"


def story() -> list[Any]:
    """The golden events, decided against the state as they go (so they are legal)."""
    story_ = Story(T0)
    state, out, emit, t = story_.state, story_.out, story_.emit, story_.t

    emit(
        ev.SystemStarted(run_id="run-1", version="0.1.0", mode="comfyui", at=t(0)),
        ev.WorkflowRegistered(sha256=WF, name="w", graph_json="{}", at=t(0)),
        ev.MachineAttached(server_id="comfyui", kind="comfyui", at=t(0)),
    )
    for job in ("job-1", "job-2"):
        emit(decide.submit_job(state, job_id=job, workflow_sha256=WF, at=t(1)))
        emit(decide.queue_job(state, job, at=t(1)))
    emit(decide.lease_machine(state, "comfyui", "job-1", at=t(2)))
    emit(decide.start_job(state, "job-1", "comfyui", at=t(2)))
    emit(
        ev.PromptSubmitting(
            job_id="job-1", attempt=1, prompt_id=P1, client_id="c1", server_id="comfyui", at=t(3)
        ),
        ev.PromptSubmitted(job_id="job-1", prompt_id=P1, number=1, at=t(3)),
        ev.ExecutionStarted(job_id="job-1", prompt_id=P1, at=t(4)),
    )
    # Ctrl-C: both jobs are interrupted, not cancelled.
    for job in ("job-1", "job-2"):
        emit(decide.interrupt_job(state, job, reason="interrupted", at=t(5)))
    emit(decide.release_machine(state, "comfyui", "job-1", at=t(5)))
    emit(ev.SystemStopped(reason="interrupted", at=t(6)))
    # run --resume: job-1 re-attaches to its prompt, job-2 is queued again.
    emit(ev.SystemStarted(run_id="run-2", version="0.1.0", mode="comfyui", at=t(100)))
    emit(ev.MachineAttached(server_id="comfyui", kind="comfyui", at=t(100)))
    for job in ("job-1", "job-2"):
        emit(decide.resume_job(state, job, at=t(101)))
    assert state.jobs["job-1"].status == "running", state.jobs["job-1"]
    assert state.jobs["job-2"].status == "queued", state.jobs["job-2"]
    emit(decide.lease_machine(state, "comfyui", "job-1", at=t(101)))
    emit(
        ev.ExecutionSucceeded(job_id="job-1", prompt_id=P1, at=t(110)),
        ev.OutputSaved(
            job_id="job-1",
            node_id="9",
            filename="out_00001_.png",
            path="/srv/out/job-1/out_00001_.png",
            size=1234,
            sha256="e" * 64,
            kind="image",
            at=t(111),
        ),
    )
    emit(decide.succeed_job(state, "job-1", at=t(112)))
    emit(decide.release_machine(state, "comfyui", "job-1", at=t(112)))
    emit(decide.cancel_job(state, "job-2", reason="user", at=t(113)))
    emit(ev.SystemStopped(reason="done", at=t(114)))
    assert state.anomaly_count == 0, state.anomalies
    return out


def main() -> int:
    return write_golden(LOG, STATE, story())


if __name__ == "__main__":
    raise SystemExit(main())
