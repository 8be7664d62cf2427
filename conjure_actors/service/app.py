"""The job service's assembly: :class:`Service` (the runtime, the AssetActor, the blob store
and the settings), :func:`open_service` (its lifetime), :func:`create_app` (the Starlette app
over it) and :func:`serve_app` (hypercorn on trio).

One module per area adds its routes (``ROUTES`` lists of Starlette routes):
:mod:`~conjure_actors.service.v2_jobs`, :mod:`~conjure_actors.service.v2_assets`; the error
envelope is :mod:`~conjure_actors.service.errors`. Handlers read answers from the state (the
fold of the log, ``service.state``) and change it only by messages to actors (the runtime's
``Conjure`` and the AssetActor), so a restart on the same log serves the same answers.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import importlib.metadata
import inspect
import json
import logging
import math
import os
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any, Final

import attrs
import hypercorn.config
import hypercorn.events
import hypercorn.trio
import hypercorn.trio.run
import hypercorn.trio.tcp_server
import trio
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute

from conjure_actors.actors.assets import (
    AcceptJob,
    AssetActor,
    AssetsGone,
    Claimed,
    KeyReused,
    Retention,
)
from conjure_actors.domain import service_events as se
from conjure_actors.domain import state as st
from conjure_actors.domain.prices import format_usd
from conjure_actors.domain.workflow import Catalog, Workflow
from conjure_actors.errors import UsageError
from conjure_actors.runtime import ActorStoppedError, PriorityGate, background_checkpoint
from conjure_actors.service.blobs import BlobStore
from conjure_actors.service.errors import (
    EXCEPTION_HANDLERS,
    ApiError,
    insufficient_storage,
    restarting,
    was_logged,
)
from conjure_actors.service.jobindex import JobIndex, follow_jobs
from conjure_actors.service.outfolder import OutputFolder
from conjure_actors.service.previews import Previews
from conjure_actors.service.resume import History, JobChanges

__all__ = ["Service", "Settings", "create_app", "open_service", "serve_app"]

log = logging.getLogger("conjure_actors.service")


@attrs.frozen
class Settings:
    """The service's own knobs (the runtime's are in ``Config``)."""

    max_queue: int = 1000
    """Jobs queued or running at most; more is 429 ``queue_full``."""
    max_upload_bytes: int = 100 * 1024 * 1024
    """One asset upload at most (413 ``payload_too_large`` past it)."""
    max_streams: int = 100
    """Open SSE streams at most (429 ``too_many_streams``)."""
    progress_interval: float = 0.5
    """Seconds between two SSE ``progress`` events of a job (~2/s)."""
    preview_interval: float = 0.5
    """Seconds between two SSE ``preview`` events of a job (~2/s)."""
    retention: Retention = attrs.Factory(Retention)
    retry_after: int = 5
    """Seconds a 429 asks the client to wait."""
    background_max_wait: float = 0.06
    """Seconds the job actors' work waits at most while requests are in flight (the
    fairness bound of the runtime's ``PriorityGate``: see service/foreground.py). Measured
    against 30 and 100 ms with bench/serve.py's loads, the variants interleaved in one run
    (a shared, noisy box): 60 ms had more jobs/s than 30 ms in 8 of 9 (level, run) pairs
    (3 runs), with similar completion times; 100 ms beat 30 ms at 1 and 10 clients in 5 of
    5 runs but lost at 50 clients in 3 of 5 (each cohort it releases is larger)."""
    background_turn: float = 0.001
    """Seconds the job actors then go on, requests or not: under requests that never stop
    (a 429 storm) they still get ~1/61 of the time plus one step each per bound, so the
    queue drains. (20 ms / 2 ms was measured too: slower 201s, no faster completion.)"""
    request_linger: float = 0.003
    """Seconds the job actors keep waiting after the last request ended: a client's next
    request usually follows within a millisecond, and a job step started in between would
    delay it. (1.5 and 6 ms were measured too, at 1 client: both slower.)"""


SUBMIT_TIMEOUT: Final = 60.0
"""Seconds a submission waits for the AssetActor's answer (its append durable) at most."""
CLIENT_CANCEL: Final = "cancelled by the client"
"""The reason a client's cancel (POST /api/v2/jobs/{id}/cancel) is logged with: a job
canceled for it has no ``error`` (one canceled by the server has: v2_jobs)."""


class KeyReusedError(Exception):
    """The ``Idempotency-Key`` was claimed before (422 ``idempotency_key_reuse``); ``job_id``:
    the job its submission made, when it is known (:func:`key_reused`)."""

    def __init__(self, key: str | None, job_id: str | None = None) -> None:
        super().__init__(key)
        self.job_id = job_id


