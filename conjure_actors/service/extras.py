"""CONJURE's own endpoints beside the Comfy API v2, under ``/api/conjure/``, and the probe.

- ``POST /api/conjure/jobs``: the seeds' front-end call. Multipart ``image`` + ``prompt``
  (+ ``set`` fields in ``--set`` form, ``NODE.INPUT=VALUE``, and ``workflow``, the name of a
  bundled workflow); answers the v2 job object, 201, through the same submit path as
  ``POST /api/v2/jobs`` (queue bound, durable before the answer, a single-use
  ``Idempotency-Key``).
- ``GET /api/conjure/mode``: simulated / a ComfyUI (its origin only) / RunComfy, and
  whether RunComfy answers (asked at most every :data:`PROBE_TTL` seconds).
- ``GET /api/conjure/machines``, ``GET /api/conjure/costs``: read from the state; a
  machine's URL is never in it, so never in an answer.
- ``POST /api/conjure/estimate``: what one more job would typically cost before it is
  submitted (``prices.estimate_job_cost``: its machine time, from the history of the same
  workflow, plus, when no warm machine is free, what the machine launched for it bills
  around it: :func:`cold_overheads`). A workflow is named by a bundled name or a v2 job's
  ``metadata`` label :data:`WORKFLOW_LABEL`; an unknown name is 400.
- ``PUT /api/conjure/budget``: ``Conjure.set_budget``; answers the costs.
- ``GET /api/v2/health``: for probes, answered without a token.
- ``GET /api/conjure/openapi.yaml`` (this surface's contract) and ``GET /api/v2/openapi.yaml``
  (the Comfy API v2 one), both shipped in the package.

Money is given twice: exact integer micro-USD (``*_micros``, as in the log) and USD numbers
for display (``*_usd``).
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import logging
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any, Final

import attrs
import trio
from starlette.datastructures import UploadFile
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

import conjure_actors
from conjure_actors.actors.assets import DeleteAsset, RecordAsset, Recorded
from conjure_actors.actors.example import DEFAULT_WORKFLOW, bundled_workflow, bundled_workflows
from conjure_actors.actors.pool import attached_name
from conjure_actors.clients.comfyui import origin_of
from conjure_actors.clients.errors import ClientError
from conjure_actors.domain import cost_policy
from conjure_actors.domain import state as st
from conjure_actors.domain.errors import PriceTableError, WorkflowError
from conjure_actors.domain.preflight import check_values, image_problem
from conjure_actors.domain.prices import MAX_BUDGET_USD, MICROS_PER_USD, estimate_job_cost
from conjure_actors.domain.workflow import (
    TEXT_ENCODER_INPUTS,
    Workflow,
    apply_bindings,
    bindings_for,
    parse_set,
    show,
    validate_graph,
    workflow_from_text,
)
from conjure_actors.errors import UsageError
from conjure_actors.service.app import KeyReusedError, Service, key_reused
from conjure_actors.service.blobs import BlobTooLargeError, StoreRefusedError
from conjure_actors.service.errors import ApiError, invalid_request, too_deep
from conjure_actors.service.metrics import MetricsMiddleware, ServiceMetrics
from conjure_actors.service.responses import JSONResponse
from conjure_actors.service.security import SecuritySettings, security_middleware
from conjure_actors.service.streams import events as followed_events
from conjure_actors.service.streams import events_url as followed_events_url
from conjure_actors.service.v2_assets import (
    PUT_ATTEMPTS,
    damaged_reason,
    store_problem,
    store_refused,
)
from conjure_actors.service.v2_jobs import (
    image_decodes,
    invalid_workflow,
    iso,
    job_labels,
    job_view,
    service_of,
)

log = logging.getLogger("conjure_actors.service")

__all__ = [
    "DEFAULT_JOB_SECONDS",
    "PROBE_TTL",
    "ROUTES",
    "WORKFLOW_LABEL",
    "Extras",
    "cold_overheads",
    "estimate",
    "extras_for",
    "job_seconds_of",
    "job_workflow_name",
    "known_workflow_names",
    "measured_waits",
    "metrics_lifespan",
    "unknown_workflow",
]

DEFAULT_JOB_SECONDS: Final = 60.0
"""A job's run time when no finished job of its workflow says better."""
PROBE_TTL: Final = 30.0
"""Seconds a RunComfy reachability answer is reused (probes must not eat its rate limit)."""
PROBE_TIMEOUT: Final = 5.0
MAX_SETS: Final = 64
MAX_PROMPT_CHARS: Final = 10_000


def _usd(micros: int | None) -> float | None:
    return None if micros is None else micros / MICROS_PER_USD


def _now(service: Service) -> float:
    """The runtime's wall clock (the one its events carry)."""
    return float(service.conjure.ctx.now())


# ----------------------------------------------------------------------------- health


