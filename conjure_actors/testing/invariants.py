"""The invariants of issue 7, checked against a :class:`~conjure_actors.testing.Harness`.

Each ``check_*`` function returns a list of violations (one line each, naming the job, the
machine or the seq); :func:`check_all` runs them all and raises :class:`InvariantViolation`
listing every one. Call it after every step of a test (the state machine does).

- ``replay``: folding the log from scratch gives a state equal to the live one;
- ``log``: seqs are 1..n without a gap, and every record a subscriber was shown (durable,
  acknowledged) is still in the log, unchanged, after any crash;
- ``jobs``: every job the runtime accepted is in the state, active or terminal with a reason
  (an error for a failure, a reason for a cancel); a request that must be refused was, and a
  workflow the server rejects fails at once without a retry; the state has no anomaly (no
  illegal transition was ever logged);
- ``machines``: no machine bills in the cloud that the runtime does not know (a launch whose
  answer it has not seen yet is allowed while its intent is logged);
- ``ledger``: a stopped machine costs in the ledger exactly what the cloud billed (a lost
  one, whose end nobody tells: never less, at most up to when it was found gone; one never
  seen Ready, by its launch's lease from the last look that saw it Starting); a running one
  no more than the cloud billed so far; the ledger's total is the sum of its machines; the
  cloud's bill never exceeds the budget (or the spend when the budget was lowered below it)
  by more than one lease;
- ``prompts``: every prompt a ComfyUI executed was logged (``PromptSubmitting``) before it
  was sent, no prompt id ran twice, and no job attempt ran two prompts;
- ``slots``: no machine ever had more of our prompts in ComfyUI at once than its jobs limit;
- ``outputs``: every saved output is on disk with the logged size and sha256, byte-identical
  to a file the simulator produced;
- ``actors``: no actor crashed. Every fault the harness injects is one the actors must handle
  (a supervisor's restart hides a bug from every other check).

:func:`check_quiet` is the liveness half, for after :meth:`Harness.run_until_quiet`: every
job terminal, no machine running anywhere, and the ledger equal to the cloud's bills.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import attrs

import eventlog
from conjure_actors.domain import events as ev
from conjure_actors.domain import machines_policy as policy
from conjure_actors.domain import state as st
from conjure_actors.domain.prices import cost_micros, machine_cost_micros
from conjure_actors.runtime.events import ActorCrashed

if TYPE_CHECKING:
    from conjure_actors.testing.harness import Harness

__all__ = [
    "CHECKS",
    "InvariantViolation",
    "check_all",
    "check_jobs",
    "check_ledger",
    "check_log",
    "check_machines",
    "check_outputs",
    "check_prompts",
    "check_quiet",
    "check_replay",
    "check_runtime_alive",
]

_MAX_LISTED: Final = 12


class InvariantViolation(AssertionError):
    """One or more invariants do not hold; the message lists each (one line each)."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        shown = self.problems[:_MAX_LISTED]
        more = len(self.problems) - len(shown)
        text = "\n  - ".join(shown)
        tail = f"\n  ... and {more} more" if more > 0 else ""
        super().__init__(f"{len(self.problems)} invariant violation(s):\n  - {text}{tail}")


# ------------------------------------------------------------------------- the checks


def check_runtime_alive(h: Harness) -> list[str]:
    """The runtime has not died on its own."""
    err = h.runtime_error
    if err is None:
        return []
    return [f"runtime: died on its own: {type(err).__name__}: {err}"]


def check_replay(h: Harness) -> list[str]:
    """replay(log) == live state."""
    if not h.running:
        return []
    replayed = eventlog.fold(h.log.records(), st.apply, st.initial_state())
    live = h.state
    if replayed == live:
        return []
    return [f"replay: the replayed state differs from the live one: {_diff(replayed, live)}"]


