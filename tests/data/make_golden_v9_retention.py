"""Write ``golden_v9_retention.log`` (and the state it must replay to): a job's retention
runs from its end since session 27 (``ApiJobExpiryMoved``): a job that waited in the queue
longer than the retention ran, and its end moved its deadline, its output's and its input
asset's to its end + the retention.

Run ``python tests/data/make_golden_v9_retention.py`` ONCE; the files are checked in and
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

from conjure_actors.domain import decide  # noqa: E402
from conjure_actors.domain import events as ev  # noqa: E402
from conjure_actors.domain import service_events as se  # noqa: E402

LOG = HERE / "golden_v9_retention.log"
STATE = HERE / "golden_v9_retention_state.json"
T0 = 1_800_800_000.0
KEEP = 60.0
WF = "e" * 64
P1 = "00000000-0000-4000-8000-0000000000b1"
J1 = "00000000-0000-4000-8000-0000000000d1"
A_IN = "00000000-0000-4000-8000-0000000000c1"
A_OUT = "00000000-0000-4000-8000-0000000000c2"
H_IN = "blake3:" + "4" * 64
H_OUT = "blake3:" + "5" * 64


def story() -> list[Any]:
    """The golden events, decided against the state as they go (so they are legal)."""
    story_ = Story(T0)
    state, out, emit, t = story_.state, story_.out, story_.emit, story_.t

    emit(
        ev.SystemStarted(run_id="run-1", version="0.1.0", mode="comfyui", at=t(0)),
        ev.MachineAttached(server_id="comfyui", kind="comfyui", at=t(0)),
        se.AssetRecorded(
            asset_id=A_IN,
            hash=H_IN,
            size=100,
            content_type="image/png",
            file_path="sketch.png",
            tags=("input",),
            expires_at=t(KEEP),
            at=t(0),
        ),
        se.ApiJobAccepted(
            job_id=J1, input_assets={"10.image": A_IN}, expires_at=t(1 + KEEP), at=t(1)
        ),
        ev.WorkflowRegistered(sha256=WF, name="api", graph_json="{}", at=t(1)),
    )
    emit(decide.submit_job(state, job_id=J1, workflow_sha256=WF, at=t(1)))
    emit(decide.queue_job(state, J1, at=t(1)))
    # Queued past its retention (a slow boot), then run.
    emit(decide.lease_machine(state, "comfyui", J1, at=t(100)))
    emit(decide.start_job(state, J1, "comfyui", at=t(100)))
    emit(
        ev.PromptSubmitting(
            job_id=J1, attempt=1, prompt_id=P1, client_id="c1", server_id="comfyui", at=t(101)
        ),
        ev.PromptSubmitted(job_id=J1, prompt_id=P1, number=1, at=t(101)),
        ev.ExecutionStarted(job_id=J1, prompt_id=P1, at=t(102)),
        ev.ExecutionSucceeded(job_id=J1, prompt_id=P1, at=t(108)),
        ev.OutputSaved(
            job_id=J1,
            node_id="13",
            filename="blurred_00001_.png",
            path="/srv/out/j1/blurred_00001_.png",
            size=200,
            sha256="6" * 64,
            kind="image",
            at=t(108),
        ),
        se.AssetRecorded(
            asset_id=A_OUT,
            hash=H_OUT,
            size=200,
            content_type="image/png",
            file_path="blurred_00001_.png",
            tags=("output",),
            job_id=J1,
            node_id="13",
            kind="image",
            source_path="/srv/out/j1/blurred_00001_.png",
            expires_at=t(108 + KEEP),
            at=t(108),
        ),
    )
    emit(decide.succeed_job(state, J1, at=t(109)))
    emit(decide.release_machine(state, "comfyui", J1, at=t(109)))
    emit(*se.expiry_moves(state, KEEP, t(109)))
    emit(ev.SystemStopped(reason="done", at=t(110)))
    assert state.anomaly_count == 0, state.anomalies
    assert state.service.api_jobs[J1].expires_at == t(109 + KEEP)
    return out


def main() -> int:
    return write_golden(LOG, STATE, story())


if __name__ == "__main__":
    raise SystemExit(main())
