"""The service's events and their part of the state: assets, API jobs, idempotency keys.

``serve`` (the Comfy API v2 job service) records everything it promises a client as events,
so a restart on the same log loses nothing: an uploaded or produced *asset* (a record over a
content-addressed *blob*, named by its blake3 hash), the API facts of a job (its labels, its
retention deadline), a claimed ``Idempotency-Key`` and every expiry. Every event here is
emitted by the AssetActor (:mod:`conjure_actors.actors.assets`), the only writer of this part
of the log; HTTP handlers send it messages.

:class:`ServiceState` is the fold of these events (``State.service``); the ``apply_*``
functions are registered in :mod:`conjure_actors.domain.state` and follow its rules: pure,
total (a nonsensical event changes nothing), no clock.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any, Final

import attrs
import msgspec

from conjure_actors.domain.sharing import EMPTY_LIST, SHARED, dict_or_empty, share

__all__ = [
    "EXPIRED_KEPT",
    "SERVICE_EVENTS",
    "SERVICE_HANDLERS",
    "ApiJob",
    "ApiJobAccepted",
    "ApiJobCancelRequested",
    "ApiJobExpired",
    "ApiJobExpiryMoved",
    "ApiJobOutputsNotStored",
    "AssetDeleted",
    "AssetExpired",
    "AssetRecord",
    "AssetRecorded",
    "ExpiredJob",
    "IdempotencyClaim",
    "IdempotencyKeyClaimed",
    "IdempotencyKeyReleased",
    "OutputsNotStored",
    "ServiceState",
    "expiry_moves",
    "extra_data_lost",
    "held_assets",
    "not_resumable",
    "served_status",
]


# ----------------------------------------------------------------------------- events


class AssetRecorded(msgspec.Struct, frozen=True, kw_only=True, tag="service.asset_recorded"):
    """Emitted by the AssetActor once an asset's bytes are durable in the blob store: an
    upload (``job_id`` None), a mint over a known blob (from-hash), or a job's output
    (``job_id``, ``node_id`` set; ``source_path`` is the ``OutputSaved`` path it came from).
    ``hash`` is ``blake3:<hex>``; ``created_new`` says whether the blob was new."""

    asset_id: str
    hash: str
    size: int
    content_type: str
    file_path: str | None = None
    tags: tuple[str, ...] = ()
    job_id: str | None = None
    node_id: str | None = None
    kind: str | None = None
    source_path: str | None = None
    created_new: bool = True
    expires_at: float | None = None
    at: float


class AssetDeleted(msgspec.Struct, frozen=True, kw_only=True, tag="service.asset_deleted"):
    """Emitted by the AssetActor on ``DELETE /api/v2/assets/{id}`` (the record goes; the
    blob stays while another asset refers to it)."""

    asset_id: str
    at: float


class AssetExpired(msgspec.Struct, frozen=True, kw_only=True, tag="service.asset_expired"):
    """Emitted by the AssetActor when an asset passed its ``expires_at`` (retention)."""

    asset_id: str
    at: float


class IdempotencyKeyClaimed(
    msgspec.Struct, frozen=True, kw_only=True, tag="service.idempotency_claimed"
):
    """Emitted by the AssetActor when a request presenting ``Idempotency-Key`` reached
    submission: the key is single use until ``expires_at`` (``scope``: ``jobs``, ``assets``).
    ``asset_id``: the asset an upload's key made (in the same append as its
    ``AssetRecorded``), so a request reusing the key can be told which asset it was; None
    for a job's key (its ``ApiJobAccepted`` names it) and in older logs."""

    key: str
    scope: str
    expires_at: float
    asset_id: str | None = None
    at: float


class IdempotencyKeyReleased(
    msgspec.Struct, frozen=True, kw_only=True, tag="service.idempotency_released"
):
    """Emitted by the AssetActor when the submission that claimed ``key`` definitely created
    nothing (validation refused it; or, at a start, the log ends before its job: a write
    torn by a power loss, ``reason`` :data:`KEY_NOT_ACCEPTED`), or when the claim expired:
    a retry with the same key may proceed."""

    key: str
    scope: str
    reason: str
    at: float


