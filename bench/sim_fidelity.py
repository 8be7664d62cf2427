"""How close the ComfyUI simulator's timings are to the real server's (issue 15).

For each real timing in ``captures/timings.json`` (ComfyUI 0.3.64 on this 2-core CPU), the
same scenario (same graphs, same requests, see :mod:`conjure_actors.sim.fidelity`) runs on
the simulator at scale 1 (``ComfyTimings.real()``), twice:

- **model**: under ``trio.testing.MockClock``, so the figure is the cost model's alone;
- **wall**: on the real clock, in memory (httpx's ASGI transport, an in-memory WebSocket):
  what a client really waits, the model's time or longer where this process's own work
  (Python, numpy, PNG encoding) takes longer. Median of ``--repeats`` runs.

Each line gives the ratio simulator / real and a verdict: ``ok`` within 25 %, else ``off``.

A second table does the same for the worker's own latencies, measured on the WebSocket
captures (``captures/ws_*.jsonl``, every prompt the worker took at once): POST answered ->
``execution_start`` (at queue numbers where the worker pauses, and at the others), and
``execution_start`` -> ``execution_cached`` (after an interrupted blur chain, whose outputs
are freed, and otherwise). Medians; the model's figure comes from
:data:`conjure_actors.sim.fidelity.WORKER_SCENARIOS` under MockClock. These are fractions
of a millisecond where the captures' resolution is 0.1 ms, so a figure within 0.2 ms is
``ok`` too.
The demo timings (``ComfyTimings()``, the embedded cloud of ``run``) are the same model
``DEMO_SPEEDUP`` times faster; the last line says so.

Run: ``python bench/sim_fidelity.py`` (about ten seconds).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import trio
import trio.testing
from _mockrun import positive_int  # bench/_mockrun.py: the count arguments' type (exit 2)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from conjure_actors.sim.fidelity import (  # noqa: E402
    SCENARIOS,
    WORKER_SCENARIOS,
    captured_worker_latencies,
    run_scenario,
)
from conjure_actors.sim.timings import DEMO_SPEEDUP, ComfyTimings  # noqa: E402

TOLERANCE = 0.25


def model_seconds(name: str) -> float:
    clock = trio.testing.MockClock(autojump_threshold=0)
    return trio.run(run_scenario, name, ComfyTimings.real(), clock=clock)


def wall_seconds(name: str, repeats: int) -> float:
    return statistics.median(
        trio.run(run_scenario, name, ComfyTimings.real()) for _ in range(repeats)
    )


def verdict(ratio: float) -> str:
    return "ok" if abs(ratio - 1.0) <= TOLERANCE else "off"


def within(model_ms: float, real_ms: float) -> bool:
    """Within TOLERANCE, or within 0.2 ms (the captures log to 0.1 ms)."""
    close = round(abs(model_ms - real_ms), 1) <= 0.2
    return close or abs(model_ms / real_ms - 1.0) <= TOLERANCE


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--timings",
        type=Path,
        default=ROOT / "tests/data/captures/timings.json",
        help="the real server's timings (a copy of captures/timings.json)",
    )
    parser.add_argument("--repeats", type=positive_int, default=5, help="wall-clock runs (median)")
    args = parser.parse_args()
    real: dict[str, float] = json.loads(args.timings.read_text())
    print(
        f"{'scenario':<38} {'real s':>8} {'model s':>8} {'ratio':>6}   {'wall s':>8} {'ratio':>6}"
    )
    bad = 0
    captured = captured_worker_latencies(args.timings.parent)
    for name, seconds in real.items():
        if name not in SCENARIOS:
            print(f"{name:<38} {seconds:>8.3f}  (no scenario replays it)")
            bad += 1
            continue
        model = model_seconds(name)
        wall = wall_seconds(name, args.repeats)
        m, w = model / seconds, wall / seconds
        print(
            f"{name:<38} {seconds:>8.3f} {model:>8.4f} {m:>6.2f} {verdict(m):<3}"
            f"{wall:>8.4f} {w:>6.2f} {verdict(w)}"
        )
        bad += verdict(m) != "ok"
    print()
    print(f"{'worker latency (ms)':<42} {'real':>6} {'n':>3} {'model':>7} {'ratio':>6}")
    for name in WORKER_SCENARIOS:
        if not captured[name]:
            print(f"{name:<42} (no captured prompt shows it)")
            bad += 1
            continue
        want = statistics.median(captured[name])
        model = model_seconds(name) * 1000
        ok = within(model, want)
        ratio = f"{model / want:>6.2f}" if want else f"{'-':>6}"
        print(
            f"{name:<42} {want:>6.2f} {len(captured[name]):>3} {model:>7.2f} {ratio}"
            f" {'ok' if ok else 'off'}"
        )
        bad += not ok
    print(
        f"demo timings (ComfyTimings(), run's embedded cloud): the same model"
        f" {DEMO_SPEEDUP:g}x faster than real"
    )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