async def health(request: Request) -> Response:
    """``GET /api/v2/health``: ``ok`` while accepting jobs, ``stopping`` during shutdown,
    ``degraded`` (still 200: reads work, and a restart would not free the disk) with its
    ``reason`` while the log's full disk holds the journal (new work is 507), while an
    attached ComfyUI does not answer (its jobs wait for it), or while
    launching is stopped because launches kept failing (the jobs waiting then failed; the
    next job tries again), while the budget is exceeded, or while it refuses launches (from
    its first refusal until a launch is granted, the budget is set again, or no job waits
    for a machine any more: ``Conjure.budget_problem``), or while the stored bytes of an
    asset are known gone or damaged (:func:`damaged_reason`), or while the output folder
    refuses writes (``service.outputs``: new jobs are 507), or while the blob store refuses
    writes (:func:`store_problem`; a write is tried again at most every
    :data:`STORE_PROBE_INTERVAL`, so the probe sees it recover without an upload, and one is
    tried at most every :data:`STORE_CHECK_INTERVAL` while it takes them, so a store that
    turns unwritable while serve is idle is seen before a job's outputs meet it)."""
    service = service_of(request)
    await _probe_store(service)
    held = service.held_since
    launch_problem = service.conjure.launch_problem
    if not service.accepting:
        body: dict[str, Any] = {"status": "stopping"}
    elif held is not None:
        body = {
            "status": "degraded",
            "reason": "the disk of the event log is full: new jobs, uploads and changes get"
            " 507 insufficient_storage, work already accepted waits; free space on that disk",
            "held_since": iso(held),
        }
    elif (refused := store_problem(service)) is not None:
        body = {"status": "degraded", "reason": refused}
    elif service.outputs is not None and (unsaved := service.outputs.problem()) is not None:
        body = {"status": "degraded", "reason": unsaved}
    elif down := _attached_down(service):
        body = {
            "status": "degraded",
            "reason": f"{down[0]} does not answer: jobs wait for it (up to their timeouts);"
            " start it again, or check its network",
        }
    elif launch_problem is not None:
        body = {
            "status": "degraded",
            "reason": f"{launch_problem}: the jobs waiting for a machine failed; the next job"
            " submitted launches again",
        }
    elif service.conjure.state.budget.exceeded:
        body = {
            "status": "degraded",
            "reason": "the budget is exceeded: every machine stopped, new jobs get 402"
            " insufficient_credits; raise it (PUT /api/conjure/budget)",
        }
    elif (refusing := service.conjure.budget_problem) is not None:
        body = {
            "status": "degraded",
            "reason": f"the budget refuses launches: {refusing}",
        }
    elif (damaged := damaged_reason(service)) is not None:
        body = {"status": "degraded", "reason": damaged}
    else:
        body = {"status": "ok"}
    body["version"] = conjure_actors.__version__
    return JSONResponse(body, status_code=200 if service.accepting else 503)


STORE_PROBE_INTERVAL: Final = 1.0
#: Seconds between two probes of a blob store that took its last write (by a health check):
#: a folder remounted read-only or filled while nothing was uploaded is seen by a monitor
#: polling health, not first by the next job, whose outputs then fail to be stored.
STORE_CHECK_INTERVAL: Final = 10.0
"""Seconds between two writes the health probe tries in a blob store that refused one (the
probe needs no token: a flood of them costs one tiny file a second)."""


async def _probe_store(service: Service) -> None:
    """Try a write to the blob store: at most every :data:`STORE_PROBE_INTERVAL` while it
    refuses writes (once it takes one, health says so at once), every
    :data:`STORE_CHECK_INTERVAL` while it takes them (one refused since is seen)."""
    now = trio.current_time()
    last: float = getattr(service, "_store_probed_at", -math.inf)
    every = STORE_PROBE_INTERVAL if service.blobs.refusal() is not None else STORE_CHECK_INTERVAL
    if now - last < every:
        return
    service._store_probed_at = now  # type: ignore[attr-defined]
    with contextlib.suppress(OSError):  # another error: the refusal stays, as it was
        await trio.to_thread.run_sync(service.blobs.probe_write)


def _attached_down(service: Service) -> list[str]:
    """The attached ComfyUIs (``--comfyui-url``, the dev machine) the pool found down."""
    return [
        attached_name(m.kind, m.server_id)
        for m in service.state.machines.values()
        if m.kind != "runcomfy" and m.status not in st.MACHINE_GONE and not m.healthy
    ]


# ------------------------------------------------------------------------------- mode


class _Probe:
    """The last answer to "does RunComfy answer?" and when it was asked."""

    def __init__(self) -> None:
        self.at = -math.inf
        self.answers: bool | None = None
        self.lock = trio.Lock()


def _probe_of(service: Service) -> _Probe:
    probe = getattr(service, "_runcomfy_probe", None)
    if probe is None:
        probe = _Probe()
        service._runcomfy_probe = probe  # type: ignore[attr-defined]
    return probe


async def runcomfy_answers(service: Service) -> bool | None:
    """Whether the RunComfy API (real or simulated) answers a ``GET /servers`` (None: not
    used in this mode). Cached for :data:`PROBE_TTL` seconds."""
    client = service.conjure.ctx.runcomfy
    if client is None:
        return None
    probe = _probe_of(service)
    async with probe.lock:
        if trio.current_time() - probe.at < PROBE_TTL:
            return probe.answers
        answers = False
        with trio.move_on_after(PROBE_TIMEOUT):
            try:
                await client.list_servers()
                answers = True
            except ClientError:
                answers = False
        probe.at, probe.answers = trio.current_time(), answers
        return answers


