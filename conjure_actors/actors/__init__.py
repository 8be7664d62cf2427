"""The four actors (MachineActor, WorkflowActor, MonitorActor, CostActor) and the assembly
that runs them over one journal: :func:`open_conjure` / :class:`Conjure`.

See DESIGN.md ("Actors", "Recovery") and :mod:`conjure_actors.actors.conjure`.
"""

from conjure_actors.actors.actors import (
    CostActor,
    MachineActor,
    MonitorActor,
    MonitorSink,
    PoolPort,
    WorkflowActor,
)
from conjure_actors.actors.conjure import Conjure, open_conjure
from conjure_actors.actors.context import Context
from conjure_actors.actors.cost import Ledger
from conjure_actors.actors.example import bundled_workflow, bundled_workflows, example_sketch_png
from conjure_actors.actors.messages import (
    AccrueNow,
    ApproveLaunch,
    ApproveRenewal,
    CancelJob,
    CancelLease,
    JobStallNoticed,
    Lease,
    LeaseFailedError,
    LeaseMachine,
    LostSignal,
    MachineGoneError,
    PollNow,
    ReleaseMachine,
    Reply,
    ResumeLaunching,
    SetBudget,
    StopAllMachines,
    StopLaunching,
    StopMachine,
)
from conjure_actors.actors.pool import MachinePool
from conjure_actors.actors.view import StallDetector, Summary, event_json_line, summarize

__all__ = [
    "AccrueNow",
    "ApproveLaunch",
    "ApproveRenewal",
    "CancelJob",
    "CancelLease",
    "Conjure",
    "Context",
    "CostActor",
    "JobStallNoticed",
    "Lease",
    "LeaseFailedError",
    "LeaseMachine",
    "Ledger",
    "LostSignal",
    "MachineActor",
    "MachineGoneError",
    "MachinePool",
    "MonitorActor",
    "MonitorSink",
    "PollNow",
    "PoolPort",
    "ReleaseMachine",
    "Reply",
    "ResumeLaunching",
    "SetBudget",
    "StallDetector",
    "StopAllMachines",
    "StopLaunching",
    "StopMachine",
    "Summary",
    "WorkflowActor",
    "bundled_workflow",
    "bundled_workflows",
    "event_json_line",
    "example_sketch_png",
    "open_conjure",
    "summarize",
]
