"""AssetActor: the only writer of the service's events (assets, API jobs, idempotency keys,
expiry; :mod:`conjure_actors.domain.service_events`), and of the ``JobSubmitted`` of every
job submitted through the API.

It owns an API submission whole: whether the job may exist hangs on its idempotency key,
whose check and claim must be serialised in one mailbox, so the claim, the job's API facts
and its ``JobSubmitted`` (decided by the runtime's rule, ``Conjure.prepare_submission``)
are logged in ONE append: a submission is one durable write, and a crash can never leave a
key claimed by a job that does not exist (nor a job without its API facts). The runtime then
only starts the job's actor (``Conjure.start_submitted``). Jobs of ``run`` are the runtime's.

HTTP handlers (``conjure_actors.service``) ask it; it decides from the state, emits, and
answers. Work that waits runs in child tasks that report back by message: a timer asks for
an expiry sweep, a journal subscriber reports each ``OutputSaved`` so the output becomes an
asset (its bytes copied into the blob store BEFORE ``AssetRecorded`` is logged). On start it
catches up: outputs the log saved but never recorded as assets (a crash in between) are
recorded then.

Answers are values, never exceptions (an exception in ``receive`` is a crash):
:class:`Claimed` / :class:`KeyReused`, an asset id, ``True``/``False``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Protocol

import attrs
import trio

from conjure_actors.actors.context import Context
from conjure_actors.actors.messages import Reply
from conjure_actors.domain import events as ev
from conjure_actors.domain import service_events as se
from conjure_actors.domain import state as st
from conjure_actors.runtime import Actor, MailboxFullError

log = logging.getLogger("conjure_actors.actors.assets")

SWEEP_INTERVAL = 30.0
"""Seconds between two expiry sweeps."""
INLINE_BYTES = 64 * 1024
"""An output up to this size whose bytes are stored already becomes an asset on the actor's
own task (read and hashed in tens of microseconds): a worker thread, a child task and a
message back would cost more, and every job of a workflow often saves the same bytes."""


class Blobs(Protocol):
    """What the actor needs of the blob store (``conjure_actors.service.blobs.BlobStore``)."""

    def put_file(self, path: Any) -> tuple[str, int, bool]: ...

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
    (its ``JobSubmitted``), in one append; ``reply`` gets :class:`Claimed` once they are
    durable, or :class:`KeyReused` (then nothing was logged)."""

    job_id: str
    labels: Mapping[str, str]
    input_assets: Mapping[str, str]
    submitted: ev.JobSubmitted
    key: str | None = None
    reply: Reply[Any] = attrs.field(factory=Reply, eq=False)


@attrs.frozen
class _Flush:
    """Internal: journal the acceptances decided since the last flush, in one append."""


@attrs.frozen
class RecordAsset:
    """Log an asset over a blob already durable in the store; answers the asset id, or
    :class:`KeyReused` when ``key`` (an upload's ``Idempotency-Key``) was claimed before."""

    hash: str
    size: int
    content_type: str
    file_path: str | None
    tags: tuple[str, ...]
    created_new: bool
    expires_in: float | None = None
    key: str | None = None


@attrs.frozen
class DeleteAsset:
    """Delete an asset record; answers whether it existed."""

    asset_id: str


@attrs.frozen
class RequestCancel:
    """Mark an active job ``canceling`` (the caller then cancels it in the runtime)."""

    job_id: str


@attrs.frozen
class OutputSeen:
    """From the journal watcher: a job saved an output file."""

    event: ev.OutputSaved


@attrs.frozen
class _OutputStored:
    """From a child: an output's bytes are in the blob store (``hash_text`` None: the file
    could not be read); the actor logs its ``AssetRecorded``."""

    event: ev.OutputSaved
    hash_text: str | None
    size: int = 0
    created: bool = False


@attrs.frozen
class SweepNow:
    """From the timer (or a test): expire what passed its retention."""


@attrs.frozen
class Claimed:
    """``AcceptJob`` answer: the job's API facts (and key) are durable."""


@attrs.frozen
class KeyReused:
    """``AcceptJob`` answer: the key was claimed before and has not expired."""


# ------------------------------------------------------------------------------ the actor


