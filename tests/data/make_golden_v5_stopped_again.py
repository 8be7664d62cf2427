"""Write ``golden_v5_stopped_again.log`` (and the state it must replay to): machines whose
``DELETE`` answered 200 but that stayed up, billing, until a ``DELETE`` sent again
(``MachineStoppedAgain``): one stopped by the second answer, one found gone (404) by it, one
stopped while Starting that became Ready after the first answer.

Run ``python tests/data/make_golden_v5_stopped_again.py`` ONCE; the files are checked in and
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

LOG = HERE / "golden_v5_stopped_again.log"
STATE = HERE / "golden_v5_stopped_again_state.json"
T0 = 1_800_400_000.0


def story() -> list[Any]:
    """The golden events, decided against the state as they go (so they are legal)."""
    table = default_price_table("pro")
    story_ = Story(T0)
    state, out, emit, t = story_.state, story_.out, story_.emit, story_.t

    emit(ev.SystemStarted(run_id="run-1", version="0.1.0", mode="runcomfy", at=t(0)))
    for n, server in enumerate(("srv-1", "srv-2", "srv-3"), start=1):
        emit(
            decide.request_launch(
                state,
                request_key=f"launch-{n}",
                server_type="medium",
                workflow_version="wv-1",
                estimated_duration=600,
                table=table,
                at=t(n),
            )
        )
        emit(decide.machine_launched(state, request_key=f"launch-{n}", server_id=server, at=t(n)))
    for server in ("srv-1", "srv-2"):
        emit(
            decide.machine_ready(
                state,
                server,
                service_ready_at=t(60),
                estimated_stopping_at=t(660),
                table=table,
                at=t(61),
            )
        )
    for server in ("srv-1", "srv-2", "srv-3"):
        emit(decide.stop_machine(state, server, reason="idle", at=t(100)))
        emit(
            machines_policy.bill_after_delete(
                state,
                server,
                found=True,
                answered_at=t(101),
                server_ready_at=None,
                table=table,
                at=t(101),
            )
        )
    # Each was still listed up; a DELETE sent again answered (srv-2: 404, gone by then;
    # srv-3: it had become Ready at 105, after the first answer).
    for server, found, ready in (
        ("srv-1", True, None),
        ("srv-2", False, None),
        ("srv-3", True, t(105)),
    ):
        again = machines_policy.bill_after_stop_again(
            state,
            server,
            found=found,
            answered_at=t(130),
            server_ready_at=ready,
            table=table,
            at=t(130),
        )
        assert again is not None
        emit(again)
    emit(ev.SystemStopped(reason="done", at=t(140)))
    assert state.anomaly_count == 0, state.anomalies
    return out


def main() -> int:
    return write_golden(LOG, STATE, story())


if __name__ == "__main__":
    raise SystemExit(main())