def _diff(a: Any, b: Any, path: str = "state") -> str:
    """Where two states first differ (a path and both values, shortened)."""
    if attrs.has(type(a)) and type(a) is type(b):
        for field in attrs.fields(type(a)):
            x, y = getattr(a, field.name), getattr(b, field.name)
            if x != y:
                return _diff(x, y, f"{path}.{field.name}")
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            if a.get(key) != b.get(key):
                return _diff(a.get(key), b.get(key), f"{path}[{key!r}]")
    return f"{path}: replayed {_short(a)} != live {_short(b)}"


def _short(value: Any, limit: int = 160) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def check_log(h: Harness) -> list[str]:
    """Seqs contiguous from 1; every acknowledged record still there, unchanged."""
    problems: list[str] = []
    records = list(h.log.records())
    for i, record in enumerate(records, start=1):
        if record.seq != i:
            problems.append(f"log: record #{i} has seq {record.seq} (a gap or a repeat)")
            break
    by_seq = {r.seq: r for r in records}
    for acked in h.acked:
        kept = by_seq.get(acked.seq)
        if kept is None:
            problems.append(
                f"log: acknowledged seq {acked.seq} ({type(acked.event).__name__}) is missing"
                f" after {h.crashes} crash(es)"
            )
        elif kept.event != acked.event or kept.ts != acked.ts:
            problems.append(
                f"log: seq {acked.seq} changed after it was acknowledged:"
                f" {_short(acked.event)} -> {_short(kept.event)}"
            )
        if len(problems) > _MAX_LISTED:
            break
    return problems


def check_jobs(h: Harness) -> list[str]:
    """Every accepted job is known, active or terminal with a reason; refusals as asked."""
    if not h.running:
        return []
    state = h.state
    problems: list[str] = []
    rejections: Counter[str] = Counter(
        r.event.job_id for r in h.log.records() if isinstance(r.event, ev.PromptRejected)
    )
    for sub in h.submitted:
        req = sub.request
        if sub.job_id is None:
            if req.expect != "refused":
                problems.append(
                    f"jobs: a {req.expect} request was refused at submit: {_short(sub.refused)}"
                )
            continue
        if req.expect == "refused":
            problems.append(f"jobs: {sub.job_id}: a broken workflow was accepted ({req!r})")
        job = state.jobs.get(sub.job_id)
        if job is None:
            problems.append(f"jobs: {sub.job_id} was accepted but is not in the state")
            continue
        problems.extend(_job_problems(job, req.expect, rejections[sub.job_id]))
    for job_id, job in state.jobs.items():
        if job.status not in st.JOB_STATUSES:
            problems.append(f"jobs: {job_id} has an unknown status {job.status!r}")
    if state.anomaly_count:
        problems.append(
            f"jobs: the log holds {state.anomaly_count} anomalie(s) (illegal or unknown"
            f" facts), first: {state.anomalies[0] if state.anomalies else '?'}"
        )
    return problems


_REFUSED_WORKFLOW_ENDINGS: Final = frozenset({"PromptRejected", "NoMachine", "BudgetRefused"})
"""How a job whose workflow the server refuses may end once its prompt went out: refused, or
with no machine to send it to again (its answer lost to a crash, the budget spent since)."""


