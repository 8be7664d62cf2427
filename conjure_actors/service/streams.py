"""``GET /api/conjure/events``: one SSE stream that follows many jobs.

A browser opens at most 6 HTTP/1.1 connections to a host, across all its tabs, and ``serve``
on loopback speaks HTTP/1.1 to a browser (browsers do HTTP/2 over TLS only): a page with one
``EventSource`` per job (``/api/v2/jobs/{id}/events``) hangs once 6 are open, its next
submission, polls and downloads queued behind them. This stream follows the jobs named
(``?job=<id>``, repeatable) and every job whose labels match (``?metadata[k]=v``, those
submitted after it opened included) on one connection, one slot of ``max_streams``.

Its frames are the per-job stream's (``status``, ``progress``, ``output``), each with the
job's ``job_id`` (an ``output`` has it already; its ``id`` is the asset's, so the job's id
cannot go there), built the same way from ``job_view``: a snapshot of each job as it is
followed, then ``status`` on every change (a queued job's ``queue_position`` too), ``progress``
at most every ``progress_interval`` per job, ``output`` as each output becomes an asset, and
the job's terminal ``status`` (the full job) once; then that job is no longer followed. No
``preview``: a page opens the per-job stream of the one job it shows big. With ``job`` only,
the stream ends once every job it follows ended; with ``metadata`` it stays open (keep-alive
pings) until the client leaves or serving stops (then, as the per-job stream, one last look:
each followed job's status as serving stops).

Resuming (``service.resume``): each frame has an ``id`` (a journal seq and the log's tag); a
reconnect with ``Last-Event-ID`` (or ``?last_event_id=``) gets a snapshot of the live jobs
and of the jobs that ended after that id only, not of every ended job of the label again (QA
F10: 95 of them, 247 kB, on each reconnect). ``?ended=false`` leaves the ended jobs out of a
first connect. A stream that sent nothing while the log went on sends an id-only frame every
:data:`CHECKPOINT_EVERY` seconds at most; a ``job``-only resume with nothing left is 204.

Cost: per commit, only the followed jobs its records name are looked at, plus, when jobs
joined or left the queue, the followed queued jobs behind the first of them (only their
``queue_position`` can have moved: :class:`QueueWatch`); a stream that follows a thousand jobs
does not build a thousand job views per commit.
"""

from __future__ import annotations

import bisect
import json
import math
import urllib.parse
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Any, Final

import trio
from starlette.requests import Request
from starlette.responses import Response

from conjure_actors.domain import events as ev
from conjure_actors.domain import service_events as se
from conjure_actors.domain import state as st
from conjure_actors.service.app import Service
from conjure_actors.service.errors import ApiError, invalid_request
from conjure_actors.service.jobindex import WAITING as INDEX_WAITING
from conjure_actors.service.jobindex import ServingKey, serving_key, take_ready
from conjure_actors.service.responses import JSONResponse
from conjure_actors.service.resume import LAST_EVENT_ID, last_event_id, stamp
from conjure_actors.service.security import SIGNED_QUERY, url_signer
from conjure_actors.service.v2_assets import url_until
from conjure_actors.service.v2_jobs import (
    TERMINAL_API,
    CountedStream,
    api_status,
    check_metadata_filter,
    check_stream_slot,
    is_shown,
    iso,
    job_view,
    queue_position_of,
    retry_ms,
    service_of,
    status_payload,
)

__all__ = ["MAX_JOB_IDS", "STREAM_PATH", "QueueWatch", "events", "events_url", "serving_key"]

MAX_JOB_IDS: Final = 100
"""``job=`` ids one stream follows at most (more: a metadata label)."""

_Key = ServingKey  # serving_key: the job index's (the pool's order), not a copy of it