async def mode(request: Request) -> Response:
    """``GET /api/conjure/mode``."""
    service = service_of(request)
    ctx = service.conjure.ctx
    config = ctx.config
    comfyui = (
        origin_of(config.comfyui_url) if ctx.mode == "comfyui" and config.comfyui_url else None
    )
    return JSONResponse(
        {
            "mode": ctx.mode,
            "comfyui_url": comfyui,
            "comfyui_answers": None if comfyui is None else not _attached_down(service),
            "runcomfy": {
                "used": ctx.runcomfy is not None,
                "simulated": ctx.mode == "simulated",
                "answers": await runcomfy_answers(service),
                "server_type": config.runcomfy.server_type,
                "plan": config.runcomfy.plan,
            },
            "version": conjure_actors.__version__,
        }
    )


# --------------------------------------------------------------------------- machines


def machine_view(machine: st.Machine, now: float) -> dict[str, Any]:
    """One machine, as the state knows it (no URL: the state never holds one)."""
    cost = st.machine_cost_at(machine, now)
    return {
        "id": machine.server_id,
        "kind": machine.kind,
        "status": machine.status,
        "server_type": machine.server_type,
        "workflow_version": machine.workflow_version,
        "healthy": machine.healthy,
        "jobs": list(machine.leases),
        "max_jobs": machine.max_jobs,
        "jobs_served": machine.jobs_served,
        "launched_at": iso(machine.launched_at),
        "ready_at": iso(machine.service_ready_at),
        "idle_since": iso(machine.idle_since),
        "stops_by": iso(machine.estimated_stopping_at),
        "stopped_at": iso(machine.stopped_at),
        "rate_micros_per_hour": machine.rate_micros_per_hour,
        "billed_seconds": machine.billed_seconds,
        "cost_micros": cost,
        "cost_usd": _usd(cost),
    }


def machines_view(state: st.State, now: float) -> dict[str, Any]:
    """Every machine of the log, running ones first, and the launches asked for whose
    machine RunComfy has not named yet (a cold start takes minutes: say one is coming)."""
    gone = st.MACHINE_GONE
    ordered = sorted(state.machines.values(), key=lambda m: (m.status in gone, m.server_id))
    launches = sorted(state.launch_requests.values(), key=lambda r: (r.at, r.request_key))
    return {
        "machines": [machine_view(m, now) for m in ordered],
        "launches": [
            {
                "request_key": r.request_key,
                "server_type": r.server_type,
                "workflow_version": r.workflow_version,
                "requested_at": iso(r.at),
            }
            for r in launches
        ],
    }


async def machines(request: Request) -> Response:
    """``GET /api/conjure/machines``."""
    service = service_of(request)
    return JSONResponse(machines_view(service.state, _now(service)))


# ------------------------------------------------------------------------------ costs


def costs_view(state: st.State, now: float, *, lease_micros: int) -> dict[str, Any]:
    """The ledger, the spend up to ``now``, the budget, and each machine's bill.
    ``lease_micros``: what one launch commits (a lease of the configured server type), for
    the budget's ``committed``/``available``: the figures a launch or a renewal is granted
    or refused on (``cost_policy``), as every refusal line says them."""
    spent = sum(st.machine_cost_at(m, now) for m in state.machines.values())
    limit = state.budget.limit_micros
    remaining = None if limit is None else limit - spent
    committed = cost_policy.committed_micros(state, now, lease_micros=lease_micros)
    available = None if limit is None else limit - spent - committed
    # Bills that are the most a machine can have cost (its stop unanswered at a crash, found
    # gone after its lease's end; found gone with no stop in the log: cost_policy.at_most_bills),
    # as status and the summary say.
    at_most = cost_policy.at_most_bills(state)
    return {
        "spent_micros": spent,
        "spent_usd": _usd(spent),
        "ledger_micros": state.ledger.total_micros,
        "ledger_usd": _usd(state.ledger.total_micros),
        "ledger_at_most": bool(at_most),
        "budget": {
            "limit_micros": limit,
            "limit_usd": _usd(limit),
            "remaining_micros": remaining,
            "remaining_usd": _usd(remaining),
            "committed_micros": committed,
            "committed_usd": _usd(committed),
            "available_micros": available,
            "available_usd": _usd(available),
            "warned": state.budget.warned,
            "exceeded": state.budget.exceeded,
            "launches_refused": state.budget.launches_refused,
        },
        "price_table_versions": list(state.ledger.price_table_versions),
        "machines": [
            {
                "id": m.server_id,
                "status": m.status,
                "server_type": m.server_type,
                "rate_micros_per_hour": m.rate_micros_per_hour,
                "billed_seconds": m.billed_seconds,
                "cost_micros": st.machine_cost_at(m, now),
                "cost_at_most": m.server_id in at_most,
                "cost_usd": _usd(st.machine_cost_at(m, now)),
            }
            for m in sorted(state.machines.values(), key=lambda m: m.server_id)
            if m.kind == "runcomfy"
        ],
    }


