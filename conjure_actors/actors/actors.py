"""The four actors. The MachineActor lives in :mod:`conjure_actors.actors.pool` and the
CostActor in :mod:`conjure_actors.actors.cost`, the WorkflowActor in
:mod:`conjure_actors.actors.job` and the MonitorActor in :mod:`conjure_actors.actors.monitor`
(all re-exported here).

Each actor is a :class:`conjure_actors.runtime.Actor`; a crash restarts it (a new instance
around the same long-lived memory, so waiting lease requests and live clients survive).
Who talks to whom (DESIGN.md):

- WorkflowActor -> MachineActor: ``LeaseMachine`` (the reply comes later through a
  :class:`Reply`), ``ReleaseMachine``, ``CancelLease``;
- MachineActor -> CostActor: ask ``ApproveLaunch`` / ``ApproveRenewal``;
- CostActor -> MachineActor: ``StopAllMachines`` (budget exceeded; a tell, never an ask, so
  the two never wait on each other);
- MonitorActor -> WorkflowActor: ``JobStallNoticed`` (after logging ``JobStalled``).
"""

from __future__ import annotations

import logging

from conjure_actors.actors.cost import ACCRUE_INTERVAL, CostActor
from conjure_actors.actors.job import PoolPort, WorkflowActor
from conjure_actors.actors.monitor import MonitorActor, MonitorSink
from conjure_actors.actors.pool import MachineActor
from conjure_actors.actors.pool import Reconcile as _Reconcile

log = logging.getLogger("conjure_actors.actors")

__all__ = [
    "ACCRUE_INTERVAL",
    "CostActor",
    "MachineActor",
    "MonitorActor",
    "MonitorSink",
    "PoolPort",
    "WorkflowActor",
    "_Reconcile",
]