def _job_problems(job: st.Job, expect: str, rejections: int) -> list[str]:
    out: list[str] = []
    jid = job.job_id
    if job.status == st.FAILED:
        if job.error is None or not job.error.message:
            out.append(f"jobs: {jid} failed without an error message")
        elif expect == "valid" and job.error.error_type == "PromptRejected":
            out.append(f"jobs: {jid}: a valid workflow was rejected: {job.error.message}")
    elif job.status == st.CANCELLED:
        if not job.cancel_reason:
            out.append(f"jobs: {jid} was cancelled without a reason")
    elif job.status == st.SUCCEEDED:
        if expect == "rejected":
            out.append(f"jobs: {jid}: a workflow the server rejects succeeded")
        if job.execution != "succeeded":
            out.append(f"jobs: {jid} succeeded but its execution is {job.execution!r}")
    # A job that never reached a server (no machine: budget, launch failures) fails for
    # that reason; only a prompt that was sent must come back rejected. A job whose prompt
    # went out but whose answer was lost (a crash) and that then found no machine (the
    # budget spent meanwhile) fails for that reason too: no answer said "rejected".
    if expect == "rejected" and job.status == st.FAILED and job.error is not None:
        if job.error.error_type not in _REFUSED_WORKFLOW_ENDINGS and job.prompt_id is not None:
            out.append(
                f"jobs: {jid}: a rejected workflow failed as {job.error.error_type}"
                " instead of PromptRejected"
            )
        if rejections > 1:
            out.append(f"jobs: {jid}: a rejected workflow was sent again ({rejections} times)")
    return out


def unaccounted(h: Harness, unknown: list[str]) -> list[str]:
    """The machines of ``unknown`` (running in the cloud, not held by the runtime) that no
    open launch intent may have started: each intent accounts for one machine at most,
    one that echoes its marker (``policy.matches_intent``: type, version,
    estimated_duration), not merely one of as many intents as there are machines."""
    free = list(h.state.launch_requests.values())
    machines = h.cloud.runcomfy._machines
    left = []
    for sid in unknown:
        m = machines[sid]
        req = next(
            (
                r
                for r in free
                if policy.matches_intent(
                    r,
                    server_type=m.server_type,
                    workflow_version_id=m.workflow_version_id,
                    estimated_duration=m.estimated_duration,
                )
            ),
            None,
        )
        if req is None:
            left.append(sid)
        else:
            free.remove(req)
    return left


def check_machines(h: Harness) -> list[str]:
    """Every machine billing in the cloud is known to the runtime (or an open intent)."""
    if not h.running:
        return []
    state = h.state
    alive = {
        m.server_id
        for m in state.machines.values()
        if m.kind == "runcomfy" and m.status not in st.MACHINE_GONE
    }
    unknown = unaccounted(h, [sid for sid in h.cloud.running() if sid not in alive])
    if unknown:
        known_gone = [sid for sid in unknown if sid in state.machines]
        return [
            f"machines: {len(unknown)} machine(s) run in the cloud that the runtime does not"
            f" hold ({', '.join(sorted(unknown))}; the runtime thinks {len(known_gone)} of them"
            f" gone) that none of the {len(state.launch_requests)} open launch intent(s)"
            " accounts for (one machine per intent, echoing its marker)"
        ]
    return []