def _lease_micros(service: Service) -> int:
    """What one launch commits: a lease of the configured server type."""
    try:
        lease: int = service.conjure.ctx.lease_micros()
    except PriceTableError:  # (no RunComfy launch to price: a ComfyUI the user runs)
        return 0
    return lease


def _costs(service: Service) -> dict[str, Any]:
    return costs_view(service.state, _now(service), lease_micros=_lease_micros(service))


async def costs(request: Request) -> Response:
    """``GET /api/conjure/costs``."""
    service = service_of(request)
    return JSONResponse(_costs(service))


async def _json_object(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise invalid_request("the body is not JSON: send a JSON object") from None
    except RecursionError:
        raise too_deep() from None
    if not isinstance(body, dict):
        raise invalid_request("the body must be a JSON object")
    return body


async def put_budget(request: Request) -> Response:
    """``PUT /api/conjure/budget`` ``{"usd": 5.0}`` (``null``: unlimited)."""
    service = service_of(request)
    service.refuse_while_held()
    body = await _json_object(request)
    unknown = sorted(k for k in body if k != "usd")
    if unknown or "usd" not in body:
        raise invalid_request('send {"usd": <amount in USD, or null for no limit>}')
    usd = body["usd"]
    if usd is not None and (
        isinstance(usd, bool)
        or not isinstance(usd, int | float)
        or not math.isfinite(usd)
        or usd < 0
        or usd > MAX_BUDGET_USD
    ):
        raise invalid_request(f"'usd' must be a number from 0 to {MAX_BUDGET_USD}, or null")
    await service.conjure.set_budget(None if usd is None else float(usd))
    return JSONResponse(_costs(service))


# --------------------------------------------------------------------------- estimate


WORKFLOW_LABEL: Final = "workflow"
"""The ``metadata`` label by which a ``POST /api/v2/jobs`` names its workflow for the
estimate (the Comfy API v2 has no name field: every v2 graph registers as ``api``)."""
UNNAMED: Final = frozenset({"api"})
"""Registration names that name no workflow: ``api`` is every v2 graph's."""
MAX_NAMES_SAID: Final = 20
"""Known workflow names an unknown name's 400 lists (the rest are counted)."""


def _stem(name: str) -> str:
    return name.removesuffix(".json")


def job_workflow_name(state: st.State, job: st.Job) -> str | None:
    """The name ``job``'s workflow goes by for the estimate: its ``metadata`` label
    :data:`WORKFLOW_LABEL` (a v2 client's), else the name it registered under without
    ``.json`` (a bundled workflow's), None for an unnamed v2 graph."""
    api = state.service.api_jobs.get(job.job_id)
    label = api.labels.get(WORKFLOW_LABEL) if api is not None else None
    if label:
        return _stem(label)
    record = state.workflows.get(job.workflow_sha256)
    if record is None or record.name in UNNAMED:
        return None
    return _stem(record.name)


def known_workflow_names(state: st.State) -> set[str]:
    """The names the estimate knows: the bundled workflows' and those of the log's jobs."""
    names = {_stem(n) for n in bundled_workflows()}
    for job in state.jobs.values():
        name = job_workflow_name(state, job)
        if name is not None:
            names.add(name)
    return names


def _said(name: str, *, quote: bool = False) -> str:
    """``name`` for a one-line message: quoted (escaped) unless plain, at most 64 chars (a
    label is the client's text: it may hold a line break, or be long)."""
    if len(name) > 64:
        name = name[:61] + "..."
    return repr(name) if quote or not name.isprintable() or "," in name else name


def unknown_workflow(name: str, known: set[str]) -> ApiError:
    """The 400 for a ``workflow`` the estimate knows no job or bundled workflow of; its
    ``details.workflows`` lists every known name (the message the first ones)."""
    ordered = sorted(known)
    said = ", ".join(_said(n) for n in ordered[:MAX_NAMES_SAID])
    if len(ordered) > MAX_NAMES_SAID:
        said += f" and {len(ordered) - MAX_NAMES_SAID} more"
    return invalid_request(
        f"no workflow {_said(name, quote=True)}: send one of {said}, or none for every"
        f' job\'s mean (a v2 job is named by its metadata label {{"{WORKFLOW_LABEL}": "<name>"}})',
        workflows=ordered,
    )


def job_seconds_of(state: st.State, workflow_name: str | None) -> tuple[float, str]:
    """The mean machine time of the succeeded jobs of ``workflow_name`` (of every job when
    None; the name as :func:`job_workflow_name` gives it, ``.json`` or not), and its basis:
    ``history`` or ``default`` (:data:`DEFAULT_JOB_SECONDS`).

    A job's machine time runs from when it took its machine (``JobStarted``, its lease) to
    its end (its release follows at once): the input uploads, ComfyUI's queue and run, and
    the output downloads, all billed while the job holds the machine, not only the prompt's
    execution."""
    wanted = None if workflow_name is None else _stem(workflow_name)
    runs = [
        job.finished_at - job.started_at
        for job in state.jobs.values()
        if job.status == st.SUCCEEDED
        and job.started_at is not None
        and job.finished_at is not None
        and (wanted is None or job_workflow_name(state, job) == wanted)
    ]
    if not runs:
        return DEFAULT_JOB_SECONDS, "default"
    return max(0.0, sum(runs) / len(runs)), "history"


def _warm(state: st.State) -> bool:
    return any(
        m.status == st.M_READY and m.healthy and len(m.leases) < m.max_jobs
        for m in state.machines.values()
    )


OVERHEAD_SAMPLES: Final = 20
"""The most recent idle-stopped machines a cold job's start and stop waits are measured on."""


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def measured_waits(state: st.State) -> tuple[list[float], list[float]]:
    """What the log's machines stopped by the idle reaper (the :data:`OVERHEAD_SAMPLES`
    last) billed around their jobs: ``starts``, from the server's Ready to its first job
    taking it (one that waited for it: submitted by then), and ``stops``, from the stop's
    decision to the ``DELETE``'s answer (billing ends there)."""
    first: dict[str, st.Job] = {}  # server id -> the job that took it first
    for job in state.jobs.values():
        if job.server_id is None or job.started_at is None:
            continue
        seen = first.get(job.server_id)
        if seen is None or job.started_at < (seen.started_at or 0.0):
            first[job.server_id] = job
    machines = [
        m
        for m in state.machines.values()
        if m.kind == "runcomfy"
        and m.status == st.M_STOPPED
        and m.stop_reason == "idle"
        and m.lost_reason is None
        and not m.stop_still_up
        and m.service_ready_at is not None
    ][-OVERHEAD_SAMPLES:]
    starts: list[float] = []
    stops: list[float] = []
    for m in machines:
        ready = m.service_ready_at
        taker = first.get(m.server_id)
        if ready is not None and taker is not None and taker.submitted_at <= ready:
            starts.append(max(0.0, (taker.started_at or ready) - ready))
        if m.stopped_at is not None and m.stop_requested_at is not None:
            stops.append(max(0.0, m.stopped_at - m.stop_requested_at))
    return starts, stops


def cold_overheads(
    state: st.State, *, poll_interval: float, idle_timeout: float
) -> tuple[float, float]:
    """``(start, idle)``: the seconds a machine launched for one job bills beyond the job's
    own machine time (typical values, not bounds).

    Billing starts at the server's Ready, but the pool sees it at its next listing (every
    ``poll_interval``, or slower when the listings are rate-limited), checks its ComfyUI,
    then gives it the job: ``start`` is the median of that wait on the log's machines
    (:func:`measured_waits`), half a poll interval without any. After the job's release
    the idle reaper decides the stop at the first listing past ``idle_timeout`` (half an
    interval later on average) and the bill ends when the ``DELETE`` answers: ``idle`` is
    the timeout, half an interval, and the median of that answer's wait on the log's
    machines (0 without any)."""
    starts, stops = measured_waits(state)
    half = poll_interval / 2
    start = _median(starts) if starts else half
    stop = _median(stops) if stops else 0.0
    return start, idle_timeout + half + stop


def estimate(service: Service, workflow: str | None, server_type: str | None) -> dict[str, Any]:
    """What one more job would add to the bill now (see the module docstring); 400 for a
    ``workflow`` name no bundled workflow nor job of the log has (:func:`unknown_workflow`)."""
    ctx = service.conjure.ctx
    state = service.state
    if workflow is not None:
        known = known_workflow_names(state)
        if _stem(workflow) not in known:
            raise unknown_workflow(workflow, known)
    server_type = server_type or ctx.config.runcomfy.server_type
    try:
        rate = ctx.table.rate(server_type)
    except PriceTableError as exc:
        raise invalid_request(str(exc)) from None
    seconds, basis = job_seconds_of(state, workflow)
    warm = _warm(state)
    billed = ctx.mode != "comfyui"  # a ComfyUI the user runs costs us nothing
    pool = ctx.config.pool
    start, idle = (0.0, 0.0)
    if billed and not warm:
        start, idle = cold_overheads(
            state, poll_interval=pool.poll_interval, idle_timeout=pool.idle_timeout
        )
    micros = (
        estimate_job_cost(ctx.table, server_type, start + seconds, idle_seconds=idle)
        if billed
        else 0
    )
    now = _now(service)
    remaining = costs_view(state, now, lease_micros=_lease_micros(service))["budget"][
        "remaining_micros"
    ]
    within = remaining is None or micros <= remaining
    limit = state.budget.limit_micros
    if within and billed and not warm and limit is not None:
        # No machine free: the job needs a launch, which the budget grants only if one
        # lease fits beyond what is spent and committed (cost_policy.check_launch).
        within = cost_policy.launch_allowed(
            limit=limit,
            spent=cost_policy.spent_micros(state, now),
            committed=cost_policy.committed_micros(state, now, lease_micros=ctx.lease_micros()),
            estimate=ctx.lease_micros(server_type),
        )
    return {
        "mode": ctx.mode,
        "server_type": server_type,
        "rate_micros_per_hour": rate if billed else 0,
        "price_table_version": ctx.table.version,
        "job_seconds": seconds,
        "basis": basis,
        "warm_machine": warm,
        "start_seconds": start,
        "idle_seconds": idle,
        "estimate_seconds": math.ceil(start + seconds + idle) if billed else 0,
        "estimate_is": "typical",
        "estimate_micros": micros,
        "estimate_usd": _usd(micros),
        "remaining_micros": remaining,
        "within_budget": within,
    }


async def post_estimate(request: Request) -> Response:
    """``POST /api/conjure/estimate`` ``{"workflow": name?, "server_type": type?}``."""
    service = service_of(request)
    body = await _json_object(request)
    unknown = sorted(k for k in body if k not in ("workflow", "server_type"))
    if unknown:
        raise invalid_request(f"unknown fields {unknown}: send workflow and/or server_type")
    workflow = body.get("workflow")
    server_type = body.get("server_type")
    # Given, a field is what its spec says (a string); null is not "left out" (QA7 F9).
    if "workflow" in body and not isinstance(workflow, str):
        raise invalid_request("'workflow' must be the name of a workflow (or left out)")
    if "server_type" in body and not isinstance(server_type, str):
        raise invalid_request("'server_type' must be a string (or left out)")
    return JSONResponse(estimate(service, workflow, server_type))


# ------------------------------------------------------------------------------- jobs


def _form_gaps(workflow: Workflow) -> list[str]:
    """The form fields (``image``, ``prompt``) ``workflow`` has no node to take."""
    roles = workflow.roles()
    gaps = [] if roles.input_image is not None else ["image"]
    prompt_class = workflow.class_of(roles.prompt) if roles.prompt is not None else None
    if not TEXT_ENCODER_INPUTS.get(prompt_class or ""):
        gaps.append("prompt")
    return gaps


@functools.cache
def form_workflows() -> tuple[str, ...]:
    """The bundled workflows ``POST /api/conjure/jobs`` can run: those with a node for its
    ``image`` and one for its ``prompt`` (both required); names without ``.json``."""
    return tuple(
        name.removesuffix(".json")
        for name, text in bundled_workflows().items()
        if not _form_gaps(workflow_from_text(text.decode(), name=name))
    )


_NODE_FOR: Final = {"image": "LoadImage", "prompt": "text-encode"}


def _bundled_name(raw: str | None) -> str:
    """The bundled workflow a form names (default :data:`DEFAULT_WORKFLOW`): an unknown one
    is 400, one that cannot take the form's ``image`` and ``prompt`` 422 ``invalid_workflow``
    (QA10 F8: the list offered them all, each then refused in the CLI's words, "--prompt"),
    both naming the workflows that can."""
    name = raw or DEFAULT_WORKFLOW
    if not name.endswith(".json"):
        name += ".json"
    runnable = ", ".join(form_workflows())
    if name not in bundled_workflows():
        raise invalid_request(
            f"no bundled workflow {raw!r}: use one of {runnable} (those that take an image"
            " and a prompt)"
        )
    stem = name.removesuffix(".json")
    if stem not in form_workflows():
        workflow = workflow_from_text(bundled_workflow(name).decode(), name=name)
        gaps = _form_gaps(workflow)
        raise invalid_workflow(
            [
                f"{field!r}: the workflow {stem!r} has no {_NODE_FOR[field]} node to take it;"
                f" use one of {runnable}"
                for field in gaps
            ]
        )
    return name


async def post_job(request: Request) -> Response:
    """``POST /api/conjure/jobs``: multipart ``image``, ``prompt``, ``set``*, ``workflow``,
    ``metadata`` (a JSON object of string labels, as a v2 job's: a page finds its jobs by
    them in ``GET /api/v2/jobs?metadata[k]=v``)."""
    service = service_of(request)
    ctype = request.headers.get("content-type", "")
    if not ctype.startswith("multipart/form-data"):
        raise invalid_request("send multipart/form-data with an 'image' file and a 'prompt'")
    async with request.form(max_files=1, max_fields=MAX_SETS + 8) as form:
        fields = ("image", "prompt", "set", "workflow", "metadata")
        unknown = sorted({k for k in form if k not in fields})
        if unknown:
            raise invalid_request(
                f"unknown fields {unknown}: send image, prompt, set, workflow, metadata"
            )
        upload = form.get("image")
        if not isinstance(upload, UploadFile):
            raise invalid_request("'image' is required: the input picture, as a file")
        image = await upload.read()
        prompt = form.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise invalid_request("'prompt' is required: what to make of the picture")
        if len(prompt) > MAX_PROMPT_CHARS:
            raise invalid_request(f"'prompt' is longer than {MAX_PROMPT_CHARS} characters")
        sets = form.getlist("set")
        workflow_field = form.get("workflow")
        metadata_field = form.get("metadata")
    labels = _form_labels(metadata_field)
    if not image:
        raise invalid_request("'image' is empty")
    if not all(isinstance(s, str) for s in sets):
        raise invalid_request("'set' fields are text: NODE.INPUT=VALUE")
    if workflow_field is not None and not isinstance(workflow_field, str):
        raise invalid_request("'workflow' is the name of a bundled workflow")
    workflow = await _preflight(
        service, _bundled_name(workflow_field), image, prompt, [str(s) for s in sets]
    )
    key = request.headers.get("idempotency-key")
    if key is not None and not (0 < len(key) <= 255):
        raise invalid_request("Idempotency-Key must be 1 to 255 characters")
    if key is not None and (made := service.job_of_key(key)) is not None:
        # A retry of a submission that was made (its answer lost): refused before its image
        # becomes one more asset record (the submission would refuse it the same way).
        raise key_reused(service, KeyReusedError(key, made), key)
    role = workflow.roles().input_image
    service.check_accepting()  # a refusal known now stores no image
    input_assets = {} if role is None else {f"{role}.image": await _image_asset(service, image)}
    try:
        job_id = await service.submit_job(
            workflow,
            image=image,
            prompt=prompt,
            sets=[str(s) for s in sets],
            labels=labels,
            input_assets=input_assets,
            idempotency_key=key,
        )
    except (KeyReusedError, WorkflowError, UsageError, ApiError) as exc:
        # Refused (nothing of the job was logged): its image is no asset of anyone's. Not
        # on a cancel or a timeout: the submission may still land (then the job holds it).
        for asset_id in input_assets.values():
            await _drop_input_asset(service, asset_id)
        if isinstance(exc, KeyReusedError):
            raise key_reused(service, exc, key) from None
        if isinstance(exc, WorkflowError):
            raise invalid_workflow(exc.problems) from None
        if isinstance(exc, UsageError):
            raise invalid_request(str(exc)) from None
        raise
    return JSONResponse(job_view(request, service, job_id), status_code=201)


async def _drop_input_asset(service: Service, asset_id: str) -> None:
    """Delete the input asset of a refused submission (its blob goes with it if no other
    asset has those bytes); a failure to is logged, not the client's answer."""
    try:
        await service.assets.ask(DeleteAsset(asset_id), timeout=60)
    except Exception as exc:  # the refusal is what the client must hear
        log.warning("the image of a refused submission is kept as asset %s: %s", asset_id, exc)


def _form_labels(field: Any) -> dict[str, str]:
    """A form's ``metadata`` field: a JSON object of string labels (as a v2 job's
    ``metadata``: 422 ``metadata_invalid`` past its limits), or none."""
    if field is None:
        return {}
    if not isinstance(field, str):
        raise invalid_request("'metadata' is text: a JSON object of string labels")
    try:
        raw = json.loads(field)
    except ValueError:
        raise invalid_request(
            '\'metadata\' is not JSON: send an object of string labels, e.g. {"tab": "3"}'
        ) from None
    return job_labels(raw)


_IMAGE_TYPES: Final = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF8", "image/gif"),
    (b"BM", "image/bmp"),
    (b"II*\x00", "image/tiff"),
    (b"MM\x00*", "image/tiff"),
)