def key_reused(service: Service, exc: KeyReusedError, key: str | None) -> ApiError:
    """The 422 for a submission whose ``Idempotency-Key`` was used: single use, no replay
    (the spec), but the key's first submission may have been accepted though its answer
    never reached the client (a 5xx, a lost connection, a timeout), so the refusal names the
    job it made, which the client then polls (``details.job_id``, ``details.url``)."""
    made = exc.job_id or (service.job_of_key(key) if key is not None else None)
    if made is not None:
        return ApiError(
            422,
            "idempotency_key_reuse",
            f"this Idempotency-Key was used before, by the submission of job {made}:"
            " poll it instead of resubmitting",
            details={"job_id": made, "url": f"/api/v2/jobs/{made}"},
        )
    return ApiError(
        422,
        "idempotency_key_reuse",
        "this Idempotency-Key was used before (a key is single use, uploads and"
        " submissions alike): send a new one, or if this submission used it, poll or list"
        " your jobs instead of resubmitting",
    )


class Service:
    """What every handler reaches through ``request.app.state.service``."""

    def __init__(
        self,
        conjure: Any,
        assets: Any,
        blobs: BlobStore,
        settings: Settings,
        *,
        catalog: Catalog | None,
        mode: str,
    ) -> None:
        self.conjure = conjure
        self.assets = assets
        self.blobs = blobs
        self.settings = settings
        self._catalog = catalog
        self.mode = mode
        self.accepting = True
        self.open_streams = 0
        self._node_classes: dict[str, dict[str, str]] = {}
        # Validated submission graphs: JSON encoding -> (the catalogue, the Workflow); see
        # v2_jobs.checked_workflow (bounded there).
        self.checked_graphs: dict[bytes, tuple[Catalog | None, Workflow]] = {}
        # Input-image checks of assets: content hash -> the problem (None: an image); see
        # v2_jobs.check_input_images (bounded there).
        self.image_checks: dict[str, str | None] = {}
        # Bundled workflows of /api/conjure/jobs: name -> (the catalogue, the Workflow, the
        # problems of its graph and of its literals against it); see extras._bundled_checked.
        self.bundled_checks: dict[
            str, tuple[Catalog | None, Workflow, tuple[str, ...], tuple[str, ...]]
        ] = {}
        self.stopping = trio.Event()
        # Submissions between the queue check and their JobSubmitted: counted so that
        # concurrent requests cannot overshoot max_queue (flow control, not state).
        self._submitting = 0
        # Active and waiting jobs, followed event by event (open_service runs the task).
        self.index = JobIndex()
        # Where a submitted job's actor is started (open_service's nursery); None: inline.
        self.background: trio.Nursery | None = None
        # Submitted jobs waiting to enter the pool's queue, in submission order, and the
        # one background task that puts them there (started with the first: _start_later).
        self._to_start: collections.deque[str] = collections.deque()
        self._start_wake = trio.Event()
        self._starter = False
        # The newest preview of each running job (memory only; the job's actor feeds it).
        self.previews = Previews()
        # Which jobs changed since a seq: what a resumed event stream sends (open_service
        # runs its listener and gives it the log to read back from; see service.resume).
        self.changes = JobChanges()
        # The output folder's refusal of writes (QA9 F4), None without one (a test's fake).
        out_dir = getattr(getattr(conjure, "ctx", None), "out_dir", None)
        self.outputs = OutputFolder(Path(out_dir)) if out_dir is not None else None
        side = getattr(conjure, "side", None)
        if side is not None:
            side.on_preview = self.previews.put
            if self.outputs is not None:
                side.on_output_refused = self.outputs.save_refused
        if self.outputs is not None:
            # Queued jobs wait, no machine given or launched, while the folder refuses.
            conjure.ctx.hold_jobs = self.outputs.refuses

    @property
    def catalog(self) -> Catalog | None:
        """The node catalogue submissions are validated with, strictly (None: structure
        only). On RunComfy, the one the version's first machine gave (the prompt check
        fetches and keeps it) counts from then on, also over one kept at start that it
        contradicts: a graph it refuses gets its 422 at submission instead of failing later
        as a job."""
        check = getattr(getattr(self.conjure, "ctx", None), "prompt_check", None)
        if getattr(check, "fetched", False):
            learned: Catalog | None = getattr(check, "catalog", None)
            if learned is not None:
                self._catalog = learned
        elif self._catalog is None:
            self._catalog = getattr(check, "catalog", None)
        return self._catalog

    def job_ended(self, job_id: str) -> None:
        """A job reached a terminal status: its memory-only facts go (preview, extra_data)."""
        self.previews.forget(job_id)
        side = getattr(self.conjure, "side", None)
        if side is not None:
            side.extra_data.pop(job_id, None)

    @property
    def state(self) -> st.State:
        """The live fold of the log."""
        return self.conjure.state  # type: ignore[no-any-return]

    @property
    def journal(self) -> Any:
        return self.conjure.journal

    @property
    def held_since(self) -> float | None:
        """Since when (the runtime's wall clock) the journal holds its appends because the
        disk of the log is full (``serve``'s ``--disk-full-patience``), or None."""
        held: float | None = self.conjure.journal.held
        return held

    def refuse_while_held(self) -> None:
        """507 ``insufficient_storage`` while the journal holds its appends on a full disk:
        a request that must log something (a job, an upload, a cancel, a budget, an asset's
        deletion) could not be recorded before the disk frees, so it is refused at once,
        nothing stored, instead of waiting out its timeout (reads and the work already
        accepted go on)."""
        if self.conjure.journal.held is not None:
            raise insufficient_storage(self.settings.retry_after)

    @property
    def gate(self) -> PriorityGate | None:
        """The actor system's gate requests hold while in flight (None: no actor system)."""
        system = getattr(self.conjure, "system", None)
        return getattr(system, "gate", None)

    def node_classes(self, workflow_sha256: str) -> dict[str, str]:
        """``node id -> class_type`` of a registered workflow (cached: graphs never change)."""
        found = self._node_classes.get(workflow_sha256)
        if found is None:
            record = self.state.workflows.get(workflow_sha256)
            graph = json.loads(record.graph_json) if record is not None else {}
            found = {
                nid: str(node.get("class_type", ""))
                for nid, node in graph.items()
                if isinstance(node, dict)
            }
            self._node_classes[workflow_sha256] = found
        return found

    def active_jobs(self) -> int:
        """Jobs queued or running (O(1): see :class:`JobIndex`)."""
        return len(self.index.active)

    def job_of_key(self, key: str) -> str | None:
        """The job a submission's ``Idempotency-Key`` made, while the API still serves it
        (a scan: only a refused reuse asks, and a job's key is in its ``ApiJobAccepted``)."""
        for api in self.state.service.api_jobs.values():
            if api.idempotency_key == key and not api.expired:
                return api.job_id
        return None

    async def submit_job(
        self,
        workflow: Workflow,
        *,
        image: Path | bytes | None = None,
        images: Mapping[str, Path] | None = None,
        prompt: str | None = None,
        sets: Sequence[str] = (),
        labels: Mapping[str, str] | None = None,
        input_assets: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
        extra_data: Mapping[str, Any] | None = None,
        checked: bool = False,
    ) -> str:
        """Record and queue a job; returns its id once ``JobSubmitted`` is durable.
        ``checked``: the caller validated the graph (the runtime does not walk it again).

        ``extra_data`` goes with the job's prompts to ComfyUI and nowhere else: never
        logged (it may hold a credential; its keys are, in ``ApiJobAccepted``), not part of
        the idempotency comparison, and gone after a restart: a job whose prompt was not
        sent then fails (``service_events.not_resumable``) instead of running without it.

        The key claim, the job's API facts, its ``JobSubmitted`` and its ``JobQueued`` are
        ONE append (by the AssetActor): concurrent submissions share its fsync, and a key is
        claimed exactly when its job exists. A submission the runtime refuses (bad
        bindings, shutting down) logs nothing. Raises :class:`KeyReusedError`, ``ApiError``
        (queue full, shutting down, the log's disk full) and ``UsageError``/``WorkflowError``
        (refused)."""
        self.check_accepting()
        self._submitting += 1
        try:
            return await self._submit(
                workflow,
                image=image,
                images=images,
                prompt=prompt,
                sets=sets,
                labels=labels,
                input_assets=input_assets,
                idempotency_key=idempotency_key,
                extra_data=extra_data,
                checked=checked,
            )
        finally:
            self._submitting -= 1

    def check_accepting(self) -> None:
        """Raise the ``ApiError`` a submission gets now, whatever it is (shutting down, the
        log's disk full, the output folder refusing writes, the queue full, the budget
        spent), or nothing: a caller that must
        store something for a submission (its image) asks first, so a refusal stores none."""
        if not self.accepting:
            raise ApiError(
                503, "unavailable", "the job service is shutting down", headers=self._retry()
            )
        self.refuse_while_held()
        if self.outputs is not None:
            self.outputs.check(self.settings.retry_after)
        if self.active_jobs() + self._submitting >= self.settings.max_queue:
            raise ApiError(
                429,
                "queue_full",
                f"{self.settings.max_queue} jobs are queued or running: retry later",
                headers=self._retry(),
            )
        budget = self.state.budget
        if budget.exceeded and budget.limit_micros is not None:
            # No machine time may be bought: the job could only fail (no machine). Refused
            # before anything is logged, so its Idempotency-Key stays free for the retry.
            raise ApiError(
                402,
                "insufficient_credits",
                f"the budget of {format_usd(budget.limit_micros)} is spent: raise or lift it"
                " (PUT /api/conjure/budget), then submit again",
            )

    async def _submit(
        self,
        workflow: Workflow,
        *,
        image: Path | bytes | None,
        images: Mapping[str, Path] | None,
        prompt: str | None,
        sets: Sequence[str],
        labels: Mapping[str, str] | None,
        input_assets: Mapping[str, str] | None,
        idempotency_key: str | None,
        extra_data: Mapping[str, Any] | None,
        checked: bool,
    ) -> str:
        # The runtime decides the submission (inputs kept, bindings checked: a refusal
        # raises here, before anything is logged); the AssetActor logs it, queued, with the
        # key claim and the API facts in one append (see actors/assets.py), then the job
        # goes into the pool's queue.
        job_id: str
        job_id, submitted = await self.conjure.prepare_submission(
            workflow,
            image=image,
            images=dict(images or {}),
            prompt=prompt,
            sets=sets,
            job_id=str(self.conjure.ctx.ids()),
            checked=checked,
        )
        accept = AcceptJob(
            job_id=job_id,
            labels=dict(labels or {}),
            input_assets=dict(input_assets or {}),
            submitted=submitted,
            key=idempotency_key,
            extra_data_keys=tuple(sorted(extra_data or {})),
        )
        told = False
        try:
            # A bare cancel scope: trio.fail_after's generator context manager was ~2 of its
            # ~8 us per request.
            with trio.CancelScope(deadline=trio.current_time() + SUBMIT_TIMEOUT) as waited:
                await self.assets.tell(accept)
                told = True
                answer = await accept.reply.wait()
                if isinstance(answer, KeyReused) and answer.settled is not None:
                    # The key's first submission is still being journaled: answer once it
                    # is durable, naming its job (a retry racing its own first try).
                    try:
                        await answer.settled.wait()
                    except Exception:
                        # Nothing of the first was logged: its key is free; a retry is safe.
                        raise restarting(self.settings.retry_after) from None
            if waited.cancelled_caught:
                raise trio.TooSlowError
        except BaseException as exc:
            if told:
                # The AssetActor has it, and its append may land after all (the request
                # gave up at 60 s, or its client went away): the job is then queued in the
                # log and must reach the pool's queue, though this request is not answered.
                self._start_if_claimed_soon(accept)
            if isinstance(exc, ActorStoppedError):
                # The AssetActor stopped (or restarts) before logging it: nothing was logged.
                raise restarting(self.settings.retry_after) from None
            raise
        if isinstance(answer, AssetsGone):  # deleted since resolved: 422 missing_asset
            raise UsageError(f"input asset {answer.asset_ids[0]} was deleted meanwhile")
        if not isinstance(answer, Claimed):
            raise KeyReusedError(idempotency_key, getattr(answer, "job_id", None))
        # Counted here too (the index's journal listener counted it as the commit applied;
        # updating again is harmless), so that max_queue holds whatever ran first.
        self.index.update(self.state.jobs[job_id])
        if extra_data:
            self.conjure.side.extra_data[job_id] = dict(extra_data)
        # The 201 needs the submission durable, not the job in the pool's queue: that goes
        # on after the answer, as background work.
        if self.background is not None:
            self._start_later(job_id)
        else:
            await self.conjure.start_submitted(job_id)
        return job_id

    def _start_if_claimed_soon(self, accept: AcceptJob) -> None:
        """Start ``accept``'s job once its append lands, if it does (as background work;
        with no background nursery, or one closed because serve is stopping, a restart
        queues it from the log)."""

        async def start_if_claimed() -> None:
            try:
                answer = await accept.reply.wait()
            except Exception:  # not logged (the actor stopped, the append failed)
                return
            if isinstance(answer, Claimed):
                self.index.update(self.state.jobs[accept.job_id])
                self._start_later(accept.job_id)

        if self.background is not None:
            with contextlib.suppress(RuntimeError):  # the nursery is closed: stopping
                self.background.start_soon(start_if_claimed)

    def _start_later(self, job_id: str) -> None:
        """Hand a submitted job to the starter (see :meth:`_run_starter`); never waits.
        With the background nursery closed (serve is stopping) a restart queues it from
        the log."""
        self._to_start.append(job_id)
        self._start_wake.set()
        if not self._starter and self.background is not None:
            with contextlib.suppress(RuntimeError):  # the nursery is closed: stopping
                self.background.start_soon(self._run_starter)
                self._starter = True

    async def _run_starter(self) -> None:
        """Put submitted jobs into the pool's queue, in submission order, as background
        work: their entries (and whatever they set off: a lease, a launch, a job's actor)
        wait for the gate (within its bound), so they do not lengthen the passes the
        requests wait through. One task for all of them, not one per submission: each such
        task cost a spawn and a park at the gate, and the parked ones were all released in
        one scheduler pass at each of the gate's bounds (a 60 ms cohort of ~30 at 1 client,
        hundreds at 50), every request in flight waiting behind them."""
        gate = self.gate
        with gate.background() if gate is not None else contextlib.nullcontext():
            while True:
                while not self._to_start:
                    await self._start_wake.wait()
                    self._start_wake = trio.Event()
                await background_checkpoint()
                while self._to_start:
                    await self.conjure.start_submitted(self._to_start.popleft())

    def _retry(self) -> dict[str, str]:
        return {"Retry-After": str(self.settings.retry_after)}


