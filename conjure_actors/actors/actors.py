"""The four actors: the MachineActor and the CostActor (thin message handlers over the
long-lived logic objects) are here; the WorkflowActor lives in :mod:`conjure_actors.actors.job`
and the MonitorActor in :mod:`conjure_actors.actors.monitor` (re-exported here).

Each actor is a :class:`conjure_actors.runtime.Actor`; a crash restarts it (a new instance
around the same logic object, so waiting lease requests, live clients and the ledger's
figures survive). Who talks to whom (DESIGN.md):

- WorkflowActor -> MachineActor: ``LeaseMachine`` (the reply comes later through a
  :class:`Reply`), ``ReleaseMachine``, ``CancelLease``;
- MachineActor -> CostActor: ask ``ApproveLaunch`` / ``ApproveRenewal``;
- CostActor -> MachineActor: ``StopAllMachines`` (budget exceeded; a tell, never an ask, so
  the two never wait on each other);
- MonitorActor -> WorkflowActor: ``JobStallNoticed`` (after logging ``JobStalled``).
"""

from __future__ import annotations

import logging
from typing import Any

import trio

from conjure_actors.actors.cost import Ledger
from conjure_actors.actors.job import PoolPort, WorkflowActor
from conjure_actors.actors.messages import (
    AccrueNow,
    ApproveLaunch,
    ApproveRenewal,
    CancelLease,
    LeaseMachine,
    PollNow,
    ReleaseMachine,
    Reply,
    SetBudget,
    StopAllMachines,
    StopLaunching,
    StopMachine,
)
from conjure_actors.actors.monitor import MonitorActor, MonitorSink
from conjure_actors.actors.pool import MachinePool
from conjure_actors.runtime import Actor

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

ACCRUE_INTERVAL = 30.0


class _Reconcile:
    """Internal command: recovery, list the cloud and adopt or stop what the log knows."""

    def __init__(self, reply: Reply[None]) -> None:
        self.reply = reply


class MachineActor(Actor):
    """The pool (see :mod:`conjure_actors.actors.pool`)."""

    def __init__(self, pool: MachinePool) -> None:
        self.pool = pool

    async def on_start(self) -> None:
        self.pool.bind(self._tasks())
        self.start_soon(self.pool.run_poller, name="machine-poller")

    async def receive(self, msg: Any) -> Any:
        pool = self.pool
        match msg:
            case LeaseMachine():
                await pool.lease(
                    msg.job_id, msg.workflow_version, msg.priority, msg.reply, msg.only_server
                )
            case ReleaseMachine():
                await pool.release(msg.server_id, msg.job_id, broken=msg.broken)
            case CancelLease():
                pool.cancel_lease(msg.job_id)
            case StopMachine():
                await pool.stop_machine(msg.server_id, msg.reason)
            case StopLaunching():
                pool.stop_launching(msg.reason)
            case StopAllMachines():
                left = await pool.stop_all(msg.reason)
                if msg.reply is not None:
                    msg.reply.set(left)
            case PollNow(reply=reply):
                pool.poll_soon(reply)
            case _Reconcile():
                try:
                    await pool.reconcile()
                except BaseException as exc:
                    msg.reply.fail(exc)
                    raise
                msg.reply.set(None)
            case _:
                log.warning("MachineActor: unknown message %s", type(msg).__name__)


class CostActor(Actor):
    """The ledger (see :mod:`conjure_actors.actors.cost`); accrues on a timer."""

    def __init__(self, ledger: Ledger, interval: float = ACCRUE_INTERVAL) -> None:
        self.ledger = ledger
        self.interval = interval

    async def on_start(self) -> None:
        self.start_soon(self._accrue_loop, name="cost-accrual")

    async def _accrue_loop(self) -> None:
        while True:
            await trio.sleep(self.interval)
            await self.ledger.accrue()

    async def receive(self, msg: Any) -> Any:
        match msg:
            case ApproveLaunch():
                return await self.ledger.approve_launch(msg.job_id, msg.server_type)
            case ApproveRenewal():
                return await self.ledger.approve_renewal(msg.server_id, msg.seconds)
            case SetBudget():
                await self.ledger.set_budget(msg.usd)
                return None
            case AccrueNow():
                await self.ledger.accrue()
                return None
            case _:
                log.warning("CostActor: unknown message %s", type(msg).__name__)
                return None
