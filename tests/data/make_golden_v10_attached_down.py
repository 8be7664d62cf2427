"""Write ``golden_v10_attached_down.log`` (and the state it must replay to): an attached
ComfyUI (``--comfyui-url``) that stopped answering (``MachineUnhealthy``) and answered
again (``MachineHealthy``).

Run ``python tests/data/make_golden_v10_attached_down.py`` ONCE; the files are checked in and
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

from conjure_actors.domain import events as ev  # noqa: E402

LOG = HERE / "golden_v10_attached_down.log"
STATE = HERE / "golden_v10_attached_down_state.json"
T0 = 1_800_900_000.0


def story() -> list[Any]:
    """The golden events, folded as they go (so they are legal)."""
    story_ = Story(T0)
    state, out, emit, t = story_.state, story_.out, story_.emit, story_.t

    emit(ev.SystemStarted(run_id="run-1", version="0.1.0", mode="comfyui", at=t(0)))
    emit(ev.MachineAttached(server_id="comfyui", kind="comfyui", max_jobs=1, at=t(1)))
    emit(ev.MachineHealthy(server_id="comfyui", at=t(1)))
    emit(
        ev.MachineUnhealthy(
            server_id="comfyui", reason="/system_stats failed 3 times: cannot connect", at=t(30)
        )
    )
    emit(ev.MachineHealthy(server_id="comfyui", at=t(90)))
    emit(ev.SystemStopped(reason="done", at=t(100)))
    assert state.anomaly_count == 0, state.anomalies
    return out


def main() -> int:
    return write_golden(LOG, STATE, story())


if __name__ == "__main__":
    raise SystemExit(main())