class ApiJobAccepted(msgspec.Struct, frozen=True, kw_only=True, tag="service.job_accepted"):
    """Emitted by the AssetActor for ``POST /api/v2/jobs`` in the same append as the job's
    ``JobSubmitted``, just before it (an old log may hold one without its ``JobSubmitted``:
    that job does not exist). ``labels`` are the
    request's ``metadata``; ``input_assets`` maps ``NODE.INPUT`` to the asset bound there;
    ``extra_data_keys`` names the keys of the request's ``extra_data`` (never their values:
    a credential is never logged), so a restart knows the job cannot run as submitted."""

    job_id: str
    labels: dict[str, str] = {}
    idempotency_key: str | None = None
    input_assets: dict[str, str] = {}
    extra_data_keys: tuple[str, ...] = ()
    expires_at: float
    at: float


class ApiJobCancelRequested(
    msgspec.Struct, frozen=True, kw_only=True, tag="service.job_cancel_requested"
):
    """Emitted by the AssetActor on ``POST /api/v2/jobs/{id}/cancel`` of an active job: the
    job reads ``canceling`` until its ``JobCancelled`` (or another terminal event)."""

    job_id: str
    at: float


class ApiJobExpired(msgspec.Struct, frozen=True, kw_only=True, tag="service.job_expired"):
    """Emitted by the AssetActor when a finished job passed its retention deadline: it is
    gone from the API (404) and its outputs expire with it."""

    job_id: str
    at: float


class ApiJobExpiryMoved(msgspec.Struct, frozen=True, kw_only=True, tag="service.job_expiry_moved"):
    """Emitted by the AssetActor once a job of the API ended (succeeded, failed, cancelled):
    its retention runs from its end, not from its submission, so a job that waited in the
    queue longer than the retention is still read, with its outputs, after it ran (a client
    paid for it). ``expires_at`` (its end + the retention) is the job's new deadline, and
    that of its outputs and of its input assets, where it is later than theirs (a deadline
    never moves earlier)."""

    job_id: str
    expires_at: float
    at: float


class ApiJobOutputsNotStored(
    msgspec.Struct, frozen=True, kw_only=True, tag="service.job_outputs_not_stored"
):
    """Emitted by the AssetActor once a job that succeeded has each of its outputs either
    recorded as an asset or given up (the blob store refused its bytes on every try, or its
    file went): ``paths`` are the ``OutputSaved`` paths not stored, ``reason`` why, in a
    client's words (no path of the server). The job reads ``failed`` (``outputs_not_stored``)
    from then on, for good: none of its outputs is stored later (a restart on a fixed store
    included), so a client that read it failed never reads it succeeded. One event per job,
    logged after every output was tried: a crash before it leaves the outputs not stored to
    the next start, which tries them again and decides then."""

    job_id: str
    paths: tuple[str, ...]
    reason: str
    at: float


SERVICE_EVENTS: Final[tuple[type[msgspec.Struct], ...]] = (
    AssetRecorded,
    AssetDeleted,
    AssetExpired,
    IdempotencyKeyClaimed,
    IdempotencyKeyReleased,
    ApiJobAccepted,
    ApiJobCancelRequested,
    ApiJobExpired,
    ApiJobExpiryMoved,
    ApiJobOutputsNotStored,
)
"""The service's event classes, in a stable order."""


# ------------------------------------------------------------------------------ state


@attrs.define(slots=True)
class AssetRecord:
    """A live asset (deleted or expired ones leave the map)."""

    asset_id: str
    hash: str
    size: int
    content_type: str
    file_path: str | None
    tags: list[str]
    job_id: str | None
    node_id: str | None
    kind: str | None
    source_path: str | None
    created_at: float
    expires_at: float | None

    def __attrs_post_init__(self) -> None:
        # Shared as soon as decoded (conjure_actors.domain.sharing.SHARED); the fold's
        # values are shared already, so this only looks them up.
        self.hash = share(SHARED, self.hash)
        self.content_type = sys.intern(self.content_type)
        if self.file_path is not None:
            self.file_path = share(SHARED, self.file_path)
        if self.node_id is not None:
            self.node_id = sys.intern(self.node_id)
        if self.kind is not None:
            self.kind = sys.intern(self.kind)
        tags = self.tags
        for i, tag in enumerate(tags):
            tags[i] = sys.intern(tag)


