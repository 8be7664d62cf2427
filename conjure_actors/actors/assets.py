"""AssetActor: the only writer of the service's events (assets, API jobs, idempotency keys,
expiry; :mod:`conjure_actors.domain.service_events`), and of the ``JobSubmitted`` of every
job submitted through the API.

It owns an API submission whole: whether the job may exist hangs on its idempotency key,
whose check and claim must be serialised in one mailbox, so the claim, the job's API facts,
its ``JobSubmitted`` (decided by the runtime's rule, ``Conjure.prepare_submission``) and its
``JobQueued`` are logged in ONE append: a submission is one durable write, and a crash can
never leave a key claimed by a job that does not exist (nor a job without its API facts).
The runtime then only puts the job into the pool's queue (``Conjure.start_submitted``).
Jobs of ``run`` are the runtime's. Submissions are decided at once and journaled in
pipelined batches (see ``AssetActor._accept``).

HTTP handlers (``conjure_actors.service``) ask it; it decides from the state, emits, and
answers. Work that waits runs in child tasks that report back by message: a timer asks for
an expiry sweep, a journal subscriber reports each ``OutputSaved`` so the output becomes an
asset (its bytes copied into the blob store BEFORE ``AssetRecorded`` is logged), and each
job's end, so its retention runs from then (``ApiJobExpiryMoved``). An output the store
refuses on every try (or whose file went) is given up; once each output of a job that
succeeded is stored or given up, some given up, it logs the job's
``ApiJobOutputsNotStored`` (the API reads it failed, for good: its other outputs are never
stored later). On start it catches up: outputs the log saved but never recorded as assets
(a crash in between) are recorded then, or tried and given up as above, unless their job's
``ApiJobOutputsNotStored`` is logged; and jobs that ended without their
``ApiJobExpiryMoved`` get it.

Retention runs from a job's end, never from its submission: a job may wait in the queue
longer than the retention (a slow boot) and still run, and a client paid for what it made.
Until its end is logged, a job, its input assets and its outputs are kept (the sweep skips
them: ``service_events.held_assets``); then all of them live at least until its end + the
retention.

A job's expiry (``ApiJobExpired``) is the fact; the removal of its folder of outputs under
``serve --out`` (OUT/<job>/, the copies the job downloaded; its assets' bytes are blobs)
follows it: after the sweep logged the expiry, and again on start for every job the log says
expired (a crash between the event and the removal, or in the middle of it, is finished
then; removing what is gone already is a no-op). Nothing a client can still read goes: an
expired job and its outputs answer 404.

Answers are values, never exceptions (an exception in ``receive`` is a crash):
:class:`Claimed` / :class:`KeyReused`, :class:`Recorded` / :class:`BlobGone`, ``True``/``False``.
Only this actor removes blobs (when no asset refers to them any more), and it checks a blob
is stored as it records an asset over it.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterable, Mapping, Set
from pathlib import Path
from typing import Any, Protocol

import attrs
import trio

from conjure_actors.actors.context import Context
from conjure_actors.actors.messages import Reply
from conjure_actors.domain import events as ev
from conjure_actors.domain import service_events as se
from conjure_actors.domain import state as st
from conjure_actors.runtime import Actor, ActorStoppedError

log = logging.getLogger("conjure_actors.actors.assets")

SWEEP_INTERVAL = 30.0
"""Seconds between two expiry sweeps."""
EXPIRY_MOVES_PER_APPEND = 500
"""The most ``ApiJobExpiryMoved`` one append holds: the catch-up of a log older than that
event moves every API job it holds, and one append of them all would be one unit as large
as the log's history of jobs (the journal never splits an ``append_many``: one write and
fsync past its ``max_batch``, held in memory whole, and every appender waits behind it). The
moves are independent: a crash between two appends leaves the rest to the next start's
catch-up."""
STORE_ATTEMPTS = 4
STORE_RETRY_DELAY = 10.0
"""An output the blob store refuses is tried ``STORE_ATTEMPTS`` times, this many seconds
apart (the last try 30 s after the first), then given up: a job that succeeded reads
``running`` until then, and ``failed`` (``ApiJobOutputsNotStored``) once each of its
outputs is stored or given up, some given up."""
INLINE_BYTES = 64 * 1024
"""An output up to this size whose bytes are stored already becomes an asset on the actor's
own task (read and hashed in tens of microseconds): a worker thread, a child task and a
message back would cost more, and every job of a workflow often saves the same bytes."""


class Blobs(Protocol):
    """What the actor needs of the blob store (``conjure_actors.service.blobs.BlobStore``)."""

    def put_file(self, path: Any) -> tuple[str, int, bool]: ...

    def has(self, hash_text: str) -> bool: ...

    def stored_as(self, path: Any, limit: int) -> tuple[str, int] | None: ...

    def remove(self, hash_text: str) -> None: ...


@attrs.frozen
class Retention:
    """How long things live (seconds; None: forever)."""

    jobs: float = 7 * 86400.0
    assets: float | None = 7 * 86400.0
    idempotency_keys: float = 86400.0


# ------------------------------------------------------------------------------ messages


@attrs.frozen
class AcceptJob:
    """Claim ``key`` (if any) and log the API facts of ``job_id`` with its ``submitted``
    (its ``JobSubmitted``) and its ``JobQueued``, in one append; ``reply`` gets
    :class:`Claimed` once they are durable, or :class:`KeyReused` (then nothing was
    logged)."""

    job_id: str
    labels: Mapping[str, str]
    input_assets: Mapping[str, str]
    submitted: ev.JobSubmitted
    key: str | None = None
    extra_data_keys: tuple[str, ...] = ()
    reply: Reply[Any] = attrs.field(factory=Reply, eq=False)

    def undelivered(self, error: BaseException) -> None:
        """The actor ended for good with this in its mailbox: nothing was logged."""
        self.reply.fail(error)


@attrs.frozen
class AssetsGone:
    """An :class:`AcceptJob` refused, nothing logged: its input assets ``asset_ids`` were
    deleted (or expired) after the submission resolved them (QA10 F3: the DELETE's 204 and
    the job's 201 both came, the job logged after its input's deletion)."""

    asset_ids: tuple[str, ...]


@attrs.frozen
class RecordAsset:
    """Log an asset over a blob already durable in the store; answers :class:`Recorded`,
    or :class:`KeyReused` when ``key`` (an upload's ``Idempotency-Key``) was claimed before,
    or :class:`BlobGone` when the blob is no longer stored."""

    hash: str
    size: int
    content_type: str
    file_path: str | None
    tags: tuple[str, ...]
    expires_in: float | None = None
    key: str | None = None


@attrs.frozen
class Recorded:
    """``RecordAsset`` answer: the asset is durable; ``created_new``: no live asset had its
    bytes before it (decided as it is recorded, so of two uploads of the same new bytes
    only the first says so)."""

    asset_id: str
    created_new: bool


@attrs.frozen
class BlobGone:
    """``RecordAsset`` answer: the blob is not in the store (its last asset was deleted or
    expired, or a refused upload's blob was dropped, after the caller stored it): nothing
    was logged; store the bytes again, then ask again."""


@attrs.frozen
class DropBlobIfUnused:
    """Remove a blob no asset refers to (a refused upload's). Only the actor removes blobs,
    and it re-checks a blob as it records an asset over it (:class:`BlobGone`), so a removal
    never falls between another request's check and its record."""

    hash: str


@attrs.frozen
class DeleteAsset:
    """Delete an asset record; answers whether it existed, or :class:`AssetInUse`."""

    asset_id: str


@attrs.frozen
class AssetInUse:
    """``DeleteAsset`` answer: a job's output; it goes with its job (its expiry), not alone.
    Its job's outputs name it, and a deletion would turn the succeeded job back to running
    (an output not an asset) and be undone by the next start's catch-up. Or an input of a
    job not ended yet: the job reads its bytes when it runs (``service_events.held_assets``)."""


@attrs.frozen
class RequestCancel:
    """Mark an active job ``canceling`` (the caller then cancels it in the runtime)."""

    job_id: str


@attrs.frozen
class JobsEnded:
    """From the journal watcher: these jobs ended (their retention runs from now)."""

    job_ids: tuple[str, ...]


@attrs.frozen
class OutputSeen:
    """From the journal watcher: a job saved an output file."""

    event: ev.OutputSaved


@attrs.frozen
class _OutputStored:
    """From a child: an output's bytes are in the blob store (``hash_text`` None: given up,
    ``reason`` says why); the actor logs its ``AssetRecorded``."""

    event: ev.OutputSaved
    hash_text: str | None
    size: int = 0
    created: bool = False
    reason: str = ""


def _output_at(state: Any, job_id: str, path: str) -> st.OutputFile | None:
    """The job's current output at ``path`` (its attempt's), if any."""
    job = state.jobs.get(job_id)
    if job is None:
        return None
    return next((o for o in job.outputs if o.path == path), None)


def _current_output(state: Any, e: ev.OutputSaved) -> st.OutputFile | None:
    """The job's current output ``e`` saved (same path, same bytes), or None: ``e`` was an
    earlier attempt's (a new attempt started since and saved its own, or none yet)."""
    out = _output_at(state, e.job_id, e.path)
    return out if out is not None and out.sha256 == e.sha256 else None


def _saved(job_id: str, out: st.OutputFile, at: float) -> ev.OutputSaved:
    """An ``OutputSaved`` for a job's current output (to store it as one seen live)."""
    return ev.OutputSaved(
        job_id=job_id,
        node_id=out.node_id,
        filename=out.filename,
        path=out.path,
        size=out.size,
        sha256=out.sha256,
        kind=out.kind,
        at=at,
    )


@attrs.frozen
class SweepNow:
    """From the timer (or a test): expire what passed its retention."""


@attrs.frozen
class Claimed:
    """``AcceptJob`` answer: the job's API facts (and key) are durable."""


@attrs.frozen
class KeyReused:
    """``AcceptJob`` / ``RecordAsset`` answer: the key was claimed before and has not
    expired; ``asset_id``: the asset an upload's key made, when the claim names it;
    ``job_id``: the job of a submission with the key still being journaled, and
    ``settled``: that submission's own reply, answered once it is durable (or failed: then
    nothing of it was logged, and the key is free again)."""

    asset_id: str | None = None
    job_id: str | None = None
    settled: Reply[Any] | None = attrs.field(default=None, eq=False)


# ------------------------------------------------------------------------------ the actor


class AssetActor(Actor):
    """See the module docstring."""

    def __init__(self, ctx: Context, blobs: Blobs, retention: Retention) -> None:
        self.ctx = ctx
        self.blobs = blobs
        self.retention = retention
        # Decisions not applied yet (see _accept): the events staged for the next append
        # and their replies; the replies of every acceptance not applied yet, by job id (the
        # journal listener answers each as its ApiJobAccepted is applied: _watch_outputs);
        # the keys claimed by events staged or being journaled, with the submission that
        # claimed each (a key used twice before its first claim is applied is still refused,
        # naming the job once the first is durable).
        self._staged: list[Any] = []
        self._waiting: list[Reply[Any]] = []
        self._claims: dict[str, Reply[Any]] = {}
        self._staged_keys: dict[str, AcceptJob] = {}
        # A flush task is started and has not taken the staged events yet (at most one, so
        # the appends go in the order of the decisions); flush tasks whose append is not
        # done, and an event set once there are none (see _settle).
        self._flush_started = False
        self._journaling = 0
        self._settled = trio.Event()
        self._settled.set()
        # Output files being copied into the blob store by a child (by path), and those
        # whose AssetRecorded is staged or being journaled.
        self._storing: set[str] = set()
        self._staged_outputs: set[str] = set()
        # Outputs given up (by job, path -> (the output's sha256, why)), until their job's
        # ApiJobOutputsNotStored is decided; the jobs whose one is staged or being journaled.
        self._given_up: dict[str, dict[str, tuple[str, str]]] = {}
        self._staged_unstored: set[str] = set()

    async def on_start(self) -> None:
        ready = trio.Event()
        self.start_soon(self._watch_outputs, ready, name="asset-output-watch")
        await ready.wait()
        self.start_soon(self._timer, name="asset-expiry-timer")
        # Catch up: outputs saved (maybe before a crash) that are not assets yet (an output
        # the store refuses now is tried again by a child, then given up as it would have
        # been); then the ends not logged yet (a crash in between, or a log older than
        # ApiJobExpiryMoved).
        for job in list(self.ctx.state.jobs.values()):
            for out in job.outputs:
                await self._record_output(job, out)
        await self._move_expiries(None)
        await self._release_torn_claims()
        # Expired jobs whose folders a crash (or an older version) left: removed now.
        await self._remove_expired_outputs()

    async def _release_torn_claims(self) -> None:
        """On start: the submissions' keys claimed with no job (a write torn by a power
        loss between the claim and its ``ApiJobAccepted``) are released, so that their
        clients' retries are accepted (``service_events.claims_without_job``)."""
        released = se.claims_without_job(self.ctx.state, self.ctx.now())
        if released:
            log.warning("%d Idempotency-Key(s) claimed by no job released", len(released))
            await self.ctx.emit(*released)

    async def _watch_outputs(self, ready: trio.Event) -> None:
        # A journal listener picks the outputs out of each commit as it is applied (no task
        # step per commit: outputs are a few of a job's ~18 records); this task wakes only
        # for a commit that saved one, and tells the actor (which may wait on its mailbox).
        seen: list[ev.OutputSaved] = []
        ended: list[str] = []
        wake = trio.Event()
        broken: list[Exception] = []

        claims = self._claims
        accepted = se.ApiJobAccepted
        output_saved = ev.OutputSaved
        job_ends = (ev.JobSucceeded, ev.JobFailed, ev.JobCancelled)

        def on_records(records: list[Any]) -> None:
            try:
                found = []
                for r in records:
                    event = r.event
                    if type(event) is accepted:
                        # Durable and applied: the submission's 201 may go now, from the
                        # commit itself (the actor's own wake-up is one scheduler pass
                        # later, and every pass is long while requests pour in).
                        reply = claims.pop(event.job_id, None)
                        if reply is not None:
                            reply.set(Claimed())
                    elif isinstance(event, output_saved):
                        found.append(event)
                    elif isinstance(event, job_ends):
                        ended.append(event.job_id)
            except Exception as exc:  # raised in this task below, not dropped silently
                broken.append(exc)
                wake.set()
                raise
            if found:
                seen.extend(found)
                wake.set()
            elif ended:
                wake.set()

        with self.ctx.journal.listen(on_records):
            ready.set()
            while True:
                await wake.wait()
                if broken:
                    raise broken[0]
                wake = trio.Event()  # set by outputs saved from now on
                taken = seen[:]
                seen.clear()
                for event in taken:
                    await self.ref.tell(OutputSeen(event))
                if ended:
                    # After the outputs: the end's move then covers them (see _move_expiries).
                    done = tuple(ended)
                    ended.clear()
                    await self.ref.tell(JobsEnded(done))

    async def _timer(self) -> None:
        while True:
            await trio.sleep(SWEEP_INTERVAL)
            await self.ref.tell(SweepNow())

    async def receive(self, msg: Any) -> Any:
        match msg:
            case AcceptJob():
                self._accept(msg)
                return None
            case RecordAsset():
                await self._settle()
                return await self._record(msg)
            case DeleteAsset():
                await self._settle()
                return await self._delete(msg.asset_id)
            case DropBlobIfUnused():
                await self._settle()
                self._drop_blob_if_unused(msg.hash)
                return None
            case RequestCancel():
                await self._settle()
                api = self.ctx.state.service.api_jobs.get(msg.job_id)
                job = self.ctx.state.jobs.get(msg.job_id)
                if (
                    api is not None
                    and api.cancel_requested_at is None
                    and job is not None
                    and job.status not in st.TERMINAL_STATUSES
                ):
                    await self.ctx.emit(
                        se.ApiJobCancelRequested(job_id=msg.job_id, at=self.ctx.now())
                    )
                return None
            case OutputSeen():
                self._store_output(msg.event)
                return None
            case JobsEnded():
                await self._settle()
                await self._move_expiries(msg.job_ids)
                for job_id in msg.job_ids:
                    self._decide_unstored(job_id)
                return None
            case _OutputStored():
                self._output_stored(msg)
                return None
            case SweepNow():
                await self._settle()
                await self._sweep()
                return None
            case _:
                log.warning("AssetActor: unknown message %s", type(msg).__name__)
                return None

    # ------------------------------------------------------------------ decisions

    def _accept(self, msg: AcceptJob) -> None:
        """Decide at once; journal in batches, without waiting for them.

        Every acceptance must be durable before its 201, and a journal append waits for an
        fsync. Deciding and appending one message at a time would cap submissions at one
        per fsync, so the decisions are staged and a flush task (see :meth:`_flush_soon`)
        journals whatever is staged when it runs in one append. The actor does not wait for
        that append: the acceptances that come during its fsync are decided at once and
        appended behind it, so the journal commits them right after it (as one more
        batch), instead of waiting, undecided in the mailbox, for the actor to come back
        from the first one and for the journal to wake for the second. Each reply is
        answered as its ``ApiJobAccepted`` is applied (the listener in _watch_outputs).
        The claim check sees the keys staged or being journaled too, so a key used twice
        before its first claim is applied is still refused the second time."""
        # An input deleted since the request resolved it (its deletion is applied: the
        # actor takes no message while it logs one): refused, as an unknown one is. Once
        # staged, a job's inputs are held (a DeleteAsset settles first, then sees them).
        assets = self.ctx.state.service.assets
        gone = tuple(a for a in msg.input_assets.values() if a not in assets)
        if gone:
            msg.reply.set(AssetsGone(gone))
            return
        now = self.ctx.now()
        if msg.key is not None:
            claimed = se.claim_key("jobs", msg.key)
            taken = self._key_taken(msg.key, now)
            if isinstance(taken, AcceptJob):
                # A duplicate while the first is still being journaled (a browser's retry
                # after a short timeout): it names the first's job once that is durable.
                msg.reply.set(KeyReused(job_id=taken.job_id, settled=taken.reply))
                return
            if taken is not None:
                msg.reply.set(KeyReused())
                return
            self._staged_keys[claimed] = msg
            self._staged.append(
                se.IdempotencyKeyClaimed(
                    key=msg.key,
                    scope="jobs",
                    expires_at=now + self.retention.idempotency_keys,
                    at=now,
                )
            )
        self._staged.append(
            se.ApiJobAccepted(
                job_id=msg.job_id,
                labels=dict(msg.labels),
                idempotency_key=msg.key,
                input_assets=dict(msg.input_assets),
                extra_data_keys=msg.extra_data_keys,
                expires_at=now + self.retention.jobs,
                at=now,
            )
        )
        self._staged.append(msg.submitted)
        # Submitted and queued in one append, as ``Conjure.submit`` does for ``run``: a
        # fresh submission is pending -> queued by construction, and a JobQueued of its own
        # would be one more commit (an fsync) per submission for the runtime to wait on.
        self._staged.append(ev.JobQueued(job_id=msg.job_id, at=msg.submitted.at))
        self._waiting.append(msg.reply)
        self._claims[msg.job_id] = msg.reply
        self._flush_soon()

    def _key_taken(self, key: str, now: float) -> Any:
        """The live claim of ``key`` by an upload or a submission (an ``AcceptJob``: a
        submission's, staged or being journaled), or None. One namespace, as the contract's
        Idempotency-Key says: "any later request with the same key is rejected" (the claims
        keep their scope: the log's events are unchanged)."""
        claims = self.ctx.state.service.idempotency
        staged = self._staged_keys.get(se.claim_key("jobs", key))
        if staged is not None:
            return staged
        for scope in ("assets", "jobs"):
            claim = claims.get(se.claim_key(scope, key))
            if claim is not None and claim.expires_at > now:
                return claim
        return None

    def _flush_soon(self) -> None:
        """Start one flush task for whatever is staged until it runs."""
        if self._flush_started:
            return
        self._flush_started = True
        if not self._journaling:
            self._settled = trio.Event()
        self._journaling += 1
        self.start_soon(self._flush, name="asset-flush")

    async def _flush(self) -> None:
        """A flush task: append what is staged (in the step it starts, so appends keep the
        order of the decisions: the next task starts only after this one took its events),
        then wait until it is durable. A failed append fails its replies and the actor.

        The one child of this actor that writes to the journal: it decides nothing, it
        writes what the actor decided, in that order, so the actor can go on deciding
        while the fsync runs (the actor's own appends wait for it: :meth:`_settle`)."""
        events, waiting = self._staged, self._waiting
        self._staged, self._waiting = [], []
        self._flush_started = False
        try:
            await self.ctx.emit(*events)
        except BaseException as exc:
            error = (
                exc
                if isinstance(exc, Exception)
                else ActorStoppedError(
                    "the asset actor stopped before the submission was journaled; retry"
                )
            )
            for reply in waiting:
                reply.fail(error)
            raise
        finally:
            self._journaled(events)
        for reply in waiting:
            reply.set(Claimed())  # the listener answered it already: a no-op

    def _journaled(self, events: list[Any]) -> None:
        """A flush task's append ended: what it held no longer counts as staged (once
        applied, the state holds it; if it failed, the actor crashes)."""
        for event in events:
            kind = type(event)
            if kind is se.ApiJobAccepted:
                self._claims.pop(event.job_id, None)
            elif kind is se.IdempotencyKeyClaimed:
                self._staged_keys.pop(se.claim_key(event.scope, event.key), None)
            elif kind is se.AssetRecorded and event.source_path is not None:
                self._staged_outputs.discard(event.source_path)
            elif kind is se.ApiJobOutputsNotStored:
                self._staged_unstored.discard(event.job_id)
        self._journaling -= 1
        if not self._journaling:
            self._settled.set()

    async def _settle(self) -> None:
        """Wait until every staged decision is journaled: the actor's own appends (an
        asset, a deletion, a cancel, a sweep) then go after all it decided before, and
        decide from a state that holds it (a sweep must not release a key that a staged
        claim took again)."""
        while self._journaling:
            await self._settled.wait()

    async def _record(self, msg: RecordAsset) -> Recorded | KeyReused | BlobGone:
        if not self.blobs.has(msg.hash):  # removed by this actor since the caller stored it
            return BlobGone()
        created_new = msg.hash not in self.ctx.state.service.blob_refs
        now = self.ctx.now()
        keep = msg.expires_in if msg.expires_in is not None else self.retention.assets
        asset_id = str(self.ctx.ids())
        claim: list[Any] = []
        if msg.key is not None:
            found = self._key_taken(msg.key, now)
            if found is not None:
                return KeyReused(getattr(found, "asset_id", None))
            claim.append(
                se.IdempotencyKeyClaimed(
                    key=msg.key,
                    scope="assets",
                    expires_at=now + self.retention.idempotency_keys,
                    asset_id=asset_id,
                    at=now,
                )
            )
        await self.ctx.emit(
            *claim,
            se.AssetRecorded(
                asset_id=asset_id,
                hash=msg.hash,
                size=msg.size,
                content_type=msg.content_type,
                file_path=msg.file_path,
                tags=msg.tags,
                created_new=created_new,
                expires_at=None if keep is None else now + keep,
                at=now,
            ),
        )
        return Recorded(asset_id, created_new)

    async def _delete(self, asset_id: str) -> bool | AssetInUse:
        record = self.ctx.state.service.assets.get(asset_id)
        if record is None:
            return False
        if record.source_path is not None or asset_id in se.held_assets(self.ctx.state):
            return AssetInUse()
        await self.ctx.emit(se.AssetDeleted(asset_id=asset_id, at=self.ctx.now()))
        self._drop_blob_if_unused(record.hash)
        return True

    def _drop_blob_if_unused(self, hash_text: str) -> None:
        if hash_text not in self.ctx.state.service.blob_refs:
            self.blobs.remove(hash_text)

    def _store_output(self, e: ev.OutputSaved) -> None:
        """A job saved an output: a child copies it into the blob store, then the actor
        stages its ``AssetRecorded`` with the next flush. The mailbox never waits on the
        copy nor on a journal commit of its own, so a submission's ``AcceptJob`` (its 201)
        is not held behind the outputs of running jobs. A small output whose bytes are
        stored already is staged at once (see :data:`INLINE_BYTES`). One of an attempt given
        up since (a new attempt started) is not the job's output: left out."""
        if self._pending_output(e.job_id, e.path) or _current_output(self.ctx.state, e) is None:
            return
        if e.size <= INLINE_BYTES:
            try:
                known = self.blobs.stored_as(e.path, INLINE_BYTES)
            except OSError:
                known = None  # the child's put_file says why (or finds it on a retry)
            if known is not None:
                self._stage_output(
                    e.path,
                    self._asset_recorded(
                        e.job_id, e.node_id, e.filename, e.path, e.kind, *known, False
                    ),
                )
                self._decide_unstored(e.job_id)
                return
        self._storing.add(e.path)
        self.start_soon(self._put_blob, e, name="asset-store-output")

    async def _put_blob(self, e: ev.OutputSaved) -> None:
        """Copy an output into the blob store; a store that refuses it (its folder
        read-only, not the server's, full) is tried again every :data:`STORE_RETRY_DELAY`,
        :data:`STORE_ATTEMPTS` times in all, all within the API's grace for a job's outputs:
        a folder fixed meanwhile still makes the job a success with its outputs. A file
        that went is given up at once."""
        for attempt in range(STORE_ATTEMPTS):
            if attempt:
                await trio.sleep(STORE_RETRY_DELAY)
            try:
                stored = await trio.to_thread.run_sync(self.blobs.put_file, e.path)
            except FileNotFoundError as exc:
                failure: OSError = exc
                break
            except OSError as exc:
                failure = exc
                continue
            await self.ref.tell(_OutputStored(e, *stored))
            return
        log.warning(
            "output %s of job %s not kept as an asset (if the job succeeded, it reads failed,"
            " outputs_not_stored, for good; the file stays at %s until the job expires): %s",
            e.filename,
            e.job_id,
            e.path,
            failure,
        )
        await self.ref.tell(_OutputStored(e, None, reason=not_stored_reason(failure)))

    def _output_stored(self, msg: _OutputStored) -> None:
        e = msg.event
        self._storing.discard(e.path)
        current = _current_output(self.ctx.state, e)
        if current is None:
            # Its attempt was given up while it was being stored (a machine lost: a new
            # attempt starts and removes its files): not this job's output. One the new
            # attempt saved at the same path meanwhile was skipped as being stored: now.
            replaced = _output_at(self.ctx.state, e.job_id, e.path)
            if replaced is not None:
                self._store_output(_saved(e.job_id, replaced, self.ctx.now()))
            return
        self._output_settled(msg)
        self._decide_unstored(e.job_id)

    def _output_settled(self, msg: _OutputStored) -> None:
        e = msg.event
        if self._pending_output(e.job_id, e.path):
            return
        if msg.hash_text is None:
            self._given_up.setdefault(e.job_id, {})[e.path] = (e.sha256, msg.reason)
            return
        if not self.blobs.has(msg.hash_text):
            if msg.created:  # it wrote the blob, which no asset had: removed by hand
                log.warning("output %s of job %s not kept: its blob went", e.filename, e.job_id)
                self._given_up.setdefault(e.job_id, {})[e.path] = (
                    e.sha256,
                    "its bytes went from the server's asset store as they were stored",
                )
                return
            # The child found the bytes stored, and the last asset over them went since
            # (this actor removed the blob): store them again (this time it writes them).
            self._storing.add(e.path)
            self.start_soon(self._put_blob, e, name="asset-store-output")
            return
        self._stage_output(
            e.path,
            self._asset_recorded(
                e.job_id,
                e.node_id,
                e.filename,
                e.path,
                e.kind,
                msg.hash_text,
                msg.size,
                msg.created,
            ),
        )

    def _stage_output(self, path: str, recorded: se.AssetRecorded) -> None:
        self._staged_outputs.add(path)
        self._staged.append(recorded)
        self._flush_soon()

    def _pending_output(self, job_id: str, path: str) -> bool:
        """Whether an output is being stored, staged, recorded, or needs storing no more
        (its job expired, or reads failed for outputs not stored)."""
        return (
            path in self._storing
            or path in self._staged_outputs
            or job_id in self._staged_unstored
            or self._recorded_or_expired(job_id, path)
        )

    def _recorded_or_expired(self, job_id: str, path: str) -> bool:
        svc = self.ctx.state.service
        if path in svc.job_outputs.get(job_id, {}) or job_id in svc.outputs_not_stored:
            return True
        api = svc.api_jobs.get(job_id)
        return job_id in svc.expired_jobs or (api is not None and api.expired)

    def _decide_unstored(self, job_id: str) -> None:
        """Stage the ``ApiJobOutputsNotStored`` of a job that succeeded once each of its
        outputs is recorded (or staged) or given up, some given up. Until then (an output
        being stored, or not seen yet) nothing: the last one's outcome decides. A job that
        did not succeed needs none (it reads what its end says)."""
        given_up = self._given_up.get(job_id)
        if not given_up:
            return
        job = self.ctx.state.jobs.get(job_id)
        svc = self.ctx.state.service
        api = svc.api_jobs.get(job_id)
        if (
            job is None
            or job.status in (st.FAILED, st.CANCELLED)
            or job_id in svc.outputs_not_stored
            or (api is not None and api.expired)
        ):
            del self._given_up[job_id]  # nothing to decide
            return
        if job.status != st.SUCCEEDED or job_id in self._staged_unstored:
            return  # not ended yet (its end decides), or decided
        done = svc.job_outputs.get(job_id, {})
        missing: list[str] = []
        for out in job.outputs:
            path = out.path
            if path in done or path in self._staged_outputs:
                continue
            gone = given_up.get(path)
            if gone is None or gone[0] != out.sha256:
                # Being stored, or its OutputSeen is still on its way (an earlier attempt's
                # output at the same path, given up, is not this one).
                return
            missing.append(path)
        del self._given_up[job_id]
        if not missing:
            return
        self._staged_unstored.add(job_id)
        self._staged.append(
            se.ApiJobOutputsNotStored(
                job_id=job.job_id,
                paths=tuple(missing),
                reason=given_up[missing[0]][1],
                at=self.ctx.now(),
            )
        )
        self._flush_soon()

    def _asset_recorded(
        self,
        job_id: str,
        node_id: str,
        filename: str,
        path: str,
        kind: str,
        hash_text: str,
        size: int,
        created: bool,
    ) -> se.AssetRecorded:
        api = self.ctx.state.service.api_jobs.get(job_id)
        now = self.ctx.now()
        expires_at = None
        if api is not None:
            # A job not ended yet moves its outputs' deadline with its own when it ends;
            # until then an output is announced live for at least a retention from now.
            expires_at = api.expires_at
            if not api.ended:
                expires_at = max(expires_at, now + self.retention.jobs)
        return se.AssetRecorded(
            asset_id=str(self.ctx.ids()),
            hash=hash_text,
            size=size,
            content_type=_content_type(filename, kind),
            file_path=filename,
            tags=("output",),
            job_id=job_id,
            node_id=node_id,
            kind=kind,
            source_path=path,
            created_new=created,
            expires_at=expires_at,
            at=now,
        )

    async def _record_output(self, job: st.Job, out: st.OutputFile) -> None:
        """The catch-up on start: record one output at once (inline); one the store
        refuses (or whose file went) goes to a child that tries it as a live output is
        tried, then gives it up (and the job reads failed, :meth:`_decide_unstored`)."""
        job_id, path = job.job_id, out.path
        if self._pending_output(job_id, path):
            return
        try:
            hash_text, size, created = await trio.to_thread.run_sync(self.blobs.put_file, path)
        except OSError:
            self._storing.add(path)
            saved = _saved(job_id, out, self.ctx.now())
            self.start_soon(self._put_blob, saved, name="asset-store-output")
            return
        await self.ctx.emit(
            self._asset_recorded(
                job_id, out.node_id, out.filename, path, out.kind, hash_text, size, created
            )
        )

    async def _move_expiries(self, job_ids: Any) -> None:
        """Log the end of the jobs ``job_ids`` (None: every job) that ended: their retention
        (and their assets') runs from then. Called with nothing staged (after ``_settle``),
        so every output recorded before is in the state the move applies to, and every
        output recorded after reads the job's new deadline (``_asset_recorded``)."""
        moves = se.expiry_moves(self.ctx.state, self.retention.jobs, self.ctx.now(), job_ids)
        for start in range(0, len(moves), EXPIRY_MOVES_PER_APPEND):
            await self.ctx.emit(*moves[start : start + EXPIRY_MOVES_PER_APPEND])

    async def _sweep(self) -> None:
        await self._move_expiries(None)  # an end the watcher has not told yet: not expired
        now = self.ctx.now()
        state = self.ctx.state
        expired: dict[str, list[str]] = {}  # job id -> its outputs' paths
        for api in list(state.service.api_jobs.values()):
            job = state.jobs.get(api.job_id)
            if api.expired or not api.ended or job is None:
                continue
            if api.expires_at <= now:
                expired[api.job_id] = [o.path for o in job.outputs]  # the job leaves the state
                await self.ctx.emit(se.ApiJobExpired(job_id=api.job_id, at=now))
        await self._remove_outputs(expired)
        for claim in list(state.service.idempotency.values()):
            if claim.expires_at <= now:
                await self.ctx.emit(
                    se.IdempotencyKeyReleased(
                        key=claim.key, scope=claim.scope, reason="expired", at=now
                    )
                )
        held = se.held_assets(state)
        for record in list(state.service.assets.values()):
            if record.asset_id in held:
                continue
            if record.expires_at is not None and record.expires_at <= now:
                await self.ctx.emit(se.AssetExpired(asset_id=record.asset_id, at=now))
                self._drop_blob_if_unused(record.hash)

    async def _remove_expired_outputs(self) -> None:
        """On start: remove the folders every expired job left (a crash between its
        ``ApiJobExpired`` and the removal, or in the middle of it; an older version).

        A serve lives for months and its log keeps every expired job, nearly all of whose
        folders went long ago: a probe per expired job (the sweep's way, for the few it
        expires) would make every start slower with the log's age (20,000 expired jobs:
        half a second of syscalls). So each ``--out`` the expired jobs' outputs were saved
        under is listed once, and only its entries named after an expired job go: the
        filesystem work is bounded by what is on disk, not by the log."""
        state = self.ctx.state
        # An expired job leaves the state, its tombstone (service_events.ExpiredJob) stays
        # a while: long enough for this start after a crash in between.
        tombs = state.service.expired_jobs
        expired = set(tombs)
        if not expired:
            return
        # The --out of each job's outputs (OUT/<job>/<subfolder>/<file>; a restart may have
        # had another --out), as its tombstone recorded it.
        out_dirs = {str(self.ctx.out_dir)}
        out_dirs.update(t.out_dir for t in tombs.values() if t.out_dir is not None)
        folders = sorted(Path(d) for d in out_dirs)
        await trio.to_thread.run_sync(remove_listed_folders, folders, expired)

    async def _remove_outputs(self, jobs: dict[str, list[str]]) -> None:
        """Remove the output folders of jobs whose expiry is logged (idempotent): ``jobs``
        maps each to its outputs' paths."""
        folders: set[Path] = set()
        for job_id, paths in jobs.items():
            folders.update(job_folders(self.ctx.out_dir, job_id, paths))
        if folders:
            await trio.to_thread.run_sync(remove_folders, sorted(folders))


def not_stored_reason(error: OSError) -> str:
    """Why an output could not be stored, in a client's words (no path of the server): the
    blob store's refusal (its ``StoreRefusedError`` carries it), the file gone, or the
    system's words for the error."""
    refusal = getattr(error, "refusal", None)
    if refusal is not None:
        return f"the server's asset store refuses writes: {refusal.cause}"
    if isinstance(error, FileNotFoundError):
        return "its file went from the server's output folder"
    if error.strerror:
        return f"it could not be copied into the server's asset store: {error.strerror}"
    return "it could not be copied into the server's asset store"


def job_folders(out_dir: Path, job_id: str, paths: Iterable[str]) -> set[Path]:
    """The folders holding a job's outputs: OUT/<job>/ of this ``--out``, and that of each
    output saved under another (a restart with another ``--out``): the output path's
    ancestor named after the job (``job.py`` saves OUT/<job>/<subfolder>/<file>)."""
    folders = {out_dir / job_id}
    for path in paths:
        for parent in Path(path).parents:
            if parent.name == job_id:
                folders.add(parent)
                break
    return folders


def remove_folders(folders: Iterable[Path]) -> None:
    """Remove each folder and what it holds; one gone already is no error, one that cannot
    go is a warning (the next start tries again)."""
    for folder in folders:
        try:
            shutil.rmtree(folder)
        except FileNotFoundError:
            continue
        except OSError as exc:
            log.warning("expired outputs in %s not removed: %s", folder, exc)
            continue
        log.debug("expired outputs removed: %s", folder)


def remove_listed_folders(out_dirs: Iterable[Path], job_ids: Set[str]) -> None:
    """List each of ``out_dirs`` once and remove its folders named after one of ``job_ids``
    (:func:`remove_folders`); an ``out_dir`` that is gone or unreadable holds nothing to
    remove (a warning for the latter)."""
    folders: list[Path] = []
    for out_dir in out_dirs:
        try:
            with os.scandir(out_dir) as entries:
                folders.extend(
                    out_dir / e.name
                    for e in entries
                    if e.name in job_ids and e.is_dir(follow_symlinks=False)
                )
        except FileNotFoundError:
            continue
        except OSError as exc:
            log.warning("expired outputs in %s not looked for: %s", out_dir, exc)
    remove_folders(folders)


_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
    ".gif": "image/gif",
    ".glb": "model/gltf-binary",
    ".mp4": "video/mp4",
    ".webm": "video/webm",
    ".wav": "audio/wav",
    ".mp3": "audio/mpeg",
    ".flac": "audio/flac",
    ".txt": "text/plain",
    ".json": "application/json",
}


def _content_type(filename: str, kind: str) -> str:
    dot = filename.rfind(".")
    if dot >= 0 and filename[dot:].lower() in _TYPES:
        return _TYPES[filename[dot:].lower()]
    return "image/png" if kind == "image" else "application/octet-stream"