def _routes() -> list[BaseRoute]:
    from conjure_actors.service import v2_assets, v2_jobs

    return [*v2_jobs.ROUTES, *v2_assets.ROUTES]


def create_app(
    service: Service,
    *,
    routes: Iterable[BaseRoute] = (),
    middleware: Sequence[Middleware] = (),
    lifespan: Any = None,
    debug: bool = False,
) -> Starlette:
    """The ASGI app: the Comfy API v2 routes (plus ``routes``, ``middleware`` outermost
    first, and a Starlette ``lifespan``) over ``service``. Outermost of all, requests hold
    the runtime's gate while in flight (:mod:`~conjure_actors.service.foreground`)."""
    from conjure_actors.service.foreground import ForegroundMiddleware

    gate = service.gate
    first = [Middleware(ForegroundMiddleware, gate=gate)] if gate is not None else []
    app = Starlette(
        debug=debug,
        routes=[*_routes(), *routes],
        middleware=[*first, *middleware],
        exception_handlers=dict(EXCEPTION_HANDLERS),
        lifespan=lifespan,
    )
    app.state.service = service
    return app


async def _node_catalog(conjure: Any, config: Any) -> Catalog | None:
    """The node catalog submissions are validated with (None: structure only).

    On the simulated cloud, the simulator's catalog; with ``--comfyui-url``, that ComfyUI's
    ``/object_info`` (what it will accept); on RunComfy no machine may be up to ask, so
    graphs are checked for structure only and the machine's ComfyUI validates node
    classes (a rejection fails the job)."""
    from conjure_actors.domain.workflow import catalog_from_object_info

    mode = conjure.ctx.mode
    if mode == "simulated":
        from conjure_actors.sim.catalog import node_catalog

        return node_catalog()
    if mode == "comfyui" and config.comfyui_url:
        from conjure_actors.actors.conjure import make_comfyui_client
        from conjure_actors.clients.errors import ClientError

        client = make_comfyui_client(conjure.ctx, "comfyui", config.comfyui_url)
        try:
            info = await client.object_info()
        except ClientError as exc:  # a ComfyUI without /object_info: structure only
            log.warning("no node catalog from the ComfyUI (%s): structure checks only", exc)
            return None
        return catalog_from_object_info(info) if info else None
    return None