@attrs.define(slots=True)
class IdempotencyClaim:
    """A claimed key (until ``expires_at``); ``asset_id``: the asset an upload's key made."""

    key: str
    scope: str
    claimed_at: float
    expires_at: float
    asset_id: str | None = None
    job_id: str | None = None
    """The job a ``jobs`` key made (its ``ApiJobAccepted``): the claim outlives the job's
    own record, which goes when the job expires (:func:`claims_without_job`)."""


@attrs.define(slots=True)
class ApiJob:
    """The API facts of a job (its run is ``State.jobs[job_id]``)."""

    job_id: str
    labels: dict[str, str]
    idempotency_key: str | None
    input_assets: dict[str, str]
    accepted_at: float
    expires_at: float
    cancel_requested_at: float | None = None
    expired: bool = False
    ended: bool = False
    extra_data_keys: list[str] = attrs.Factory(list)
    """The keys of its ``extra_data`` (kept in memory only: :func:`not_resumable`)."""
    """Its end is logged (:class:`ApiJobExpiryMoved`): ``expires_at`` counts from it. Until
    then the job, its inputs and its outputs are kept whatever ``expires_at`` says."""


@attrs.define(slots=True)
class ExpiredJob:
    """What is left of an expired job (its tombstone) for :data:`EXPIRED_KEPT` seconds:
    when it expired, when it was submitted, and the ``--out`` its outputs were saved under
    (None: none saved), so a start after a crash between its ``ApiJobExpired`` and the
    removal of its folder still removes it. The job itself (its ``Job``, its API facts, its
    outputs) leaves the state as it expires: a serve's state holds the jobs it retains, not
    every job it ran."""

    at: float
    out_dir: str | None = None
    submitted_at: float | None = None
    """When it was submitted: ``GET /api/v2/jobs?cursor=`` of a page that ended with it
    goes on with the jobs submitted before it."""


EXPIRED_KEPT: Final = 3600.0
"""Seconds an :class:`ExpiredJob` stays (counted in the log's time: the fold drops the
older ones as a later job expires). The sweep removes a job's folder right after its
expiry is logged, so only a crash in between needs one, and a start that follows reads
it before any later expiry. The API tells an expired job from an unknown one by neither:
both are 404, before and after."""


@attrs.define(slots=True)
class OutputsNotStored:
    """Why a job that succeeded reads failed: its outputs in ``paths`` could not be stored
    (:class:`ApiJobOutputsNotStored`)."""

    paths: list[str]
    reason: str
    at: float


@attrs.define(slots=True)
class ServiceState:
    """The service's part of the state. ``blob_refs`` counts live assets per hash (a blob
    with none may be removed); ``job_outputs`` maps a job to its output assets by the
    ``OutputSaved`` path they came from; ``outputs_not_stored``: the jobs that succeeded but
    whose outputs could not all be stored (they read failed).

    An expired job leaves every map here and ``State.jobs`` (:func:`_job_expired`): what
    outlives it is its idempotency claim (until its own expiry), its tombstone in
    ``expired_jobs`` (:data:`EXPIRED_KEPT`) and one count in ``expired_tally`` (the
    expired jobs by the status the service counted them under, :func:`served_status`:
    ``/metrics`` and the summaries count every job the log ran, retained or not)."""

    assets: dict[str, AssetRecord] = attrs.Factory(dict)
    blob_refs: dict[str, int] = attrs.Factory(dict)
    blob_sizes: dict[str, int] = attrs.Factory(dict)
    idempotency: dict[str, IdempotencyClaim] = attrs.Factory(dict)
    api_jobs: dict[str, ApiJob] = attrs.Factory(dict)
    job_outputs: dict[str, dict[str, str]] = attrs.Factory(dict)
    outputs_not_stored: dict[str, OutputsNotStored] = attrs.Factory(dict)
    expired_jobs: dict[str, ExpiredJob] = attrs.Factory(dict)
    expired_tally: dict[str, int] = attrs.Factory(dict)


def claim_key(scope: str, key: str) -> str:
    """The map key of an idempotency claim (keys are single use per scope)."""
    return f"{scope}:{key}"


# ------------------------------------------------------------------------------ apply
# Each takes the whole State (``s.service`` is ours) so the domain fold can dispatch to it.
# Values go in shared where the state already holds them (conjure_actors.domain.sharing): a
# job's id as its Job holds it, an output's path and file name as its OutputFile does.


