"""Write ``golden_v3_service.log`` (and the state it must replay to): the job service's
events (``conjure_actors.domain.service_events``).

Run ``python tests/data/make_golden_v3_service.py`` ONCE; the files are checked in and
``tests/domain/test_domain_golden.py`` replays every ``golden_v*.log`` on each CI run (see
``make_golden.py`` for the rules: never regenerate an existing golden log).

The story: a client uploads an image (an asset) and submits a job with labels and an
Idempotency-Key that uses it; a second submission's key is claimed then released (it was
refused); the job succeeds and its output becomes an asset; a third job is cancelled by the
client; the uploaded asset is deleted, the output asset and the first job expire.
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

LOG = HERE / "golden_v3_service.log"
STATE = HERE / "golden_v3_service_state.json"
T0 = 1_800_200_000.0
WF = "f" * 64
P1 = "00000000-0000-4000-8000-0000000000b1"
J1 = "00000000-0000-4000-8000-0000000000d1"
J3 = "00000000-0000-4000-8000-0000000000d3"
A_IN = "00000000-0000-4000-8000-0000000000c1"
A_OUT = "00000000-0000-4000-8000-0000000000c2"
H_IN = "blake3:" + "1" * 64
H_OUT = "blake3:" + "2" * 64


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
            expires_at=t(600),
            at=t(1),
        ),
        se.IdempotencyKeyClaimed(key="k1", scope="jobs", expires_at=t(86400), at=t(2)),
        se.ApiJobAccepted(
            job_id=J1,
            labels={"client": "golden"},
            idempotency_key="k1",
            input_assets={"10.image": A_IN},
            expires_at=t(300),
            at=t(2),
        ),
        ev.WorkflowRegistered(sha256=WF, name="api", graph_json="{}", at=t(2)),
    )
    emit(decide.submit_job(state, job_id=J1, workflow_sha256=WF, at=t(2)))
    emit(decide.queue_job(state, J1, at=t(2)))
    emit(
        se.IdempotencyKeyClaimed(key="k2", scope="jobs", expires_at=t(86400), at=t(3)),
        se.IdempotencyKeyReleased(key="k2", scope="jobs", reason="WorkflowError", at=t(3)),
    )
    emit(decide.lease_machine(state, "comfyui", J1, at=t(4)))
    emit(decide.start_job(state, J1, "comfyui", at=t(4)))
    emit(
        ev.PromptSubmitting(
            job_id=J1, attempt=1, prompt_id=P1, client_id="c1", server_id="comfyui", at=t(5)
        ),
        ev.PromptSubmitted(job_id=J1, prompt_id=P1, number=1, at=t(5)),
        ev.ExecutionStarted(job_id=J1, prompt_id=P1, at=t(6)),
        ev.ExecutionSucceeded(job_id=J1, prompt_id=P1, at=t(8)),
        ev.OutputSaved(
            job_id=J1,
            node_id="13",
            filename="loaded_00001_.png",
            path="/srv/out/j1/loaded_00001_.png",
            size=200,
            sha256="3" * 64,
            kind="image",
            at=t(9),
        ),
    )
    emit(decide.succeed_job(state, J1, at=t(9)))
    emit(decide.release_machine(state, "comfyui", J1, at=t(9)))
    emit(
        se.AssetRecorded(
            asset_id=A_OUT,
            hash=H_OUT,
            size=200,
            content_type="image/png",
            file_path="loaded_00001_.png",
            tags=("output",),
            job_id=J1,
            node_id="13",
            kind="image",
            source_path="/srv/out/j1/loaded_00001_.png",
            expires_at=t(300),
            at=t(10),
        ),
        se.ApiJobAccepted(job_id=J3, expires_at=t(400), at=t(11)),
    )
    emit(decide.submit_job(state, job_id=J3, workflow_sha256=WF, at=t(11)))
    emit(decide.queue_job(state, J3, at=t(11)))
    emit(se.ApiJobCancelRequested(job_id=J3, at=t(12)))
    emit(decide.cancel_job(state, J3, reason="cancelled by the client", at=t(12)))
    emit(
        se.AssetDeleted(asset_id=A_IN, at=t(20)),
        se.ApiJobExpired(job_id=J1, at=t(300)),
        se.AssetExpired(asset_id=A_OUT, at=t(300)),
        ev.SystemStopped(reason="done", at=t(301)),
    )
    assert state.anomaly_count == 0, state.anomalies
    return out


def main() -> int:
    return write_golden(LOG, STATE, story())


if __name__ == "__main__":
    raise SystemExit(main())