class QueueWatch:
    """Which followed queued jobs' ``queue_position`` may have moved, per batch of records.

    A queued job's position is how many waiting jobs go before it in serving order: it moves
    only when a job before it joins or leaves the waiting jobs. The watch keeps the ids of the
    waiting jobs as it last saw them (the index's, from the connect on) and the serving keys
    of the followed queued jobs, sorted; a batch's jobs whose waiting changed give the first
    key that moved, and only the followed queued jobs after it are returned: a submission
    (which joins at the end) or a running job's progress returns none, the head of the queue
    starting returns them all (each then has a new position to send anyway)."""

    def __init__(self, waiting: Iterable[str]) -> None:
        self.waiting: set[str] = set(waiting)
        self.queued: list[_Key] = []  # the followed jobs the stream says are queued, sorted

    def follow(self, key: _Key) -> None:
        at = bisect.bisect_left(self.queued, key)
        if at == len(self.queued) or self.queued[at] != key:
            self.queued.insert(at, key)

    def forget(self, key: _Key) -> None:
        at = bisect.bisect_left(self.queued, key)
        if at < len(self.queued) and self.queued[at] == key:
            del self.queued[at]

    def moved(self, jobs: Mapping[str, st.Job], touched: Iterable[str]) -> list[str]:
        """The followed queued jobs behind the first of ``touched`` (the job ids of a batch
        of records) whose waiting changed since the last call, in serving order."""
        first: _Key | None = None
        waiting = self.waiting
        for job_id in touched:
            job = jobs.get(job_id)
            now = job is not None and job.status in INDEX_WAITING
            if now == (job_id in waiting):
                continue
            if now:
                waiting.add(job_id)
            else:
                waiting.discard(job_id)
            if job is not None:
                key = serving_key(job)
                first = key if first is None or key < first else first
        if first is None:
            return []
        return [key[2] for key in self.queued[bisect.bisect_right(self.queued, first) :]]


class _Follower:
    """What the stream sent of one job (the per-job stream's locals in ``v2_jobs.events``)."""

    __slots__ = ("job_id", "key", "last_progress", "n", "outputs", "position", "progress", "status")

    def __init__(self, job_id: str, n: int, key: _Key) -> None:
        self.job_id = job_id
        self.n = n  # the order it was followed in: a look goes through jobs in that order
        self.key = key
        self.status = ""
        self.position: int | None = None
        self.progress: Any = None
        self.outputs: set[str] = set()
        self.last_progress = -math.inf

    def snapshot(self, view: Mapping[str, Any]) -> tuple[list[tuple[str, Any]], bool]:
        """The frames on following the job, and whether that was its end."""
        self.status = view["status"]
        self.position = view["queue_position"]
        ended = self.status in TERMINAL_API
        frames: list[tuple[str, Any]] = [("status", status_payload(view, full=ended))]
        self.progress = view["progress"]
        if self.progress is not None:
            # An ended job's terminal status comes last, as on a live stream (a page may
            # stop following a job at its terminal status).
            frames.insert(len(frames) - ended, ("progress", self.progress))
        self.outputs = {o["id"] for o in view["outputs"]}
        self.last_progress = trio.current_time()
        return frames, ended

    def look(
        self, view: Mapping[str, Any], *, last: bool, interval: float
    ) -> tuple[list[tuple[str, Any]], bool, bool]:
        """The frames of a look at the job's ``view``, whether a newer progress is held back
        by the throttle (look again on the next tick), and whether the job is done with:
        ended, or serving stops (``last``: its status as serving stops is sent)."""
        frames: list[tuple[str, Any]] = []
        for out in view["outputs"]:
            if out["id"] not in self.outputs:
                self.outputs.add(out["id"])
                frames.append(("output", out))
        if view["status"] != self.status or view["queue_position"] != self.position:
            self.status, self.position = view["status"], view["queue_position"]
            if self.status in TERMINAL_API:
                frames.append(("status", status_payload(view, full=True)))
                return frames, False, True
            frames.append(("status", status_payload(view)))
        elif last:
            frames.append(("status", status_payload(view)))
        if last:
            return frames, False, True
        progress = view["progress"]
        if progress is not None and progress != self.progress:
            now = trio.current_time()
            if now - self.last_progress < interval:
                return frames, True, False
            self.last_progress, self.progress = now, progress
            frames.append(("progress", progress))
        return frames, False, False