def check_ledger(h: Harness, *, exact: bool = False) -> list[str]:
    """Ledger vs the cloud's bills; spend vs budget. ``exact``: every machine stopped."""
    if not h.running:
        return []
    state = h.state
    problems: list[str] = []
    bills = {b.server_id: b for b in h.cloud.billing()}
    found_gone = _found_gone_at(h)
    now = h.now()
    for m in state.machines.values():
        if m.kind != "runcomfy":
            continue
        bill = bills.get(m.server_id)
        if bill is None:
            if m.cost_micros:
                problems.append(
                    f"ledger: {m.server_id} costs {m.cost_micros} µ$ but the cloud never"
                    " launched it"
                )
            continue
        # A stopped machine whose last DELETE's 200 showed it still up (``stop_still_up``)
        # bills on as far as the runtime knows, until a listing or a lookup finds it gone:
        # till then its ledger may lag the cloud's bill, like a running machine's (when
        # quiet, ``exact``, it must match).
        billing_on = m.stop_still_up and not exact
        if m.status in st.MACHINE_GONE and bill.stopped_at is not None and not billing_on:
            if m.lost_reason == st.LOST_WHILE_DOWN and m.stop_requested_at is not None:
                # A resume found gone a machine whose stop was decided before the crash:
                # gone before its lease's end, it was stopped (by that DELETE, answered
                # within STOP_SETTLE of the decision), and the runtime bills it to there;
                # found gone after, its DELETE may never have left: billed to the lease's
                # end, which the cloud cannot have billed past.
                seen = found_gone.get(m.server_id, now)
                end = seen
                if m.estimated_stopping_at is not None:
                    end = min(end, m.estimated_stopping_at)
                lease_end = policy.earliest_lease_end(m)  # (never Ready: from its launch)
                if lease_end is None or seen < lease_end:
                    end = min(end, m.stop_requested_at + policy.STOP_SETTLE)
                to_stop, to_seen = _lost_cost(h, m, bill, end), _lost_cost(h, m, bill, seen)
                if m.cost_micros != to_stop or bill.cost_micros > to_seen:
                    problems.append(
                        f"ledger: {m.server_id}, stopping at the crash, costs {m.cost_micros}"
                        f" µ$ in the ledger (to its stop: {to_stop} µ$); the cloud billed"
                        f" {bill.cost_micros} µ$"
                    )
            elif m.lost_reason is not None and m.service_ready_at is None:
                # Lost, never seen Ready: it may have become Ready and vanished (or run to
                # its lease's end) between two polls or while the runtime was down, or
                # gone before Ready. The runtime knows neither when billing started nor
                # when it ended, so bills the most it can have cost: its launch's lease,
                # at most the time from the last look that showed it Starting (else its
                # launch) to when it was found gone (policy.unseen_ready_seconds). Never
                # less than the cloud billed.
                seen = found_gone.get(m.server_id, now)
                most = _lost_cost(h, m, bill, seen)
                if not bill.cost_micros <= m.cost_micros <= most:
                    problems.append(
                        f"ledger: {m.server_id}, never seen Ready, costs {m.cost_micros} µ$"
                        f" in the ledger; the cloud billed {bill.cost_micros} µ$ and its"
                        f" launch's lease from the last look that saw it Starting up to"
                        f" when it was found gone is {most} µ$"
                    )
            elif bill.reason == "vanished":
                # Nobody can learn when a machine vanished (it is just gone: 404): the
                # runtime bills it up to the moment it found it gone. So: never less than
                # the cloud billed, never more than up to that moment.
                seen = found_gone.get(m.server_id, now)
                most = _cost_until(m, seen)
                if not bill.cost_micros <= m.cost_micros <= most:
                    problems.append(
                        f"ledger: vanished {m.server_id} costs {m.cost_micros} µ$ in the"
                        f" ledger; the cloud billed {bill.cost_micros} µ$ and billing up to"
                        f" when it was found gone is {most} µ$"
                    )
            elif m.cost_micros != bill.cost_micros:
                problems.append(
                    f"ledger: {m.server_id} ({bill.reason}) costs {m.cost_micros} µ$ in the"
                    f" ledger but the cloud billed {bill.cost_micros} µ$"
                )
        elif m.cost_micros > (
            _cost_until(m, now) if bill.reason == "vanished" else bill.cost_micros
        ):
            # (A machine that vanished bills nothing more, but the runtime accrues it until
            # a poll finds it gone; so does one still up after its stop.)
            problems.append(
                f"ledger: running {m.server_id} accrued {m.cost_micros} µ$, more than the"
                f" {bill.cost_micros} µ$ the cloud billed so far"
            )
    total = sum(m.cost_micros for m in state.machines.values())
    if state.ledger.total_micros != total:
        problems.append(
            f"ledger: total {state.ledger.total_micros} µ$ is not the sum of its machines"
            f" ({total} µ$)"
        )
    if exact:
        runtime_ids = {m.server_id for m in state.machines.values() if m.kind == "runcomfy"}
        for sid, bill in bills.items():
            if bill.cost_micros and sid not in runtime_ids:
                problems.append(
                    f"ledger: the cloud billed {bill.cost_micros} µ$ for {sid}, which the"
                    " runtime never knew"
                )
    spent = sum(b.cost_micros for b in bills.values())
    limit = h.budget_limit_micros
    if limit is not None:
        ceiling = max(limit, h.budget_floor_micros) + h.one_lease_micros()
        if spent > ceiling:
            problems.append(
                f"ledger: the cloud billed {spent} µ$, over the budget {limit} µ$ (spent when"
                f" set: {h.budget_floor_micros} µ$) plus one lease ({h.one_lease_micros()} µ$)"
            )
    return problems