async def _carry_out_cancel_requests(conjure: Any) -> None:
    """Cancel in the runtime every active job whose cancel request is durable: the cancel
    handler logs the request, then cancels, and a process stopped between the two would
    otherwise show the job ``canceling`` while it runs (and bills) to its end."""
    for api in list(conjure.state.service.api_jobs.values()):
        job = conjure.state.jobs.get(api.job_id)
        if (
            api.cancel_requested_at is not None
            and job is not None
            and job.status not in st.TERMINAL_STATUSES
        ):
            await conjure.cancel(api.job_id, reason=CLIENT_CANCEL)


@asynccontextmanager
async def open_service(
    config: Any,
    *,
    journal: Any,
    data_dir: str | os.PathLike[str],
    settings: Settings | None = None,
    catalog: Catalog | None = None,
    history: History | None = None,
    **conjure_kwargs: Any,
) -> AsyncIterator[Service]:
    """Run the runtime (``open_conjure``) and the AssetActor over ``journal``; blobs live
    under ``data_dir/blobs``. ``catalog``: the node catalogue to validate submissions
    with, strictly (default: the one :func:`_node_catalog` finds). ``history``: the log's
    records by seq (``service.resume.History``), for an event stream resumed from before
    this start (None: such a resume gets the full snapshot). Leaving the block shuts the
    runtime down in order."""
    from conjure_actors.actors.conjure import open_conjure
    from conjure_actors.service.foreground import yielding_http

    settings = settings or Settings()
    blobs = BlobStore(Path(data_dir) / "blobs", max_bytes=settings.max_upload_bytes)
    # The job actors' HTTP calls wait for their turn while requests are in flight.
    given = conjure_kwargs.get("http")
    http = conjure_kwargs["http"] = yielding_http(given)
    async with AsyncExitStack() as stack:
        if http is not given:
            stack.push_async_callback(http.aclose)
        conjure = await stack.enter_async_context(
            open_conjure(config, journal=journal, not_resumable=se.not_resumable, **conjure_kwargs)
        )
        conjure.system.gate.tune(
            max_wait=settings.background_max_wait,
            turn=settings.background_turn,
            linger=settings.request_linger,
        )
        ref = await conjure.system.spawn(
            functools.partial(AssetActor, conjure.ctx, blobs, settings.retention),
            name="assets",
        )
        await _carry_out_cancel_requests(conjure)
        catalog = catalog or await _node_catalog(conjure, config)
        async with trio.open_nursery() as nursery:
            service = Service(conjure, ref, blobs, settings, catalog=catalog, mode=conjure.ctx.mode)
            service.background = nursery
            await nursery.start(
                functools.partial(follow_jobs, journal, service.index, on_end=service.job_ended)
            )
            service.changes.history = history
            await nursery.start(service.changes.follow, journal)
            from conjure_actors.service.v2_assets import check_blobs

            nursery.start_soon(check_blobs, service)  # damaged blobs: found and reported
            if service.outputs is not None:  # probed now, and every 10 s while it refuses
                await trio.to_thread.run_sync(service.outputs.probe_write)
                nursery.start_soon(service.outputs.watch)
            try:
                yield service
            finally:
                service.accepting = False
                service.stopping.set()
                nursery.cancel_scope.cancel()