def _frame(name: str, job_id: str, data: Mapping[str, Any]) -> dict[str, Any]:
    payload = {**data, "job_id": job_id} if "job_id" in data else {"job_id": job_id, **data}
    return {"event": name, "data": json.dumps(payload, separators=(",", ":"))}


def _wanted(request: Request) -> tuple[list[str], dict[str, str], bool]:
    """The ``job`` ids (in order, once each) and the ``metadata`` labels asked for, and
    whether jobs that had ended are sent on a first connect (``ended``)."""
    ids: dict[str, None] = {}
    labels: dict[str, str] = {}
    ended = True
    for k, v in request.query_params.multi_items():
        if k in SIGNED_QUERY or k == LAST_EVENT_ID:
            continue  # a signed URL's (the security layer checked them); resume's
        if k == "ended":
            if v not in ("true", "false"):
                raise invalid_request(
                    f"ended={v!r}: say ended=false to leave out the jobs that had ended"
                    " (or ended=true, the default)"
                )
            ended = v == "true"
        elif k == "job":
            if not v:
                raise invalid_request("'job' must name a job: job=<id>")
            ids[v] = None
        elif k.startswith("metadata[") and k.endswith("]"):
            labels[k[len("metadata[") : -1]] = v
        else:
            raise invalid_request(
                f"unknown query parameter {k!r}: follow jobs with job=<id> (repeatable)"
                " and/or metadata[KEY]=VALUE (and ended=false, last_event_id=<id>)"
            )
    if len(ids) > MAX_JOB_IDS:
        raise invalid_request(
            f"{len(ids)} job ids: one stream follows at most {MAX_JOB_IDS} by id; follow more"
            " by a label of theirs (metadata[KEY]=VALUE)"
        )
    check_metadata_filter(labels)
    if not ids and not labels:
        raise invalid_request(
            "say which jobs to follow: job=<id> (repeatable) and/or metadata[KEY]=VALUE"
        )
    return list(ids), labels, ended


async def events_url(request: Request) -> Response:
    """``GET /api/conjure/events/url``: the URL of the stream of these jobs (the same query
    as ``GET /api/conjure/events``, ``ended`` and ``last_event_id`` included), signed when
    serve has a token, so that a page opens it with an ``EventSource``, which sends no
    Authorization: ``{"url", "expires_at"}``. The signature covers the query (a URL for
    some jobs opens no other's) and holds until ``expires_at`` (``url_until``: an hour at
    least), by when a stream must have been opened (an open one goes on); without a token the
    URL is plain and ``expires_at`` null."""
    service = service_of(request)
    ids, labels, ended = _wanted(request)
    for job_id in ids:
        job_view(request, service, job_id)  # 404: as the stream would answer
    query = [("job", job_id) for job_id in ids]
    query += [(f"metadata[{k}]", v) for k, v in labels.items()]
    if not ended:
        query.append(("ended", "false"))
    resume = request.query_params.get(LAST_EVENT_ID)
    if resume is not None:
        query.append((LAST_EVENT_ID, resume))
    signer = url_signer(request.scope)
    if signer is None:
        url = f"{STREAM_PATH}?{urllib.parse.urlencode(query)}"
        return JSONResponse({"url": url, "expires_at": None})
    until = url_until(service.conjure.ctx.now())
    return JSONResponse({"url": signer.sign(STREAM_PATH, until, query), "expires_at": iso(until)})


STREAM_PATH: Final = "/api/conjure/events"


def _matches(have: Mapping[str, str], wanted: Mapping[str, str]) -> bool:
    return all(have.get(k) == v for k, v in wanted.items())