def _image_type(image: bytes) -> str:
    """The media type of an image LoadImage read (by its first bytes)."""
    if image[:4] == b"RIFF" and image[8:12] == b"WEBP":
        return "image/webp"
    for magic, media_type in _IMAGE_TYPES:
        if image.startswith(magic):
            return media_type
    return "application/octet-stream"


async def _image_asset(service: Service, image: bytes) -> str:
    """The id of a new asset over ``image`` (the blob store keeps equal bytes once), the
    job's input asset as a ``POST /api/v2/jobs`` job's uploaded image is: the job holds
    it while it is retained, and ``GET /api/v2/jobs/{id}/workflow`` names it (``core/ASSET``),
    so that a "run again" runs on these bytes. No ``file_path``: a plain file name in a v2
    graph never resolves to it (pages send ``image.png`` or ``blob`` each time)."""
    service.refuse_while_held()  # 507 before the bytes go to the (full) disk
    for _ in range(PUT_ATTEMPTS):
        try:
            hash_text, size, _ = await trio.to_thread.run_sync(
                service.blobs.put_stream, io.BytesIO(image)
            )
        except StoreRefusedError as exc:
            raise store_refused(service, exc.refusal) from None
        except BlobTooLargeError:
            limit = service.settings.max_upload_bytes
            raise ApiError(
                413, "payload_too_large", f"'image' is over the upload limit of {limit} bytes"
            ) from None
        answer = await service.assets.ask(
            RecordAsset(
                hash=hash_text,
                size=size,
                content_type=_image_type(image),
                file_path=None,
                tags=(),
            ),
            timeout=60,
        )
        if isinstance(answer, Recorded):
            return answer.asset_id
    # removed under every attempt (nothing was logged): the spec's one 5xx
    raise ApiError(500, "upstream_error", "the image could not be stored; retry it")


