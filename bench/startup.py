"""Benchmark of the command line's start time (issue 16).

Measures, in one run, the median wall time of

- ``python -c "import trio, httpx"``: the baseline, what any command of a trio + httpx
  program pays before doing anything;
- ``python -m conjure_actors --help``;
- ``python -m conjure_actors replay --help``;

prints each beside its ratio to the baseline and a verdict against the goal (<= 1.3x), then
lists the modules that should never load to print help (``conjure_actors.sim``,
``conjure_actors.testing``, ``pytest``, ``hypothesis``) found in ``sys.modules`` after each
help command, and the heavy packages it loaded (trio, httpx, eventlog, msgspec, the domain,
the actors: a command's work, imported only when it runs). Uses hyperfine when it is
installed (``-N``, warm-up runs, medians from its JSON export), otherwise repeated
subprocess runs.

Run: ``python bench/startup.py`` (about 10 s).
"""

from __future__ import annotations

import json
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNS = 20
WARMUP = 3
GOAL = 1.3

PYTHON = sys.executable
BASELINE = ("import trio, httpx", [PYTHON, "-c", "import trio, httpx"])
CASES = [
    BASELINE,
    ("--help", [PYTHON, "-m", "conjure_actors", "--help"]),
    ("replay --help", [PYTHON, "-m", "conjure_actors", "replay", "--help"]),
]

NEVER = ("conjure_actors.sim", "conjure_actors.testing", "pytest", "hypothesis")
#: Not needed to print help either (the work of a command, and its I/O libraries).
HEAVY = ("trio", "httpx", "eventlog", "msgspec", "conjure_actors.domain", "conjure_actors.actors")

# Runs ``python -m conjure_actors ARGS`` in one interpreter (help text discarded) and prints,
# as JSON, the names of every module loaded by then.
PROBE = """
import contextlib, io, json, runpy, sys
sys.argv = ["conjure_actors", *json.loads(sys.argv[1])]
with contextlib.redirect_stdout(io.StringIO()):
    try:
        runpy.run_module("conjure_actors", run_name="__main__", alter_sys=True)
    except SystemExit:
        pass
print(json.dumps(sorted(sys.modules)))
"""


def medians_hyperfine(hyperfine: str) -> tuple[str, list[float]]:
    """Median seconds of each case, measured by hyperfine."""
    with tempfile.TemporaryDirectory() as tmp:
        export = Path(tmp) / "startup.json"
        command = [hyperfine, "-N", "--style", "none", "--warmup", str(WARMUP)]
        command += ["--runs", str(RUNS), "--export-json", str(export)]
        command += [shlex.join(argv) for _, argv in CASES]
        subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        results = json.loads(export.read_text())["results"]
    return f"hyperfine -N, {RUNS} runs", [float(r["median"]) for r in results]


def medians_subprocess() -> tuple[str, list[float]]:
    """Median seconds of each case, from repeated subprocess runs (interleaved)."""
    samples: list[list[float]] = [[] for _ in CASES]
    for i in range(WARMUP + RUNS):
        for j, (_, argv) in enumerate(CASES):
            start = time.perf_counter()
            subprocess.run(argv, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
            if i >= WARMUP:
                samples[j].append(time.perf_counter() - start)
    return f"subprocess, {RUNS} runs", [statistics.median(s) for s in samples]


def never_loaded(*args: str, packages: tuple[str, ...] = NEVER) -> list[str]:
    """The modules of ``packages`` loaded by ``python -m conjure_actors ARGS``."""
    done = subprocess.run(
        [PYTHON, "-c", PROBE, json.dumps(args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    loaded = json.loads(done.stdout)
    return [m for m in loaded if any(m == p or m.startswith(p + ".") for p in packages)]


def main() -> int:
    hyperfine = shutil.which("hyperfine")
    how, medians = medians_hyperfine(hyperfine) if hyperfine else medians_subprocess()
    base = medians[0]
    print(f"start time, median wall time ({how}); goal: <= {GOAL}x the baseline")
    print(f"{'command':<28} {'median ms':>10} {'ratio':>7}  verdict")
    worst = 0.0
    for (name, _), median in zip(CASES, medians, strict=True):
        ratio = median / base
        label = "baseline" if median is base else ("ok" if ratio <= GOAL else "TOO SLOW")
        if median is not base:
            worst = max(worst, ratio)
        print(f"{name:<28} {median * 1000:>10.1f} {ratio:>6.2f}x  {label}")
    verdict = "met" if worst <= GOAL else "NOT met"
    print(f"goal <= {GOAL}x: {verdict} (worst {worst:.2f}x)")
    bad = False
    for args in (("--help",), ("replay", "--help")):
        found = never_loaded(*args)
        bad = bad or bool(found)
        shown = ", ".join(found) if found else "none"
        print(f"forbidden modules after `{' '.join(args)}`: {shown}")
        heavy = sorted(
            {
                next(p for p in HEAVY if m == p or m.startswith(p + "."))
                for m in never_loaded(*args, packages=HEAVY)
            }
        )
        print(f"  heavy packages loaded (none needed for help): {', '.join(heavy) or 'none'}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
