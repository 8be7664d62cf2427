"""The property-based harness: the whole system, simulated, under faults (issue 7).

It runs the real actors, the real journal and the real clients against the in-memory
simulated cloud under ``trio.testing.MockClock``: an hour of cloud time passes in
milliseconds and a failing case replays exactly from its seed.

- :class:`SimulatedCloud` / :func:`open_simulated_cloud`: RunComfy and one ComfyUI per
  machine, in memory, with fault knobs (re-exported from :mod:`conjure_actors.sim`);
- :class:`Harness` / :func:`open_harness` (async, inside trio) and :class:`HarnessThread` /
  :func:`run_harness` (synchronous, a trio loop in a thread): start the runtime against the
  cloud, crash it (nothing after the last durable record survives), resume it from its log,
  drive the clock, inject faults, lose machines;
- strategies: :func:`catalog_workflows`, :func:`valid_requests`, :func:`invalid_requests`,
  :func:`job_requests`, :func:`fault_knobs`, :func:`faults`, :func:`fault_schedules`,
  :func:`budgets`;
- invariants: :func:`check_all` (after every step) and :func:`check_quiet` (once faults
  stop and the clock ran on), raising :class:`InvariantViolation`;
- :func:`open_simulated_conjure`: just the runtime on a log against a simulated cloud (for
  a test or a benchmark of your own, without the harness);
- :func:`record_trace`, :class:`Trace`, :class:`TraceCloud` / :func:`open_trace_cloud`: one
  job's WebSocket frames and ComfyUI answers recorded from a simulated run, replayed per job
  with no simulator work (:mod:`conjure_actors.testing.trace`; ``bench/ws_trace.py``);
- :class:`ConjureStateMachine`: the stateful test (subclass it for your own properties) and
  :func:`stateful_settings` (profiles ``ci`` and ``fuzz``).

See the README section "Writing your own property".
"""

from conjure_actors.sim import (
    CloudFaults,
    CloudTimings,
    ComfyFaults,
    ComfyTimings,
    RunComfyFaults,
    RunComfyTimings,
    SimulatedCloud,
    open_simulated_cloud,
)
from conjure_actors.testing.faults import (
    Fault,
    Knobs,
    LoseMachine,
    RateLimitBurst,
    RestartComfyUI,
    TimedFault,
)
from conjure_actors.testing.harness import (
    Harness,
    HarnessError,
    HarnessSettings,
    open_harness,
)
from conjure_actors.testing.invariants import InvariantViolation, check_all, check_quiet
from conjure_actors.testing.profiles import stateful_settings
from conjure_actors.testing.requests import JobRequest
from conjure_actors.testing.runtime import open_simulated_conjure
from conjure_actors.testing.stateful import ConjureStateMachine, failures_dir
from conjure_actors.testing.strategies import (
    budgets,
    catalog_workflows,
    conjure_workflow,
    fault_knobs,
    fault_schedules,
    faults,
    images,
    invalid_requests,
    job_requests,
    valid_requests,
)
from conjure_actors.testing.thread import HarnessThread, run_harness
from conjure_actors.testing.trace import (
    Trace,
    TraceCloud,
    job_outcome,
    open_trace_cloud,
    record_trace,
)

__all__ = [
    "CloudFaults",
    "CloudTimings",
    "ComfyFaults",
    "ComfyTimings",
    "ConjureStateMachine",
    "Fault",
    "Harness",
    "HarnessError",
    "HarnessSettings",
    "HarnessThread",
    "InvariantViolation",
    "JobRequest",
    "Knobs",
    "LoseMachine",
    "RateLimitBurst",
    "RestartComfyUI",
    "RunComfyFaults",
    "RunComfyTimings",
    "SimulatedCloud",
    "TimedFault",
    "Trace",
    "TraceCloud",
    "budgets",
    "catalog_workflows",
    "check_all",
    "check_quiet",
    "conjure_workflow",
    "failures_dir",
    "fault_knobs",
    "fault_schedules",
    "faults",
    "images",
    "invalid_requests",
    "job_outcome",
    "job_requests",
    "open_harness",
    "open_simulated_cloud",
    "open_simulated_conjure",
    "open_trace_cloud",
    "record_trace",
    "run_harness",
    "stateful_settings",
    "valid_requests",
]