def _bundled_checked(
    service: Service, name: str
) -> tuple[Workflow, tuple[str, ...], tuple[str, ...]]:
    """Bundled workflow ``name`` and what the service's catalogue finds wrong in it as it
    is: its graph (classes, links, required inputs) and its literals; once per catalogue
    (the graph never changes)."""
    catalog = service.catalog
    found = service.bundled_checks.get(name)
    if found is not None and found[0] is catalog:
        return found[1], found[2], found[3]
    workflow = workflow_from_text(bundled_workflow(name).decode(), name=name)
    graph = tuple(validate_graph(workflow.graph, catalog, strict=catalog is not None))
    values = tuple(check_values(workflow.graph, catalog))
    workflow.roles()  # computed now, once for every submission of the workflow
    service.bundled_checks[name] = (catalog, workflow, graph, values)
    return workflow, graph, values


def _malformed_set(text: str) -> bool:
    try:
        parse_set(text)
    except WorkflowError:
        return True
    return False


async def _preflight(
    service: Service, name: str, image: bytes, prompt: str, sets: list[str]
) -> Workflow:
    """What ``run`` checks before it launches anything (``check_before_launch``), before
    anything is stored: the image (400 ``invalid_request``: not an image LoadImage reads,
    its pixels decoded in a worker thread: a large one takes a while), then the graph, the
    bindings (prompt, ``set``) and every literal of the graph they make, against the
    service's catalogue (422 ``invalid_workflow``: what ComfyUI would refuse on a paid
    machine). The bundled graph is checked once; a submission checks the nodes it binds
    (all of them when the graph's own literals are not clean: a ``set`` may mend one)."""
    problem = await trio.to_thread.run_sync(image_problem, image, limiter=image_decodes())
    if problem is not None:
        raise invalid_request(f"'image': {problem}")
    workflow, problems, values = _bundled_checked(service, name)
    malformed = [
        f"the form field set={show(text if len(text) <= 60 else text[:57] + '...')}:"
        " use NODE.INPUT=VALUE (e.g. set=20.steps=30)"
        for text in sets
        if _malformed_set(text)
    ]
    if malformed:  # the domain's words name --set, the CLI's flag
        raise invalid_workflow([*problems, *malformed], workflow.graph)
    catalog = service.catalog
    try:
        bindings = bindings_for(
            workflow, prompt=prompt, sets=sets, catalog=catalog, strict=catalog is not None
        )
    except WorkflowError as exc:
        raise invalid_workflow([*problems, *exc.problems], workflow.graph) from None
    graph = workflow.graph
    bound = apply_bindings(graph, bindings)  # copy-on-write: a bound node is a new object
    if not values:
        bound = {nid: node for nid, node in bound.items() if node is not graph.get(nid)}
    found = [*problems, *(p for p in check_values(bound, catalog) if p not in problems)]
    if found:
        raise invalid_workflow(found, graph)
    return workflow