def _intern(value: str | None) -> str | None:
    return None if value is None else sys.intern(value)


def _tags(tags: tuple[str, ...]) -> list[str]:
    if not tags:
        return EMPTY_LIST
    out = list(tags)  # sized exactly (a comprehension over-allocates)
    for i, tag in enumerate(out):
        out[i] = sys.intern(tag)
    return out


def _asset_recorded(s: Any, e: AssetRecorded) -> None:
    svc: ServiceState = s.service
    if e.asset_id in svc.assets:
        return
    table = SHARED
    job_id, source_path = e.job_id, e.source_path
    file_path = None if e.file_path is None else share(table, e.file_path)
    if job_id is not None:
        job = s.jobs.get(job_id)
        api_job = svc.api_jobs.get(job_id) if job is None else None
        if job is not None:
            job_id = job.job_id
            for output in job.outputs:
                if output.path == source_path:
                    source_path = output.path
                    break
        elif api_job is not None:
            job_id = api_job.job_id
    digest = share(table, e.hash)
    svc.assets[e.asset_id] = AssetRecord(
        asset_id=e.asset_id,
        hash=digest,
        size=e.size,
        content_type=sys.intern(e.content_type),
        file_path=file_path,
        tags=_tags(e.tags),
        job_id=job_id,
        node_id=_intern(e.node_id),
        kind=_intern(e.kind),
        source_path=source_path,
        created_at=e.at,
        expires_at=e.expires_at,
    )
    svc.blob_refs[digest] = svc.blob_refs.get(digest, 0) + 1
    svc.blob_sizes[digest] = e.size
    if job_id is not None and source_path is not None and (job is not None or api_job):
        # (an output recorded after its job expired is no job's output any more)
        svc.job_outputs.setdefault(job_id, {})[source_path] = e.asset_id


def _forget_asset(s: Any, asset_id: str) -> None:
    svc: ServiceState = s.service
    record = svc.assets.pop(asset_id, None)
    if record is None:
        return
    left = svc.blob_refs.get(record.hash, 0) - 1
    if left > 0:
        svc.blob_refs[record.hash] = left
    else:
        svc.blob_refs.pop(record.hash, None)
        svc.blob_sizes.pop(record.hash, None)
    if record.job_id is not None and record.source_path is not None:
        outputs = svc.job_outputs.get(record.job_id)
        if outputs is not None and outputs.get(record.source_path) == asset_id:
            del outputs[record.source_path]


def _asset_deleted(s: Any, e: AssetDeleted) -> None:
    _forget_asset(s, e.asset_id)


def _asset_expired(s: Any, e: AssetExpired) -> None:
    _forget_asset(s, e.asset_id)


def _key_claimed(s: Any, e: IdempotencyKeyClaimed) -> None:
    svc: ServiceState = s.service
    svc.idempotency[claim_key(e.scope, e.key)] = IdempotencyClaim(
        key=e.key, scope=e.scope, claimed_at=e.at, expires_at=e.expires_at, asset_id=e.asset_id
    )


def _key_released(s: Any, e: IdempotencyKeyReleased) -> None:
    s.service.idempotency.pop(claim_key(e.scope, e.key), None)


def _job_accepted(s: Any, e: ApiJobAccepted) -> None:
    svc: ServiceState = s.service
    if e.job_id in svc.api_jobs:
        return
    if e.idempotency_key is not None:
        claim = svc.idempotency.get(claim_key("jobs", e.idempotency_key))
        if claim is not None and claim.job_id is None and claim.claimed_at <= e.at:
            claim.job_id = e.job_id
    svc.api_jobs[e.job_id] = ApiJob(
        job_id=e.job_id,
        labels=dict_or_empty(e.labels),
        idempotency_key=e.idempotency_key,
        input_assets=dict_or_empty(e.input_assets),
        accepted_at=e.at,
        expires_at=e.expires_at,
        extra_data_keys=list(e.extra_data_keys) if e.extra_data_keys else EMPTY_LIST,
    )


_REATTACHED: Final = frozenset({"submitting", "submitted", "started"})
"""A prompt's executions a resume re-attaches to (its prompt is on its machine, or may be)."""