async def events(request: Request) -> Response:
    """``GET /api/conjure/events``: the jobs of ``job`` and ``metadata`` on one SSE stream
    (module docstring); 404 for an unknown or expired ``job``, as the per-job stream, but on
    a resume (``Last-Event-ID``) an expired one is left out (204 once none is left)."""
    service = service_of(request)
    ids, labels, ended = _wanted(request)
    tag = await service.changes.tag()
    resume = last_event_id(request, service.journal.last_seq, tag)
    if resume is None:
        for job_id in ids:
            job_view(request, service, job_id)  # 404
    else:
        # A reconnect: the jobs were there when the stream opened; one that expired since
        # (its terminal status sent before) is left out, not a 404 that would close the
        # EventSource for good on the jobs still running beside it.
        now = service.conjure.ctx.now()
        ids = [job_id for job_id in ids if is_shown(service, job_id, now)]
    if not labels and all(map(await _sent_before(service, resume, ended), ids)):
        # Nothing to send and no job to follow: the stream would end at once, and an
        # EventSource whose stream ends reconnects (for ever); on a 204 it stops.
        return Response(status_code=204)
    check_stream_slot(service, "GET /api/v2/jobs?metadata[KEY]=VALUE")
    service.open_streams += 1
    content = _stream(request, service, ids, labels, (resume, tag), ended)
    return CountedStream(service, content, ping=15, send_timeout=30)


async def _sent_before(service: Service, resume: int | None, ended: bool) -> Callable[[str], bool]:
    """Which jobs a snapshot leaves out: on a resume (``resume``: the client's id), the
    jobs that ended up to it (it had their terminal status); else, with ``ended=false``,
    the jobs that ended; else none. A resume from an id not known (too old): none."""
    changed = await service.changes.since(resume) if resume is not None else None
    if changed is not None:
        return lambda job_id: job_id not in changed and _ended(service, job_id)
    if resume is None and not ended:
        return lambda job_id: _ended(service, job_id)
    return lambda job_id: False


def _ended(service: Service, job_id: str) -> bool:
    """Whether ``job_id``'s API status is terminal (no job view built)."""
    state = service.state
    job = state.jobs.get(job_id)
    svc = state.service
    return job is not None and api_status(job, svc.api_jobs.get(job_id), svc) in TERMINAL_API


CHECKPOINT_EVERY: Final = 15.0
"""Seconds between two id-only frames of a stream that sent nothing while the log went on
(the keep-alive pings are comments, which carry no id): a client resumes from near the log's
end, not from the id of its last job's frame, maybe days of records back (the log is read
back from it then, at most ``resume.RESUME_WINDOW`` records)."""