def _found_gone_at(h: Harness) -> dict[str, float]:
    """When the runtime logged each machine lost (found gone)."""
    out: dict[str, float] = {}
    for record in h.log.records():
        event = record.event
        if isinstance(event, ev.MachineLost):
            out.setdefault(event.server_id, event.at)
    return out


def _cost_until(m: st.Machine, until: float) -> int:
    """What ``m`` costs from its ready time to ``until`` (the billing rule)."""
    return machine_cost_micros(m.rate_micros_per_hour, m.service_ready_at, until)


def _lost_cost(h: Harness, m: st.Machine, bill: Any, until: float) -> int:
    """What a lost ``m`` found gone at ``until`` is billed at most: from its Ready time, or,
    never seen Ready, by its launch's lease from the last look of this incarnation that
    showed it Starting (``MachinePool.seen_starting``; none since a restart: its launch)
    (``policy.unseen_ready_seconds``)."""
    if m.service_ready_at is not None:
        return _cost_until(m, until)
    seconds = policy.unseen_ready_seconds(
        m,
        until,
        lease_seconds=h.settings.lease_seconds,
        seen_starting_at=h.conjure.pool.seen_starting.get(m.server_id),
    )
    return cost_micros(m.rate_micros_per_hour or bill.rate_micros_per_hour, seconds)


def _prompt_owners(h: Harness) -> dict[str, tuple[str, int]]:
    owners: dict[str, tuple[str, int]] = {}
    for record in h.log.records():
        event = record.event
        if isinstance(event, ev.PromptSubmitting):
            owners[event.prompt_id] = (event.job_id, event.attempt)
    return owners


def check_prompts(h: Harness) -> list[str]:
    """Intent logged before every execution; no prompt ran twice; one per attempt."""
    owners = _prompt_owners(h)
    problems: list[str] = []
    ran: Counter[str] = Counter()
    for sim in h.sims().values():
        ran.update(sim.prompts_run)
    per_attempt: dict[tuple[str, int], set[str]] = {}
    for prompt_id, times in sorted(ran.items()):
        owner = owners.get(prompt_id)
        if owner is None:
            problems.append(
                f"prompts: prompt {prompt_id} ran but no PromptSubmitting for it is in the log"
            )
            continue
        if times > 1:
            problems.append(
                f"prompts: prompt {prompt_id} of {owner[0]} attempt {owner[1]} ran {times} times"
            )
        per_attempt.setdefault(owner, set()).add(prompt_id)
    for (job_id, attempt), prompts in sorted(per_attempt.items()):
        if len(prompts) > 1:
            problems.append(
                f"prompts: {job_id} attempt {attempt} ran {len(prompts)} prompts:"
                f" {', '.join(sorted(prompts))}"
            )
    return problems


_IN_COMFYUI: Final = frozenset({"submitting", "submitted", "started"})
_SLOT_EVENTS: Final = (ev.PromptSubmitting, ev.ExecutionStarted, ev.MachineLeased, ev.JobResumed)


