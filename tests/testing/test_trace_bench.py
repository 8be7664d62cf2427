"""bench/ws_trace.py runs end to end with a tiny workload and prints its table and verdict."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_ws_trace_benchmark_runs_with_a_tiny_workload() -> None:
    """Two jobs of each trace on two machines: both rows, the checks and the verdict line."""
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "ws_trace.py"),
            "--jobs=2",
            "--short-jobs=2",
            "--machines=2",
            "--repeats=1",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "long progress (CONJURE, 28-step sampler)" in out
    assert "short (invert_save)" in out
    assert "every job as live and every progress frame an event: yes" in out
    assert out.count("every job as live") == 2
    assert "target (>= 20,000 WebSocket messages/s" in out