class AssetActor(Actor):
    """See the module docstring."""

    def __init__(self, ctx: Context, blobs: Blobs, retention: Retention) -> None:
        self.ctx = ctx
        self.blobs = blobs
        self.retention = retention
        # Acceptances decided but not journaled yet (see _accept): their events, their
        # replies and the keys they claim (so a duplicate in the same batch is refused).
        self._staged: list[Any] = []
        self._waiting: list[Reply[Any]] = []
        self._staged_keys: set[str] = set()
        self._flush_told = False
        # Output files being copied into the blob store by a child (by path), and those
        # whose AssetRecorded is staged for the next flush.
        self._storing: set[str] = set()
        self._staged_outputs: set[str] = set()

    async def on_start(self) -> None:
        ready = trio.Event()
        self.start_soon(self._watch_outputs, ready, name="asset-output-watch")
        await ready.wait()
        self.start_soon(self._timer, name="asset-expiry-timer")
        # Catch up: outputs saved (maybe before a crash) that are not assets yet.
        for job in list(self.ctx.state.jobs.values()):
            for out in job.outputs:
                await self._record_output(job.job_id, out.node_id, out.filename, out.path, out.kind)

    async def _watch_outputs(self, ready: trio.Event) -> None:
        # A journal listener picks the outputs out of each commit as it is applied (no task
        # step per commit: outputs are a few of a job's ~18 records); this task wakes only
        # for a commit that saved one, and tells the actor (which may wait on its mailbox).
        seen: list[ev.OutputSaved] = []
        wake = trio.Event()
        broken: list[Exception] = []

        def on_records(records: list[Any]) -> None:
            try:
                found = [r.event for r in records if isinstance(r.event, ev.OutputSaved)]
            except Exception as exc:  # raised in this task below, not dropped silently
                broken.append(exc)
                wake.set()
                raise
            if found:
                seen.extend(found)
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

    async def _timer(self) -> None:
        while True:
            await trio.sleep(SWEEP_INTERVAL)
            await self.ref.tell(SweepNow())

    async def receive(self, msg: Any) -> Any:
        match msg:
            case AcceptJob():
                self._accept(msg)
                return None
            case _Flush():
                await self._flush()
                return None
            case RecordAsset():
                return await self._record(msg)
            case DeleteAsset():
                return await self._delete(msg.asset_id)
            case RequestCancel():
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
            case _OutputStored():
                self._output_stored(msg)
                return None
            case SweepNow():
                await self._sweep()
                return None
            case _:
                log.warning("AssetActor: unknown message %s", type(msg).__name__)
                return None

    # ------------------------------------------------------------------ decisions

    def _accept(self, msg: AcceptJob) -> None:
        """Decide at once; journal in batches.

        Every acceptance must be durable before its 201, and a journal append waits for an
        fsync. Deciding and appending one message at a time would cap submissions at one
        per fsync, so the decisions made while the mailbox drains are staged and one
        ``_Flush`` (told after the first of them) journals them all in one append, then
        answers each. The claim check sees staged keys too, so a key used twice in the same
        batch is still refused the second time."""
        now = self.ctx.now()
        if msg.key is not None:
            claimed = se.claim_key("jobs", msg.key)
            claim = self.ctx.state.service.idempotency.get(claimed)
            if claimed in self._staged_keys or (claim is not None and claim.expires_at > now):
                msg.reply.set(KeyReused())
                return
            self._staged_keys.add(claimed)
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
                expires_at=now + self.retention.jobs,
                at=now,
            )
        )
        self._staged.append(msg.submitted)
        self._waiting.append(msg.reply)
        self._flush_soon()

    def _flush_soon(self) -> None:
        """Tell ``_Flush`` once for whatever is staged until it runs."""
        if self._flush_told:
            return
        self._flush_told = True
        try:
            self.ref.tell_nowait(_Flush())
        except MailboxFullError:  # behind a full mailbox: queue it when there is room
            self.start_soon(self.ref.tell, _Flush(), name="asset-flush")

    async def _flush(self) -> None:
        events, waiting = self._staged, self._waiting
        self._staged, self._waiting, self._staged_keys = [], [], set()
        self._staged_outputs = set()
        self._flush_told = False
        if not events:
            return
        try:
            await self.ctx.emit(*events)
        except BaseException as exc:
            for reply in waiting:
                reply.fail(exc)
            raise
        for reply in waiting:
            reply.set(Claimed())

    async def _record(self, msg: RecordAsset) -> str | KeyReused:
        now = self.ctx.now()
        keep = msg.expires_in if msg.expires_in is not None else self.retention.assets
        asset_id = str(self.ctx.ids())
        claim: list[Any] = []
        if msg.key is not None:
            found = self.ctx.state.service.idempotency.get(se.claim_key("assets", msg.key))
            if found is not None and found.expires_at > now:
                return KeyReused()
            claim.append(
                se.IdempotencyKeyClaimed(
                    key=msg.key,
                    scope="assets",
                    expires_at=now + self.retention.idempotency_keys,
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
                created_new=msg.created_new,
                expires_at=None if keep is None else now + keep,
                at=now,
            ),
        )
        return asset_id

    async def _delete(self, asset_id: str) -> bool:
        record = self.ctx.state.service.assets.get(asset_id)
        if record is None:
            return False
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
        stored already is staged at once (see :data:`INLINE_BYTES`)."""
        if self._pending_output(e.job_id, e.path):
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
                return
        self._storing.add(e.path)
        self.start_soon(self._put_blob, e, name="asset-store-output")

    async def _put_blob(self, e: ev.OutputSaved) -> None:
        try:
            hash_text, size, created = await trio.to_thread.run_sync(self.blobs.put_file, e.path)
        except OSError as exc:
            log.warning("output %s of job %s not kept as an asset: %s", e.filename, e.job_id, exc)
            await self.ref.tell(_OutputStored(e, None))
            return
        await self.ref.tell(_OutputStored(e, hash_text, size, created))

    def _output_stored(self, msg: _OutputStored) -> None:
        e = msg.event
        self._storing.discard(e.path)
        if msg.hash_text is None or self._pending_output(e.job_id, e.path):
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
        """Whether an output is being stored, staged, recorded, or its job expired."""
        return (
            path in self._storing
            or path in self._staged_outputs
            or self._recorded_or_expired(job_id, path)
        )

    def _recorded_or_expired(self, job_id: str, path: str) -> bool:
        svc = self.ctx.state.service
        if path in svc.job_outputs.get(job_id, {}):
            return True
        api = svc.api_jobs.get(job_id)
        return api is not None and api.expired

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
            expires_at=api.expires_at if api is not None else None,
            at=self.ctx.now(),
        )

    async def _record_output(
        self, job_id: str, node_id: str, filename: str, path: str, kind: str
    ) -> None:
        """The catch-up on start: record one output at once (inline)."""
        if self._recorded_or_expired(job_id, path):
            return
        try:
            hash_text, size, created = await trio.to_thread.run_sync(self.blobs.put_file, path)
        except OSError as exc:
            # The file went (deleted by hand): the job keeps its OutputSaved; no asset.
            log.warning("output %s of job %s not kept as an asset: %s", filename, job_id, exc)
            return
        await self.ctx.emit(
            self._asset_recorded(job_id, node_id, filename, path, kind, hash_text, size, created)
        )

    async def _sweep(self) -> None:
        now = self.ctx.now()
        state = self.ctx.state
        for api in list(state.service.api_jobs.values()):
            job = state.jobs.get(api.job_id)
            if api.expired or job is None or job.status not in st.TERMINAL_STATUSES:
                continue
            if api.expires_at <= now:
                await self.ctx.emit(se.ApiJobExpired(job_id=api.job_id, at=now))
        for claim in list(state.service.idempotency.values()):
            if claim.expires_at <= now:
                await self.ctx.emit(
                    se.IdempotencyKeyReleased(
                        key=claim.key, scope=claim.scope, reason="expired", at=now
                    )
                )
        for record in list(state.service.assets.values()):
            if record.expires_at is not None and record.expires_at <= now:
                await self.ctx.emit(se.AssetExpired(asset_id=record.asset_id, at=now))
                self._drop_blob_if_unused(record.hash)


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