# ----------------------------------------------------------------------------- specs


def _spec(name: str) -> bytes:
    return resources.files("conjure_actors.service").joinpath(name).read_bytes()


async def extras_spec(request: Request) -> Response:
    """``GET /api/conjure/openapi.yaml``: the contract of this module's routes."""
    return Response(_spec("openapi_extras.yaml"), media_type="application/yaml")


async def v2_spec(request: Request) -> Response:
    """``GET /api/v2/openapi.yaml``: the Comfy API v2 contract this service speaks."""
    return Response(_spec("openapi_v2.yaml"), media_type="application/yaml")


ROUTES = [
    Route("/api/v2/health", health, methods=["GET"]),
    Route("/api/v2/openapi.yaml", v2_spec, methods=["GET"]),
    Route("/api/conjure/openapi.yaml", extras_spec, methods=["GET"]),
    Route("/api/conjure/mode", mode, methods=["GET"]),
    Route("/api/conjure/machines", machines, methods=["GET"]),
    Route("/api/conjure/costs", costs, methods=["GET"]),
    Route("/api/conjure/estimate", post_estimate, methods=["POST"]),
    Route("/api/conjure/budget", put_budget, methods=["PUT"]),
    Route("/api/conjure/jobs", post_job, methods=["POST"]),
    Route("/api/conjure/events", followed_events, methods=["GET"]),
    Route("/api/conjure/events/url", followed_events_url, methods=["GET"]),
]


