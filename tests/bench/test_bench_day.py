"""bench/day.py runs its day end to end on a tiny workload: its simulated account must
have what the benchmark launches (it launched a workflow version the simulated cloud
came to refuse, and failed at its first launch, unseen by any test)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent.parent / "bench"


@pytest.mark.slow
def test_a_tiny_day_runs_to_its_verdict() -> None:
    """Six jobs, no curve, one worker: exit 0 and the verdict line (met or not)."""
    done = subprocess.run(
        [sys.executable, str(BENCH / "day.py"), "--day-jobs", "6", "--no-curve", "--workers", "1"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "target (p95 <= 0.60 of the seeds'" in done.stdout
