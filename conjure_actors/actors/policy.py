"""The pool's and the ledger's policies, as pure functions the actors call in their decide step.

Nothing here does I/O or reads a clock: the MachineActor and the CostActor pass ``now`` and
the facts they hold, so each rule is tested on its own (and with hypothesis) and the actors
stay thin.

Pool policy (MachineActor):

- *reuse first*: a waiting job takes a Ready, healthy machine that runs the same workflow
  version and has a free slot (``jobs_per_machine``), least loaded first;
- *launch only for unmet demand*: launches = waiting jobs minus the free slots that
  machines still starting will offer, capped by ``max_machines``;
- *short leases*: a machine is launched with ``lease_seconds`` and its lease renewed only
  while work remains (a job leased or waiting) and the budget allows, when less than
  ``renew_margin`` is left: a crashed runtime overspends by at most one lease;
- *idle shutdown*: a machine with no lease for ``idle_timeout`` seconds is stopped.

Cost policy (CostActor): spending is what the ready machines have cost so far; the
*commitment* adds what they will cost until their leases end (RunComfy will bill them that
long even if we crash). A launch is refused when ``spent + committed + estimate`` would
cross the limit; a warning at ``warn_fraction`` (80%), machines stopped at 100%.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence

import attrs

from conjure_actors.domain.prices import cost_micros, machine_cost_micros


@attrs.frozen
class MachineView:
    """What the pool policy needs to know about one machine."""

    server_id: str
    ready: bool
    healthy: bool
    workflow_version: str | None
    leases: int
    stopping: bool = False


def pick_machine(
    machines: Iterable[MachineView],
    workflow_version: str | None,
    jobs_per_machine: int,
    *,
    only_server: str | None = None,
) -> str | None:
    """The machine a waiting job should take now, or ``None``.

    A job with ``workflow_version=None`` runs anywhere (a ComfyUI the user runs); otherwise
    the machine must run that version. Least loaded first, then by id for determinism.
    """
    best: MachineView | None = None
    for m in machines:
        if only_server is not None and m.server_id != only_server:
            continue
        if not (m.ready and m.healthy) or m.stopping or m.leases >= jobs_per_machine:
            continue
        if workflow_version is not None and m.workflow_version not in (None, workflow_version):
            continue
        if best is None or (m.leases, m.server_id) < (best.leases, best.server_id):
            best = m
    return best.server_id if best is not None else None


def launches_needed(
    *,
    waiting: int,
    starting: int,
    alive: int,
    max_machines: int,
    jobs_per_machine: int,
) -> int:
    """How many machines to launch now for ``waiting`` jobs that no Ready machine can take.

    ``starting`` machines will each offer ``jobs_per_machine`` slots; ``alive`` counts every
    machine not stopped (starting, ready, stopping), against ``max_machines``.
    """
    unmet = waiting - starting * jobs_per_machine
    if unmet <= 0:
        return 0
    wanted = -(-unmet // jobs_per_machine)  # ceil
    return max(0, min(wanted, max_machines - alive))


def should_renew(
    *, now: float, estimated_stopping_at: float | None, renew_margin: float, work_remains: bool
) -> bool:
    """Renew a lease when work remains and less than ``renew_margin`` seconds are left."""
    if not work_remains or estimated_stopping_at is None:
        return False
    return estimated_stopping_at - now <= renew_margin


def renewed_duration(*, now: float, service_ready_at: float, lease_seconds: float) -> int:
    """The new total ``estimated_duration`` (seconds from Ready) for a renewal that keeps the
    machine until ``now + lease_seconds``."""
    return max(1, int(-(-(now + lease_seconds - service_ready_at) // 1)))


def idle_expired(*, now: float, idle_since: float | None, idle_timeout: float) -> bool:
    """True when a machine has had no lease for ``idle_timeout`` seconds."""
    return idle_since is not None and now - idle_since >= idle_timeout


# ------------------------------------------------------------------------------- cost


class BudgetLevel(enum.Enum):
    """Where spending stands against the limit."""

    OK = "ok"
    WARN = "warn"
    EXCEEDED = "exceeded"


@attrs.frozen
class Billable:
    """One ready machine's billing facts (from MachineReady / LeaseRenewed)."""

    rate_micros_per_hour: int
    service_ready_at: float
    estimated_stopping_at: float | None


def spent_micros(machines: Iterable[Billable], now: float, stopped_total: int = 0) -> int:
    """Cost so far: stopped machines' final bills plus each ready machine's cost until now."""
    total = stopped_total
    for m in machines:
        until = now if m.estimated_stopping_at is None else min(now, m.estimated_stopping_at)
        total += machine_cost_micros(m.rate_micros_per_hour, m.service_ready_at, until)
    return total


def committed_micros(machines: Iterable[Billable], now: float) -> int:
    """What ready machines will still cost until their leases end (RunComfy bills that even
    if we crash): cost to ``estimated_stopping_at`` minus cost to now."""
    total = 0
    for m in machines:
        if m.estimated_stopping_at is None or m.estimated_stopping_at <= now:
            continue
        full = machine_cost_micros(
            m.rate_micros_per_hour, m.service_ready_at, m.estimated_stopping_at
        )
        so_far = machine_cost_micros(m.rate_micros_per_hour, m.service_ready_at, now)
        total += full - so_far
    return total


def lease_cost_micros(rate_micros_per_hour: int, lease_seconds: float) -> int:
    """The cost of one lease: what a launch commits to at most."""
    return cost_micros(rate_micros_per_hour, int(-(-lease_seconds // 1)))


def launch_allowed(*, limit: int | None, spent: int, committed: int, estimate: int) -> bool:
    """May we commit ``estimate`` more micros? Always, without a limit."""
    if limit is None:
        return True
    return spent + committed + estimate <= limit


def budget_level(*, spent: int, limit: int | None, warn_fraction: float) -> BudgetLevel:
    """``EXCEEDED`` at or over the limit, ``WARN`` at ``warn_fraction`` of it, else ``OK``."""
    if limit is None:
        return BudgetLevel.OK
    if spent >= limit:
        return BudgetLevel.EXCEEDED
    if spent >= warn_fraction * limit:
        return BudgetLevel.WARN
    return BudgetLevel.OK


# ------------------------------------------------------------------------------- retries


@attrs.frozen
class Backoff:
    """A job's retry schedule: ``initial * factor ** (attempt - 1)``, capped at ``max_delay``."""

    initial: float
    factor: float
    max_delay: float
    max_attempts: int

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt ``attempt`` (1-based)."""
        return float(min(self.max_delay, self.initial * self.factor ** max(0, attempt - 1)))

    def exhausted(self, attempt: int) -> bool:
        """True when attempt ``attempt`` (1-based) was the last one allowed."""
        return attempt >= self.max_attempts


def priority_order(requests: Sequence[tuple[int, int]]) -> list[int]:
    """Indices of ``(priority, arrival)`` pairs in serving order: higher priority first,
    then first come first served."""
    return sorted(range(len(requests)), key=lambda i: (-requests[i][0], requests[i][1]))