KEEP_ALIVE_TIMEOUT: Final = 75.0
"""Seconds an idle kept-alive connection stays open: longer than the idle expiry of the
usual client pools (httpx, requests/urllib3: 5 s). With hypercorn's default (also 5 s) a
client may send its next request on a connection whose server timer fires at that moment
(the wider the busier the loop: the request waits in the socket while the timer runs
first), and a POST sent so is lost ("server disconnected without sending a response":
clients do not resend a POST); a bench/serve.py 50-client load lost 6 submissions at once
that way, most likely. Closing later than the client's pool forgets it never races."""


def hypercorn_config(host: str, port: int) -> hypercorn.config.Config:
    config = hypercorn.config.Config()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.accesslog = None
    config.loglevel = "WARNING"
    config.graceful_timeout = 2.0
    config.keep_alive_timeout = KEEP_ALIVE_TIMEOUT
    config.include_server_header = False  # one header less per answer; names no software
    return config


class _HeadWithBody(hypercorn.trio.tcp_server.TCPServer):
    """hypercorn's TCP connection, but an HTTP/1.1 response's head (status line and headers)
    goes out in one ``send`` with what follows it (its body, or its end), not alone.

    hypercorn writes the head when the app sends ``http.response.start`` and the body when
    it sends ``http.response.body``: two socket sends per answer, each a syscall that on
    loopback also runs the receiver's TCP input and wakes it, and a client woken by a head
    alone reads again for the body. Measured (two serves interleaved in one run, 2000
    ``GET /api/v2/health`` per round, 6 rounds, medians): at 1 client serve's CPU per
    request 0.593 -> 0.532 ms, the client's 0.615 -> 0.569 ms, the p50 1.12 -> 1.05 ms; at
    10 clients serve's CPU 0.435 -> 0.417 ms. A head waits for the next bytes of its
    connection (every response's end writes some, if only ``b""``) or its close; a 1xx
    head (``100 Continue``, ``101``) is never held: the client waits for it."""

    _head: bytes | None = None
    _expect_head = True
    #: Seconds a client may take none of a piece (:data:`SEND_PIECE` bytes) of what is sent to
    #: it before its connection is dropped (QA F8: one that stopped reading a download or a
    #: large answer held ~2 MB of serve's memory, two fds and a request "in flight" until it
    #: closed, possibly never; a suspended browser tab, a fetch dropped without an abort).
    #: Per piece, so a slow client that makes progress (1 KiB/s) is never cut.
    stall_timeout: float = 60.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.idle_task = _KeepAliveTimer(self)  # type: ignore[assignment]

    async def _read_data(self) -> None:
        try:
            await super()._read_data()
        finally:
            # The client is gone: no keep-alive left to time, and the watcher must not
            # keep the connection's task group (and its handler) waiting.
            self.idle_task.end()  # type: ignore[attr-defined]

    async def protocol_send(self, event: hypercorn.events.Event) -> None:
        if isinstance(event, hypercorn.events.RawData):
            data = event.data
            if self._head is not None:
                data, self._head = self._head + data, None
            elif self._expect_head and not data.startswith(b"HTTP/1.1 1"):  # 1xx: not held
                # The first bytes of an answer are its head; a body's bytes never are, even
                # when they look like one.
                self._expect_head = False
                if data.startswith(b"HTTP/1.1 ") and data.endswith(b"\r\n\r\n"):
                    self._head = data
                    return
            await self._send_raw(data)
            return
        elif isinstance(event, hypercorn.events.Updated) and not event.idle:
            self._expect_head = True  # a request came: its answer's head is next
        elif self._head is not None and isinstance(event, hypercorn.events.Closed):
            head, self._head = self._head, None
            await self._send_raw(head)
        await super().protocol_send(event)

    async def _send_raw(self, data: bytes) -> None:
        """hypercorn's write of ``data`` (under its send lock, not cut by a cancel from
        outside), in pieces each of which the client must take within
        :attr:`stall_timeout`, else the connection is dropped (as a client that left)."""
        async with self.send_lock:
            try:
                view = memoryview(data)
                for start in range(0, max(len(view), 1), SEND_PIECE):
                    with trio.CancelScope(shield=True) as piece:
                        piece.deadline = trio.current_time() + self.stall_timeout
                        await self.stream.send_all(view[start : start + SEND_PIECE])
                    if piece.cancelled_caught:
                        _client_stalled(self, self.stall_timeout)
                        await self.protocol.handle(hypercorn.events.Closed())
                        await self.stream.aclose()
                        return
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                await self.protocol.handle(hypercorn.events.Closed())


