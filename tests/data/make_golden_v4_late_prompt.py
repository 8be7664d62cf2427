"""Write ``golden_v4_late_prompt.log`` (and the state it must replay to): a prompt given up
on by its job (``POST /prompt`` outcome unknown, not found), stopped by the MachineActor when
it arrived late (``LatePromptStopped``).

Run ``python tests/data/make_golden_v4_late_prompt.py`` ONCE; the files are checked in and
``tests/domain/test_domain_golden.py`` replays every ``golden_v*.log`` on each CI run (see
``make_golden.py`` for the rules: never regenerate an existing golden log).

The story: a job's first POST /prompt gets no answer and its lookup does not find it; the job
retries with a fresh prompt, which succeeds; the first prompt reaches ComfyUI late, queued
behind the retry's, and is deleted from the queue.
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

LOG = HERE / "golden_v4_late_prompt.log"
STATE = HERE / "golden_v4_late_prompt_state.json"
T0 = 1_800_300_000.0
WF = "e" * 64
P1 = "00000000-0000-4000-8000-0000000000e1"
P2 = "00000000-0000-4000-8000-0000000000e2"
J1 = "00000000-0000-4000-8000-0000000000f1"


def story() -> list[Any]:
    """The golden events, decided against the state as they go (so they are legal)."""
    story_ = Story(T0)
    state, out, emit, t = story_.state, story_.out, story_.emit, story_.t

    emit(
        ev.SystemStarted(run_id="run-1", version="0.1.0", mode="comfyui", at=t(0)),
        ev.MachineAttached(server_id="comfyui", kind="comfyui", at=t(0)),
        ev.WorkflowRegistered(sha256=WF, name="api", graph_json="{}", at=t(1)),
    )
    emit(decide.submit_job(state, job_id=J1, workflow_sha256=WF, at=t(1)))
    emit(decide.queue_job(state, J1, at=t(1)))
    emit(decide.lease_machine(state, "comfyui", J1, at=t(2)))
    emit(decide.start_job(state, J1, "comfyui", at=t(2)))
    emit(
        ev.PromptSubmitting(
            job_id=J1, attempt=1, prompt_id=P1, client_id="c1", server_id="comfyui", at=t(2)
        )
    )
    emit(
        decide.retry_job(
            state, J1, delay=1.0, reason="prompt submission outcome unknown and not found", at=t(40)
        )
    )
    emit(decide.start_job(state, J1, "comfyui", at=t(41)))
    emit(
        ev.PromptSubmitting(
            job_id=J1, attempt=2, prompt_id=P2, client_id="c1", server_id="comfyui", at=t(41)
        ),
        ev.PromptSubmitted(job_id=J1, prompt_id=P2, number=2, at=t(41)),
        ev.ExecutionStarted(job_id=J1, prompt_id=P2, at=t(42)),
        ev.LatePromptStopped(server_id="comfyui", prompt_id=P1, job_id=J1, was="pending", at=t(50)),
        ev.ExecutionSucceeded(job_id=J1, prompt_id=P2, at=t(60)),
        ev.OutputSaved(
            job_id=J1,
            node_id="13",
            filename="loaded_00001_.png",
            path="/srv/out/j1/loaded_00001_.png",
            size=200,
            sha256="4" * 64,
            kind="image",
            at=t(61),
        ),
    )
    emit(decide.succeed_job(state, J1, at=t(61)))
    emit(decide.release_machine(state, "comfyui", J1, at=t(61)))
    emit(ev.SystemStopped(reason="done", at=t(62)))
    assert state.anomaly_count == 0, state.anomalies
    return out


def main() -> int:
    return write_golden(LOG, STATE, story())


if __name__ == "__main__":
    raise SystemExit(main())