def not_resumable(state: Any, job: Any) -> str | None:
    """Why an unfinished job of the job service cannot run again after a restart (None: it
    can). Its ``extra_data`` (a partner nodes' API key) lived in memory only, as the contract
    wants (never persisted), so a new prompt would go without it: the partner node fails,
    after a machine was paid for. A job whose current prompt is on its machine is
    re-attached (the prompt carries it); one that has to send a new prompt (never sent,
    its machine lost, a retry) fails at once, before anything is launched, saying why."""
    api = state.service.api_jobs.get(job.job_id)
    if api is None or not api.extra_data_keys:
        return None
    if (
        job.status in ("running", "interrupted")
        and job.prompt_id is not None
        and job.server_id is not None
        and job.execution in _REATTACHED
    ):
        return None
    return extra_data_lost(api.extra_data_keys)


def extra_data_lost(keys: Any) -> str:
    """The words of a job whose ``extra_data`` (``keys``) is gone and that needs a new
    prompt: why it fails (``not_resumable``) and what to do."""
    return (
        f"its extra_data ({', '.join(keys)}) was kept in the server's memory only (a"
        " credential is never written to disk) and the server restarted before the prompt"
        " that needs it was sent: submit the job again"
    )


def _expiry_moved(s: Any, e: ApiJobExpiryMoved) -> None:
    svc: ServiceState = s.service
    job = svc.api_jobs.get(e.job_id)
    if job is None or job.ended:
        return
    job.ended = True
    job.expires_at = max(job.expires_at, e.expires_at)
    for asset_id in (*job.input_assets.values(), *svc.job_outputs.get(e.job_id, {}).values()):
        record = svc.assets.get(asset_id)
        if record is not None and record.expires_at is not None:
            record.expires_at = max(record.expires_at, e.expires_at)


def _cancel_requested(s: Any, e: ApiJobCancelRequested) -> None:
    job = s.service.api_jobs.get(e.job_id)
    if job is not None and job.cancel_requested_at is None:
        job.cancel_requested_at = e.at


def _job_expired(s: Any, e: ApiJobExpired) -> None:
    svc: ServiceState = s.service
    api = svc.api_jobs.get(e.job_id)
    if api is None:
        return
    job = s.jobs.get(e.job_id)
    if job is not None and job.status not in ENDED:
        api.expired = True  # nonsensical (the sweep expires ended jobs): the run goes on
        return
    # The job leaves the state: nothing it held is read again (the API answers 404 as
    # for an unknown job), so a serve's memory, snapshots and start-up follow the jobs
    # it retains, not every job it ran.
    del svc.api_jobs[e.job_id]
    svc.job_outputs.pop(e.job_id, None)
    out_dir = submitted_at = None
    if job is not None:
        submitted_at = job.submitted_at
        status = served_status(s, job)
        svc.expired_tally[status] = svc.expired_tally.get(status, 0) + 1
        out_dir = _out_dir(job)
        del s.jobs[e.job_id]
        if s.submitting:
            for prompt_id in [p for p, v in s.submitting.items() if v.job_id == e.job_id]:
                del s.submitting[prompt_id]
        # Its actor's record (``.../<job id>``), kept when it crashed or was restarted.
        suffix = f"/{e.job_id}"
        for name in [n for n in s.actors if n.endswith(suffix)]:
            del s.actors[name]
    svc.outputs_not_stored.pop(e.job_id, None)
    tombs = svc.expired_jobs
    tombs.pop(e.job_id, None)
    tombs[api.job_id] = ExpiredJob(at=e.at, out_dir=out_dir, submitted_at=submitted_at)
    # Oldest first (the log's order): the ones past EXPIRED_KEPT go.
    horizon = e.at - EXPIRED_KEPT
    while tombs:
        oldest = next(iter(tombs))
        if tombs[oldest].at >= horizon:
            break
        del tombs[oldest]


def _out_dir(job: Any) -> str | None:
    """The ``--out`` ``job``'s outputs were saved under (``OUT/<job>/...``), or None."""
    needle = f"{os.sep}{job.job_id}{os.sep}"
    for out in job.outputs:
        at = out.path.rfind(needle)
        if at > 0:
            return share(SHARED, out.path[:at])
    return None