SEND_PIECE: Final = 64 * 1024
"""Bytes a client must take within ``_HeadWithBody.stall_timeout`` (see there)."""


def _client_stalled(server: Any, timeout: float) -> None:
    """One line: a client took nothing for ``timeout`` seconds; its connection is dropped."""
    log.info(
        "a client took none of its answer for %g s (it stopped reading): its connection is closed",
        timeout,
    )


class _KeepAliveTimer:
    """hypercorn's keep-alive timer (its ``TrioSingleTask`` interface: ``restart`` as the
    connection goes idle, ``stop`` as a request comes), without a task per request.

    hypercorn starts a task each time the connection goes idle (``nursery.start``: a trip
    through the scheduler) and cancels it as the next request comes: ~15% of the samples
    of serve's event loop under a 50-client load. Measured (two serves interleaved in one
    run, 6 rounds, medians): ``GET /api/v2/health`` at 10 clients 0.410 -> 0.333 ms of CPU
    per request; ``POST /api/v2/jobs`` at 50 clients 1.01 -> 0.87 ms per accepted job
    during the load, 792 -> 977 jobs/s, p50 61 -> 43 ms.

    Here one watcher per connection waits in a cancel scope whose deadline moves:
    ``keep_alive_timeout`` after going idle, none while busy. As hypercorn's: an idle
    connection is closed once the timeout passes or the server shuts down (a busy one once
    it is idle again); the watcher ends with the reading side (``end``)."""

    def __init__(self, server: _HeadWithBody) -> None:
        self._server = server
        self._deadline = math.inf
        self._scope: trio.CancelScope | None = None
        self._watching = False
        self._idle = False
        self._ended = False

    def _move(self, deadline: float) -> None:
        self._deadline = deadline
        if self._scope is not None:
            self._scope.deadline = deadline

    async def restart(self, task_group: Any, action: Any) -> None:
        self._idle = True
        self._move(trio.current_time() + self._server.config.keep_alive_timeout)
        if not self._watching and not self._ended:
            self._watching = True
            task_group.spawn(self._watch)

    async def stop(self) -> None:
        self._idle = False
        self._move(math.inf)

    def end(self) -> None:
        self._ended = True
        if self._scope is not None:
            self._scope.cancel()

    async def _watch(self) -> None:
        try:
            with trio.CancelScope(deadline=self._deadline) as self._scope:
                await self._server.context.terminated.wait()
        finally:
            self._scope = None
            self._watching = False
        if self._idle and not self._ended:
            # Timed out, or the server is stopping: close as hypercorn's own timer does.
            # (Busy meanwhile: the next restart watches again, and closes at once if the
            # server is stopping.)
            with trio.CancelScope(shield=True):
                await self._server._initiate_server_close()