async def _stream(
    request: Request,
    service: Service,
    ids: list[str],
    labels: dict[str, str],
    place: tuple[int | None, str],
    ended: bool,
) -> AsyncIterator[dict[str, Any]]:
    """The stream; ``place``: the seq the client has (None: none, or not one of this log)
    and the log's tag (``resume.stamp``), ``ended``: whether a first connect's snapshot has
    the jobs that ended."""
    resume, tag = place
    interval = service.settings.progress_interval
    followed: dict[str, _Follower] = {}
    watch = QueueWatch(service.index.waiting())
    held: set[str] = set()  # jobs whose newer progress the throttle holds back
    count = 0

    def done(job_id: str) -> None:
        follower = followed.pop(job_id, None)
        if follower is not None:
            watch.forget(follower.key)
        held.discard(job_id)

    def follow(job_id: str) -> list[dict[str, Any]]:
        """Follow ``job_id``: the frames of its snapshot (none if it is not served)."""
        nonlocal count
        job = service.state.jobs.get(job_id)
        if job is None or job_id in followed:
            return []
        try:
            view = job_view(request, service, job_id)
        except ApiError:
            return []  # expired meanwhile
        count += 1
        follower = _Follower(job_id, count, serving_key(job))
        frames, ended = follower.snapshot(view)
        if not ended:
            followed[job_id] = follower
            if follower.status == "queued":
                watch.follow(follower.key)
        return [_frame(name, job_id, data) for name, data in frames]

    async with service.journal.subscribe(max_buffer=math.inf) as records:
        # Subscribed first, then the snapshot: a record after it is seen by the loop. A job
        # accepted up to ``scanned`` is in the snapshot already; one that ended after the
        # client's id, before ``scanned``, is in ``sent_before``'s changes.
        sent_before = await _sent_before(service, resume, ended)
        scanned = service.journal.last_seq
        wanted = list(ids)
        if labels:
            known = set(ids)
            wanted += [
                job_id
                for job_id, api in service.state.service.api_jobs.items()
                if job_id not in known and _matches(api.labels, labels)
            ]
        # Each wake's frames go out together, with their ids (resume.stamp): ``sent`` the
        # id the client has, ``seen`` the seq of the last record the stream took.
        out = [frame for job_id in wanted if not sent_before(job_id) for frame in follow(job_id)]
        if not out:  # the retry (and where the client is) on a frame of its own
            out.append({})
        out[0]["retry"] = retry_ms(service)
        seen = scanned
        for frame in stamp(out, resume or 0, seen, tag):
            yield frame
        sent = seen
        checkpoint = trio.current_time()
        while labels or followed:
            out = []
            touched: dict[str, None] = {}
            new: list[str] = []
            stopped = False
            with trio.move_on_after(interval):
                first = await records.receive()
                # The rest of the commit at once: one wake-up per commit, not per record.
                for record in (first, *take_ready(records)):
                    seen = record.seq
                    event = record.event
                    about: str | None = getattr(event, "job_id", None)
                    if about is not None:
                        touched[about] = None
                        if (
                            labels
                            and isinstance(event, se.ApiJobAccepted)
                            and record.seq > scanned
                            and _matches(event.labels, labels)
                        ):
                            new.append(about)
                    elif isinstance(event, ev.SystemStopped):
                        stopped = True
            # Serving stops (after the drain and the machines' stop): one last look at each
            # job, which ends the stream with the status each is left in (as the per-job one).
            last = service.stopping.is_set()
            for job_id in new:
                out += follow(job_id)
            looked = set(new)
            dirty = [j for j in touched if j in followed and j not in looked]
            for job_id in watch.moved(service.state.jobs, touched):
                follower = followed[job_id]
                if job_id in touched or job_id in held or last or stopped:
                    continue  # looked at whole below
                job = service.state.jobs.get(job_id)
                position = queue_position_of(service, job) if job is not None else None
                if position is not None and position != follower.position:
                    follower.position = position
                    out.append(
                        _frame(
                            "status",
                            job_id,
                            {"status": follower.status, "queue_position": position},
                        )
                    )
            if last or stopped:
                look: Iterable[str] = list(followed)
            else:
                look = sorted({*dirty, *held}, key=lambda j: followed[j].n)
            for job_id in look:
                follower = followed[job_id]
                try:
                    view = job_view(request, service, job_id)
                except ApiError:
                    done(job_id)  # expired meanwhile
                    continue
                was_queued = follower.status == "queued"
                frames, holding, ended = follower.look(view, last=last, interval=interval)
                out += [_frame(name, job_id, data) for name, data in frames]
                if ended:
                    done(job_id)
                    continue
                if holding:
                    held.add(job_id)
                else:
                    held.discard(job_id)
                if was_queued != (follower.status == "queued"):
                    (watch.follow if follower.status == "queued" else watch.forget)(follower.key)
            now = trio.current_time()
            if not out and seen > sent and now - checkpoint >= CHECKPOINT_EVERY:
                out.append({})  # an id-only frame: the client's place moves on (no event)
            for frame in stamp(out, sent, seen, tag):
                yield frame
            if out:
                sent, checkpoint = seen, now
            if last:
                return