def _outputs_not_stored(s: Any, e: ApiJobOutputsNotStored) -> None:
    job = s.jobs.get(e.job_id)
    svc: ServiceState = s.service
    if job is None or job.job_id in svc.outputs_not_stored or not e.paths:
        return
    svc.outputs_not_stored[job.job_id] = OutputsNotStored(
        paths=list(e.paths), reason=e.reason, at=e.at
    )


SERVICE_HANDLERS: Final[dict[type[Any], Callable[[Any, Any], None]]] = {
    AssetRecorded: _asset_recorded,
    AssetDeleted: _asset_deleted,
    AssetExpired: _asset_expired,
    IdempotencyKeyClaimed: _key_claimed,
    IdempotencyKeyReleased: _key_released,
    ApiJobAccepted: _job_accepted,
    ApiJobCancelRequested: _cancel_requested,
    ApiJobExpired: _job_expired,
    ApiJobExpiryMoved: _expiry_moved,
    ApiJobOutputsNotStored: _outputs_not_stored,
}
"""Event class -> its apply step (``State.service`` is what it changes)."""


# ---------------------------------------------------------------------------- decisions

ENDED: Final = frozenset({"succeeded", "failed", "cancelled"})
"""A job's statuses once it ended (``state.TERMINAL_STATUSES``; ``state`` imports this
module, so the set is spelled here and a test checks they agree)."""


def served_status(state: Any, job: Any) -> str:
    """``job``'s status as the service counts it: ``failed`` for a job that succeeded but
    whose outputs could not all be stored (:class:`ApiJobOutputsNotStored`: the API reads it
    failed), else its own."""
    status: str = job.status
    if status == "succeeded" and job.job_id in state.service.outputs_not_stored:
        return "failed"
    return status


def expiry_moves(
    state: Any, keep: float, now: float, job_ids: Any = None
) -> list[ApiJobExpiryMoved]:
    """The :class:`ApiJobExpiryMoved` due for the API jobs ``job_ids`` (None: all): each job
    that ended and whose end is not logged yet gets the deadline ``its end + keep`` (never
    earlier than the one it has)."""
    svc: ServiceState = state.service
    moves = []
    for job_id in svc.api_jobs if job_ids is None else job_ids:
        api = svc.api_jobs.get(job_id)
        if api is None or api.ended or api.expired:
            continue
        job = state.jobs.get(job_id)
        if job is None or job.status not in ENDED or job.finished_at is None:
            continue
        until = max(api.expires_at, job.finished_at + keep)
        moves.append(ApiJobExpiryMoved(job_id=api.job_id, expires_at=until, at=now))
    return moves


KEY_NOT_ACCEPTED: Final = "not accepted: the log ends before its job"
"""The reason of an :class:`IdempotencyKeyReleased` for a claim :func:`claims_without_job`
found."""


def claims_without_job(state: Any, now: float) -> list[IdempotencyKeyReleased]:
    """The releases due at a start for the submissions' keys claimed with no job: a claim
    and its ``ApiJobAccepted`` are one append, but a power loss can tear that write between
    the two records (the log's repair keeps the claim), leaving the key taken by nothing;
    its client's retry, which never got its 201, would be refused for ever. A key whose
    job was accepted at or after its claim is the claim's own (an older job of the same
    key, its claim expired and released, does not count)."""
    svc: ServiceState = state.service
    claims = [c for c in svc.idempotency.values() if c.scope == "jobs" and c.job_id is None]
    if not claims:
        return []
    accepted: dict[str, float] = {}  # key -> its latest job's acceptance
    for api in svc.api_jobs.values():
        key = api.idempotency_key
        if key is not None and api.accepted_at >= accepted.get(key, api.accepted_at):
            accepted[key] = api.accepted_at
    return [
        IdempotencyKeyReleased(key=c.key, scope=c.scope, reason=KEY_NOT_ACCEPTED, at=now)
        for c in claims
        if c.key not in accepted or accepted[c.key] < c.claimed_at
    ]


def held_assets(state: Any) -> set[str]:
    """The assets a job of the API whose end is not logged yet holds (its inputs and its
    outputs so far): none of them expires before that job's end + the retention."""
    svc: ServiceState = state.service
    held: set[str] = set()
    for api in svc.api_jobs.values():
        if api.ended or api.expired or api.job_id not in state.jobs:
            continue
        held.update(api.input_assets.values())
        held.update(svc.job_outputs.get(api.job_id, {}).values())
    return held