DRAIN_MAX: Final = 64 * 1024
"""An answer that goes before its request's body is read reads that body first if it is
at most this long (as nginx's lingering close): the connection then stays reusable."""


class _ReadBeforeAnswer:
    """An HTTP answer that starts before its request's body was read (an error raised
    before ``request.form()``): the rest of a small body (``DRAIN_MAX``, within 1 s) is
    read first; otherwise the answer says ``Connection: close``. hypercorn closes such a
    connection after the answer without saying so, and a client (httpx) sends its next
    request on it: lost ('Server disconnected without sending a response').

    So does every answer that starts once ``closing()`` (serve's drain began, QA10 F9):
    hypercorn closes the connections when serving stops, and a client that kept one sent its
    next request as it closed. Told to close, it connects again: answered while the drain
    lasts (a new job 503 with ``Retry-After``), refused once serve stopped listening."""

    def __init__(self, app: Any, closing: Callable[[], bool] = lambda: False) -> None:
        self.app = app
        self.closing = closing

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length", b"").strip()
        chunked = b"transfer-encoding" in headers
        done = not chunked and declared in (b"", b"0")

        async def receive_() -> Any:
            nonlocal done
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                done = True
            return message

        async def send_(message: Any) -> None:
            if message["type"] == "http.response.start":
                if not done and not chunked and declared.isdigit() and int(declared) <= DRAIN_MAX:
                    with trio.move_on_after(1.0):
                        while not done:
                            await receive_()
                if not done or self.closing():
                    message = _closing(message)
            await send(message)

        try:
            await self.app(scope, receive_, send_)
        except Exception as exc:
            # Starlette's ServerErrorMiddleware re-raises what it answered 500 (or 499: the
            # client left) after its handler logged it in one line; re-raised here,
            # hypercorn would log it again with a traceback ("Error in ASGI Framework").
            # The traceback is the handler's to show, with --debug.
            if not was_logged(exc):
                log.error(
                    "unexpected %s on %s %s",
                    type(exc).__name__,
                    scope.get("method"),
                    scope.get("path"),
                )
                log.debug("traceback of the unexpected error", exc_info=exc)


