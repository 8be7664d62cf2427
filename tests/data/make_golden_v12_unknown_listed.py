"""Write ``golden_v12_unknown_listed.log`` (and the state it must replay to): a resume whose
recovery listing showed servers the log does not know (``MachineUnknownListed``: one Ready
with its cost so far, one Starting), named and left alone: no machine of the log.

Run ``python tests/data/make_golden_v12_unknown_listed.py`` ONCE; the files are checked in
and ``tests/domain/test_domain_golden.py`` replays every ``golden_v*.log`` on each CI run
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

from conjure_actors.domain import events as ev  # noqa: E402

LOG = HERE / "golden_v12_unknown_listed.log"
STATE = HERE / "golden_v12_unknown_listed_state.json"
T0 = 1_801_000_000.0


def story() -> list[Any]:
    """The golden events, folded as they go (so they are legal)."""
    story_ = Story(T0)
    state, out, emit, t = story_.state, story_.out, story_.emit, story_.t

    emit(ev.SystemStarted(run_id="run-1", version="0.1.0", mode="runcomfy", at=t(0)))
    emit(ev.SystemStarted(run_id="run-2", version="0.1.0", mode="runcomfy", at=t(600)))
    emit(
        ev.MachineUnknownListed(
            server_id="srv-orphan",
            status="Ready",
            server_type="medium",
            service_ready_at=t(5),
            estimated_stopping_at=t(558),
            cost_micros=162_250,
            at=t(601),
        )
    )
    emit(ev.MachineUnknownListed(server_id="srv-booting", status="Starting", at=t(601)))
    emit(ev.SystemStopped(reason="done", at=t(700)))
    assert state.anomaly_count == 0, state.anomalies
    assert state.machines == {}
    return out


def main() -> int:
    return write_golden(LOG, STATE, story())


if __name__ == "__main__":
    raise SystemExit(main())