def check_slots(h: Harness) -> list[str]:
    """No machine ever had more of our prompts in ComfyUI's hands at once than its
    ``max_jobs``: folded from the log (jobs running there whose execution is submitting,
    submitted or started, leased or not: a restart's adoption drops a machine's leases
    while a prompt still runs there), not from the leases the pool counts, which it checks."""
    state = st.initial_state()
    for record in h.log.records():
        event = record.event
        st.apply(state, event)
        if not isinstance(event, _SLOT_EVENTS):
            continue
        server_id = getattr(event, "server_id", None)
        if server_id is None:
            job = state.jobs.get(event.job_id)
            server_id = job.server_id if job is not None else None
        machine = state.machines.get(server_id) if server_id is not None else None
        if machine is None:
            continue
        running = [
            job.job_id
            for job in state.jobs.values()
            if job.server_id == machine.server_id
            and job.status == st.RUNNING
            and job.execution in _IN_COMFYUI
        ]
        if len(running) > machine.max_jobs:
            return [
                f"slots: machine {machine.server_id} (max_jobs {machine.max_jobs}) had the"
                f" prompts of {', '.join(running)} at once (seq {record.seq})"
            ]
    return []


def check_outputs(h: Harness) -> list[str]:
    """Saved outputs on disk, as logged, byte-identical to what a simulator produced."""
    if not h.running:
        return []
    produced: dict[str, set[str]] = {}  # file name -> sha256s produced under that name
    for sim in h.sims().values():
        for key, data in sim.produced.items():
            name = key.rsplit("/", 1)[-1]
            produced.setdefault(name, set()).add(hashlib.sha256(data).hexdigest())
    problems: list[str] = []
    for job in h.state.jobs.values():
        for out in job.outputs:
            path = Path(out.path)
            try:
                data = path.read_bytes()
            except OSError as exc:
                problems.append(f"outputs: {job.job_id} {out.filename}: unreadable: {exc}")
                continue
            digest = hashlib.sha256(data).hexdigest()
            if digest != out.sha256 or len(data) != out.size:
                problems.append(
                    f"outputs: {job.job_id} {out.filename} on disk ({len(data)} B) is not what"
                    f" was logged ({out.size} B, sha256 {out.sha256[:12]})"
                )
            if out.sha256 not in produced.get(Path(out.filename).name, set()):
                problems.append(
                    f"outputs: {job.job_id} {out.filename} (sha256 {out.sha256[:12]}) matches"
                    " no file the simulator produced under that name"
                )
    return problems


def check_actors(h: Harness) -> list[str]:
    """No actor crashed (a restart is how a supervisor survives a bug, not how it is fixed)."""
    return [
        f"actors: {e.actor} crashed at seq {r.seq}: {e.error_type}: {e.message[:160]}"
        for r in h.log.records()
        if isinstance(e := r.event, ActorCrashed)
    ][:_MAX_LISTED]


CHECKS: Final = (
    check_runtime_alive,
    check_log,
    check_replay,
    check_jobs,
    check_machines,
    check_ledger,
    check_prompts,
    check_slots,
    check_outputs,
    check_actors,
)


def check_all(h: Harness) -> None:
    """Run every check; raise :class:`InvariantViolation` listing every problem."""
    problems: list[str] = []
    for check in CHECKS:
        problems.extend(check(h))
    if problems:
        raise InvariantViolation(problems)


def check_quiet(h: Harness) -> None:
    """After :meth:`Harness.run_until_quiet`: everything ended, nothing runs, the bill is
    exact. Raises :class:`InvariantViolation`."""
    problems = check_runtime_alive(h)
    if h.running:
        state = h.state
        problems.extend(
            f"quiet: {j.job_id} is still {j.status} after faults stopped and the clock ran on"
            for j in state.jobs.values()
            if j.status in st.ACTIVE_STATUSES
        )
        problems.extend(
            f"quiet: the runtime still holds machine {m.server_id} ({m.status})"
            for m in state.machines.values()
            if m.kind == "runcomfy" and m.status not in st.MACHINE_GONE
        )
        problems.extend(
            f"quiet: machine {sid} still runs in the cloud" for sid in h.cloud.running()
        )
        problems.extend(check_ledger(h, exact=True))
    if problems:
        raise InvariantViolation(problems)