def _closing(start: Any) -> Any:
    """An ``http.response.start`` whose headers say ``Connection: close`` (once)."""
    headers = list(start.get("headers", []))
    if any(name.lower() == b"connection" for name, _ in headers):
        headers = [(n, v) for n, v in headers if n.lower() != b"connection"]
    return {**start, "headers": [*headers, (b"connection", b"close")]}


def _send_heads_with_bodies() -> None:
    """Serve every hypercorn trio connection of this process with :class:`_HeadWithBody`
    (hypercorn's ``worker_serve`` takes no connection class: the name it looks up is
    replaced, once; the bytes sent are the same, only grouped in fewer sends)."""
    run = hypercorn.trio.run
    stock = hypercorn.trio.tcp_server.TCPServer
    if getattr(run, "TCPServer", None) is _HeadWithBody:
        return
    needed = ("run", "protocol_send", "_read_data", "_initiate_server_close", "_idle_timeout")
    missing = [name for name in needed if not callable(getattr(stock, name, None))]
    source = inspect.getsource(stock.run) if not missing else ""
    if getattr(run, "TCPServer", None) is not stock or missing or "self._read_data()" not in source:
        raise RuntimeError(
            f"hypercorn {importlib.metadata.version('hypercorn')}: its trio TCPServer is not"
            " the one _HeadWithBody and _KeepAliveTimer were written for (0.17-0.18)"
        )
    run.TCPServer = _HeadWithBody  # type: ignore[attr-defined]


MULTIPART_LOGGER: Final = "python_multipart"
"""The logger of the multipart parser Starlette reads forms with."""


class _ToDebug(logging.Handler):
    """Hands a library's records to the service's logger, at DEBUG."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            log.debug("%s: %s", record.name, record.getMessage())
        except Exception:  # logging's protocol: a record that cannot be formatted
            self.handleError(record)


def _quiet_multipart_log() -> None:
    """python-multipart logs a malformed body it parses at WARNING ("Expected boundary
    character 45, got 103 at index 2"); with no handler configured, Python's last resort
    printed it on serve's stderr, a line about a client's mistake the client was already
    answered (400 ``invalid_request``). Its records go to the service's logger at DEBUG
    instead (shown with ``--debug``); once per process."""
    library = logging.getLogger(MULTIPART_LOGGER)
    if any(isinstance(handler, _ToDebug) for handler in library.handlers):
        return
    library.addHandler(_ToDebug())
    library.propagate = False


async def serve_app(
    app: Any,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    shutdown: trio.Event | None = None,
    closing: Callable[[], bool] | None = None,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` with hypercorn's trio worker; reports ``http://host:port`` (the real
    port) once listening. Runs until cancelled or ``shutdown`` is set (then it stops
    accepting connections and lets open ones finish briefly). Every answer that starts
    once ``closing()`` (default: ``app.state.service`` no longer accepts jobs, serve's
    drain began) says ``Connection: close``."""
    config = hypercorn_config(host, port)
    if closing is None:
        service = getattr(getattr(app, "state", None), "service", None)
        closing = lambda: not getattr(service, "accepting", True)  # noqa: E731
    _send_heads_with_bodies()
    _quiet_multipart_log()
    trigger = trio.sleep_forever if shutdown is None else shutdown.wait
    async with trio.open_nursery() as nursery:
        binds: list[str] = await nursery.start(
            functools.partial(
                hypercorn.trio.serve,
                _ReadBeforeAnswer(app, closing),
                config,
                shutdown_trigger=trigger,
            )
        )
        task_status.started(binds[0])