@attrs.frozen
class Extras:
    """What ``serve`` adds to the v2 app: these routes, this middleware (outermost first),
    and the metrics (whose ``watch_journal`` the caller runs in its nursery)."""

    routes: list[BaseRoute]
    middleware: list[Middleware]
    metrics: ServiceMetrics


def extras_for(service: Service, security: SecuritySettings) -> Extras:
    """The extras of ``service``: metrics time every request (refused ones included), then
    CORS and the security checks run before any route."""
    metrics = ServiceMetrics(
        lambda: service.state,
        now=service.conjure.ctx.now,
        open_streams=lambda: int(service.open_streams),
        max_queued=service.settings.max_queue,
        last_seq=lambda: int(service.journal.last_seq),
        held_since=lambda: service.held_since,
        gate_stats=service.gate.statistics if service.gate is not None else None,
        job_counts=lambda: service.index.counts,
    )
    routes: list[BaseRoute] = [*ROUTES, Route("/metrics", metrics.endpoint, methods=["GET"])]
    middleware = [
        Middleware(MetricsMiddleware, metrics=metrics),
        *security_middleware(security, now=service.conjure.ctx.now),
    ]
    return Extras(routes, middleware, metrics)


def metrics_lifespan(metrics: ServiceMetrics, service: Service) -> Any:
    """A Starlette lifespan that observes journal appends while the app is served."""

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(metrics.watch_journal, service.journal)
            yield
            nursery.cancel_scope.cancel()

    return lifespan
