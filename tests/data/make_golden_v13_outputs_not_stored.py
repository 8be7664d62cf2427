"""Write ``golden_v13_outputs_not_stored.log`` (and the state it must replay to): since
session 30 a job that succeeded but whose outputs could not all be stored as assets (the
blob store refused their bytes, or a file went) has the AssetActor's
``ApiJobOutputsNotStored``: the API reads it ``failed`` (``outputs_not_stored``) for good,
a restart included. Here one of the job's two outputs was stored, the other refused.

Run ``python tests/data/make_golden_v13_outputs_not_stored.py`` ONCE; the files are checked
in and ``tests/domain/test_domain_golden.py`` replays every ``golden_v*.log`` on each CI run
(see ``make_golden.py`` for the rules: never regenerate an existing golden log).
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

LOG = HERE / "golden_v13_outputs_not_stored.log"
STATE = HERE / "golden_v13_outputs_not_stored_state.json"
T0 = 1_801_300_000.0
KEEP = 600.0
WF = "f" * 64
P1 = "00000000-0000-4000-8000-0000000000b1"
J1 = "00000000-0000-4000-8000-0000000000d1"
A_OUT = "00000000-0000-4000-8000-0000000000c1"
H_OUT = "blake3:" + "7" * 64
STORED = "/srv/out/j1/depth_00001_.png"
REFUSED = "/srv/out/j1/mesh_00001_.glb"


def story() -> list[Any]:
    """The golden events, decided against the state as they go (so they are legal)."""
    story_ = Story(T0)
    state, out, emit, t = story_.state, story_.out, story_.emit, story_.t

    emit(
        ev.SystemStarted(run_id="run-1", version="0.1.0", mode="comfyui", at=t(0)),
        ev.MachineAttached(server_id="comfyui", kind="comfyui", at=t(0)),
        se.ApiJobAccepted(job_id=J1, expires_at=t(1 + KEEP), at=t(1)),
        ev.WorkflowRegistered(sha256=WF, name="api", graph_json="{}", at=t(1)),
    )
    emit(decide.submit_job(state, job_id=J1, workflow_sha256=WF, at=t(1)))
    emit(decide.queue_job(state, J1, at=t(1)))
    emit(decide.lease_machine(state, "comfyui", J1, at=t(2)))
    emit(decide.start_job(state, J1, "comfyui", at=t(2)))
    emit(
        ev.PromptSubmitting(
            job_id=J1, attempt=1, prompt_id=P1, client_id="c1", server_id="comfyui", at=t(3)
        ),
        ev.PromptSubmitted(job_id=J1, prompt_id=P1, number=1, at=t(3)),
        ev.ExecutionStarted(job_id=J1, prompt_id=P1, at=t(4)),
        ev.ExecutionSucceeded(job_id=J1, prompt_id=P1, at=t(10)),
        ev.OutputSaved(
            job_id=J1,
            node_id="13",
            filename="depth_00001_.png",
            path=STORED,
            size=200,
            sha256="8" * 64,
            kind="image",
            at=t(10),
        ),
        ev.OutputSaved(
            job_id=J1,
            node_id="20",
            filename="mesh_00001_.glb",
            path=REFUSED,
            size=900,
            sha256="9" * 64,
            kind="mesh",
            at=t(10),
        ),
        se.AssetRecorded(
            asset_id=A_OUT,
            hash=H_OUT,
            size=200,
            content_type="image/png",
            file_path="depth_00001_.png",
            tags=("output",),
            job_id=J1,
            node_id="13",
            kind="image",
            source_path=STORED,
            expires_at=t(10 + KEEP),
            at=t(10),
        ),
    )
    emit(decide.succeed_job(state, J1, at=t(11)))
    emit(decide.release_machine(state, "comfyui", J1, at=t(11)))
    emit(*se.expiry_moves(state, KEEP, t(11)))
    emit(
        se.ApiJobOutputsNotStored(
            job_id=J1,
            paths=(REFUSED,),
            reason="the server's asset store refuses writes: Read-only file system",
            at=t(41),
        ),
        ev.SystemStopped(reason="done", at=t(50)),
    )
    assert state.anomaly_count == 0, state.anomalies
    assert se.served_status(state, state.jobs[J1]) == "failed"
    return out


def main() -> int:
    return write_golden(LOG, STATE, story())


if __name__ == "__main__":
    raise SystemExit(main())
