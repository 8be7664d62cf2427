"""Comfy API v2 jobs: submit, get, list, the job's workflow, cancel, and the SSE stream.

Our job statuses map onto the API's: pending/queued/interrupted -> ``queued``;
running/retrying -> ``running``; succeeded -> ``succeeded`` once every output is an asset
(until then ``running``: the outputs must be downloadable when the client sees success); a
succeeded job whose outputs could not all be stored (the blob store refused their bytes on
every try, or a file went: the AssetActor logs it, ``ApiJobOutputsNotStored``) is ``failed``
with the error ``outputs_not_stored``, for good (a restart reads it so: a client never sees a
success that lacks outputs, nor a failure turn into a success); failed -> ``failed``;
cancelled -> ``canceled``; an active job whose cancel was requested -> ``canceling``. A job
past its retention is gone (404).
"""

from __future__ import annotations

import ast
import json
import math
import os
import re
from collections.abc import AsyncIterator, Collection, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import msgspec
import trio
from sse_starlette.sse import EventSourceResponse
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from conjure_actors.actors.assets import RequestCancel
from conjure_actors.actors.cost import BUDGET_EXCEEDED
from conjure_actors.domain import events as ev
from conjure_actors.domain import service_events as se
from conjure_actors.domain import state as st
from conjure_actors.domain.errors import WorkflowError
from conjure_actors.domain.preflight import (
    MAX_UPLOAD_BYTES,
    check_values,
    image_problem,
)
from conjure_actors.domain.workflow import (
    IMAGE_LOADER_CLASSES,
    Workflow,
    apply_bindings,
    show,
    validate_graph,
)
from conjure_actors.errors import UsageError
from conjure_actors.service.app import CLIENT_CANCEL, KeyReusedError, Service, key_reused
from conjure_actors.service.errors import ApiError, invalid_request, not_found, too_deep
from conjure_actors.service.jobindex import ENDED_HORIZON, take_ready
from conjure_actors.service.responses import JSONResponse
from conjure_actors.service.resume import last_event_id, stamp
from conjure_actors.service.v2_assets import content_url, is_live, signed_path, url_until

TERMINAL_API: frozenset[str] = frozenset({"succeeded", "failed", "canceled", "expired"})
MAX_LIST: int = 500
DEFAULT_LIST: int = 50
_RESERVED = ("webhook_url", "inputs")


def iso(ts: float | None) -> str | None:
    """An epoch time as RFC 3339 UTC (``...Z``)."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def service_of(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


# ----------------------------------------------------------------------------- the view


OUTPUTS_NOT_STORED: Final = "outputs_not_stored"
"""The error code of a job that ran to its end but whose outputs could not all be stored."""


def _unstored(job: st.Job, svc: se.ServiceState) -> int:
    """How many of a job's outputs are not assets (yet)."""
    done = svc.job_outputs.get(job.job_id, {})
    return sum(1 for o in job.outputs if o.path not in done)


def api_status(job: st.Job, api: se.ApiJob | None, svc: se.ServiceState) -> str:
    """The API status of ``job`` (see the module docstring)."""
    if job.status == st.SUCCEEDED:
        if job.job_id in svc.outputs_not_stored:
            return "failed"
        return "running" if _unstored(job, svc) else "succeeded"
    if job.status == st.FAILED:
        return "failed"
    if job.status == st.CANCELLED:
        return "canceled"
    if api is not None and api.cancel_requested_at is not None:
        return "canceling"
    if job.status in (st.RUNNING, st.RETRYING):
        return "running"
    return "queued"


def queue_position_of(service: Service, job: st.Job) -> int:
    """A queued job's place in line: 1 for the next job to run, then 2... (as the peer
    comfy-api-proxy counts: how many waiting jobs go before it, plus one; in the order the
    pool serves them, ``state.queue_key``: priority first, then submission order, a job
    queued again keeping its place). 1-based so that a page's ``if (job.queue_position)``
    and its "#N in line" hold for the next job too."""
    return service.index.position(job) + 1


def progress_of(service: Service, job: st.Job) -> dict[str, Any] | None:
    """The v2 ``Progress`` of ``job`` (see :func:`job_progress`)."""
    return job_progress(job, service.node_classes(job.workflow_sha256))


WAITING: Final = frozenset({st.PENDING, st.QUEUED, st.INTERRUPTED})
"""Job statuses with no machine running the job (the API's ``queued``)."""


def job_progress(job: st.Job, classes: Mapping[str, str]) -> dict[str, Any] | None:
    """The v2 ``Progress`` of ``job`` (``classes``: its graph's ``node id -> class_type``).

    A job no machine ever ran has none (null): waiting for its first machine, or ended
    without one (canceled while queued, failed ``no_machine`` or ``not_resumable``: it showed
    0 % of nodes it never ran, QA10 F4). A job queued again after an
    attempt ran (its machine was lost, the server restarted) shows none of that attempt's
    progress: value 0, and ``message`` says why it waits again (a page shows "restarting"
    rather than a stale bar, then a bar that drops to 0), until its next attempt's prompt
    is sent (value 0, "starting again"). While an attempt runs, the value
    never goes down (for ComfyUI's event order: a node's steps count up) and a node counts
    done once it executed, was cached, or another node started after it; the node an attempt
    stopped in (interrupted, failed, its machine lost) is never counted done."""
    if job.attempt == 0 and job.prompt_id is None and not job.nodes:  # never started
        return None
    total = max(len(classes), 1)
    if job.status in WAITING:
        if job.attempt == 0:
            return None
        return _progress(0.0, 0, total, message=_waiting_again(job))
    if job.prompt_id is None and job.status not in st.TERMINAL_STATUSES:
        if job.attempt <= 1:
            return None
        # A new attempt on its machine, its prompt not sent yet: the wait's message is over.
        return _progress(0.0, 0, total, message=f"starting again (attempt {job.attempt})")
    nodes = job.nodes
    current = job.current_node
    finished = job.status == st.SUCCEEDED or job.execution == "succeeded"
    # ComfyUI runs one node at a time and says "executed" only of nodes with UI output: a
    # node that started has finished once another one started after it. With no current
    # node, the last one to start is where the attempt is (between two nodes, it executed)
    # or where it stopped (interrupted, failed, lost): not done unless the prompt finished.
    last = current
    if last is None and not finished and nodes:
        last = next(reversed(nodes))
    done = 0
    for node_id, n in nodes.items():
        if n.status in (st.NODE_EXECUTED, st.NODE_CACHED) or (
            n.status == st.NODE_RUNNING and node_id != last
        ):
            done += 1
    if job.status == st.SUCCEEDED:
        done = total
    done = min(done, total)
    fraction = 0.0
    node = nodes.get(last) if last is not None else None
    if node is not None and node.status not in (st.NODE_EXECUTED, st.NODE_CACHED) and node.max > 0:
        fraction = min(max(node.value / node.max, 0.0), 1.0)
    step: int | None = None
    steps: int | None = None
    if current is not None and node is not None and node.max > 0:
        step, steps = int(node.value), int(node.max)
    value = min((done + (fraction if done < total else 0.0)) / total, 1.0)
    cls = classes.get(current) if current is not None else None
    message = None
    if cls is not None:
        message = f"{cls} {step}/{steps}" if step is not None else cls
    return _progress(value, done, total, current, cls, step, steps, message)


def _progress(
    value: float,
    done: int,
    total: int,
    current: str | None = None,
    cls: str | None = None,
    step: int | None = None,
    steps: int | None = None,
    message: str | None = None,
) -> dict[str, Any]:
    return {
        "value": value,
        "nodes_done": done,
        "nodes_total": total,
        "current_node": current,
        "current_node_class": cls,
        "step": step,
        "steps": steps,
        "message": message,
    }


def _waiting_again(job: st.Job) -> str:
    """Why a job that ran waits for a machine again, for a client (the progress's
    ``message``): the log's reason names machines and prompts, which a client never sees."""
    reason = job.queue_reason or ""
    if job.status == st.INTERRUPTED:
        why = "the server stopped while this job ran"
    elif reason == "resumed":
        why = "the server restarted while this job ran"
    elif reason.startswith("server ") and " restarted" in reason:
        why = "the ComfyUI running this job restarted and lost it"
    elif reason.endswith(" lost") or "no client" in reason:
        why = "the machine running this job was lost"
    else:
        why = "its attempt stopped"
    return f"{why}: it waits for a machine to run it again (attempt {job.attempt + 1})"


def _output_type(kind: str | None, content_type: str) -> str:
    major = content_type.split("/", 1)[0]
    if kind == "image" or major == "image":
        return "image"
    if major in ("video", "audio"):
        return major
    if major == "text":
        return "text"
    return "file"


def output_view(request: Request, record: se.AssetRecord) -> dict[str, Any]:
    url, expires = content_url(request, record)
    return {
        "node_id": record.node_id or "",
        "name": record.file_path or record.asset_id,
        "type": _output_type(record.kind, record.content_type),
        "content_type": record.content_type,
        "size_bytes": record.size,
        "id": record.asset_id,
        "hash": record.hash,
        "url": url,
        "url_expires_at": expires,
        "job_id": record.job_id,
    }


def _error_view(
    service: Service, job: st.Job, api: Any = None, status: str | None = None
) -> dict[str, Any] | None:
    if job.status == st.CANCELLED:
        return _cancel_error(job, api)
    if job.status == st.SUCCEEDED and status == "failed":
        return _unstored_error(service, job)
    if job.status != st.FAILED or job.error is None:
        return None
    err = job.error
    code = "node_execution_error" if err.node_id is not None else _snake(err.error_type)
    if err.error_type == "BudgetRefused":  # no machine: the budget refused its launch
        code = "insufficient_credits"  # as a submission the budget refuses, and its cancel
    return {
        "code": code,
        "message": _without_server_paths(service, err.message),
        "node_id": err.node_id,
        "class_type": err.node_type,
        "traceback": None,
    }


def _unstored_error(service: Service, job: st.Job) -> dict[str, Any]:
    """The error of a job that ran but whose outputs could not all be stored as assets: how
    many, why, and where the files are (on the server, for its operator: a client cannot
    fetch them). All of it from the log (``ApiJobOutputsNotStored``): a restart reads the
    same."""
    fact = service.state.service.outputs_not_stored[job.job_id]
    return {
        "code": OUTPUTS_NOT_STORED,
        "message": f"the job ran, but {len(fact.paths)} of its {len(job.outputs)} outputs"
        f" could not be stored ({fact.reason}); their files are on the server, in its output"
        f" folder (serve --out) under {job.job_id}/, until the job expires: ask its operator,"
        " or submit the job again once the server is fixed",
        "node_id": None,
        "class_type": None,
        "traceback": None,
    }


def _cancel_error(job: st.Job, api: Any) -> dict[str, Any] | None:
    """A canceled job's ``error``: None when the client asked for the cancel (as the
    contract's cancel leaves it), else why the server cancelled it, so that a client tells
    it from its own: the budget was spent (``insufficient_credits``, the code a submission
    refused for it gets) or another reason of the server's (``canceled``)."""
    reason = job.cancel_reason or ""
    if reason == CLIENT_CANCEL or (api is not None and api.cancel_requested_at is not None):
        return None
    if reason == BUDGET_EXCEEDED:
        code = "insufficient_credits"
        message = (
            "canceled by the server: the budget was spent (budget exceeded): raise or lift it"
            " (PUT /api/conjure/budget), then submit again"
        )
    else:
        code, message = "canceled", f"canceled by the server: {reason or 'no reason logged'}"
    return {
        "code": code,
        "message": message,
        "node_id": None,
        "class_type": None,
        "traceback": None,
    }


def _without_server_paths(service: Service, text: str) -> str:
    """``text`` with this server's folders (the log's, which holds the blobs; the output
    folder; the working and home folders) named instead of spelled out: a job's error may
    quote a local file (an OSError of its actor), and no path of the server reaches a
    client. Relative paths stay (they say nothing of the machine)."""
    if "/" not in text and "\\" not in text:
        return text
    folders = (
        (service.conjure.ctx.out_dir, "<out>"),
        (service.blobs.root.parent.parent, "<data>"),
        (Path.cwd(), "<cwd>"),
        (Path(os.path.expanduser("~")), "~"),
    )
    named: dict[str, str] = {}
    for folder, name in folders:
        for form in (Path(folder), Path(folder).resolve()):
            if form.is_absolute() and len(form.parts) > 1:  # never "/" itself
                named.setdefault(str(form), name)
    for spelled in sorted(named, key=len, reverse=True):
        text = text.replace(spelled, named[spelled])
    return text


def _snake(name: str) -> str:
    out = []
    for i, ch in enumerate(name):
        if ch.isupper() and i and not name[i - 1].isupper():
            out.append("_")
        out.append(ch.lower())
    return "".join(out) or "execution_error"


def past_retention(job: st.Job, api: Any, now: float) -> bool:
    """Whether the API no longer serves a job: its expiry is logged, or its end is logged
    (its retention runs from then) and its ``expires_at`` passed (the AssetActor's sweep,
    every ``SWEEP_INTERVAL``, logs that later: reads do not wait for it). A job whose end
    is not logged yet is kept, as the sweep keeps it, however long it waited."""
    if api.expired:
        return True
    return bool(api.ended and api.expires_at <= now and job.status in st.TERMINAL_STATUSES)


def job_expires_at(job: st.Job, api: Any, *, keep: float, now: float) -> float:
    """When ``job`` expires: its logged deadline once its end is logged; an ended job whose
    end is not logged yet (a moment) what that record will say (its end + ``keep``:
    ``service_events.expiry_moves``), not a "now"-based figure that its terminal status
    frame, sent once, would carry for good (QA); a job still going at least ``keep`` from
    now."""
    if api is None:
        return float(job.submitted_at + keep)
    if api.ended:
        return float(api.expires_at)
    if job.status in se.ENDED and job.finished_at is not None:
        return float(max(api.expires_at, job.finished_at + keep))
    return float(max(api.expires_at, now + keep))


def is_shown(service: Service, job_id: str, now: float) -> bool:
    """Whether the API shows ``job_id``: known, and not past its retention."""
    job = service.state.jobs.get(job_id)
    api = service.state.service.api_jobs.get(job_id)
    return job is not None and (api is None or not past_retention(job, api, now))


def job_view(request: Request, service: Service, job_id: str) -> dict[str, Any]:
    """The v2 ``Job`` object of ``job_id`` (``ApiError`` 404 when unknown or expired)."""
    now = service.conjure.ctx.now()
    if not is_shown(service, job_id, now):
        raise not_found(f"no job {job_id}")
    state = service.state
    job = state.jobs[job_id]
    svc = state.service
    api = svc.api_jobs.get(job_id)
    status = api_status(job, api, svc)
    outputs = [
        output_view(request, svc.assets[asset_id])
        for asset_id in svc.job_outputs.get(job_id, {}).values()
        if asset_id in svc.assets and is_live(svc.assets[asset_id], now)
    ]
    expires = job_expires_at(job, api, keep=service.settings.retention.jobs, now=now)
    # Running since its machine took it (inputs uploaded, then ComfyUI's own queue, then
    # the execution): a job said "running" has a start. The metrics time the execution
    # itself once ComfyUI has said it began.
    started = job.started_at if status != "queued" else None
    began = started
    if started is not None and job.execution_started_at is not None:
        began = job.execution_started_at
    finished = job.finished_at if status in TERMINAL_API else None
    queue_ms = None
    if began is not None:
        queue_ms = int((began - job.submitted_at) * 1000)
    execution_ms = None
    if began is not None and finished is not None:
        execution_ms = int((finished - began) * 1000)
    base = f"/api/v2/jobs/{job_id}"
    return {
        "id": job_id,
        "status": status,
        "created_at": iso(job.submitted_at),
        "started_at": iso(started),
        "completed_at": iso(finished),
        "expires_at": iso(expires),
        "queue_position": queue_position_of(service, job) if status == "queued" else None,
        "progress": progress_of(service, job),
        "outputs": outputs,
        "error": _error_view(service, job, api, status),
        "metrics": {"queue_ms": queue_ms, "execution_ms": execution_ms},
        "urls": {
            "self": base,
            # With a token, signed (url_until): an EventSource sends no Authorization.
            "events": signed_path(request, f"{base}/events", url_until(now)),
            "cancel": f"{base}/cancel",
        },
        "metadata": dict(api.labels) if api is not None else {},
    }


# ----------------------------------------------------------------------------- submit


_decode = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode


async def _json_body(request: Request) -> Any:
    raw = await request.body()
    try:
        # strict JSON (no NaN/Infinity), ~3x faster than json.loads; a UTF-8 BOM is
        # ignored (RFC 8259 allows it; json.loads did, as the other JSON endpoints do)
        return _decode(raw.removeprefix(b"\xef\xbb\xbf"))
    except msgspec.DecodeError:
        raise invalid_request("the body is not JSON: send a JSON object") from None
    except RecursionError:  # msgspec's (and json's) word for arrays or objects nested deeply
        raise too_deep() from None


CHECKED_GRAPHS: int = 64
"""Validated graphs a service remembers (the most recent ones)."""
CHECKED_GRAPH_BYTES: int = 64 * 1024
"""Larger graphs are validated every time (a key that large costs more than it saves)."""


def checked_workflow(
    service: Service, graph: dict[str, Any], resolved: Collection[str] = ()
) -> Workflow:
    """``graph`` checked against the service's catalogue as ``run`` checks it before a
    launch (classes, links, required inputs, and every literal's type, range and choices:
    the pre-flight ComfyUI's own validation would otherwise do on a paid machine), as a
    :class:`Workflow` whose hash and roles are computed once; 422 ``invalid_workflow``.
    ``resolved``: the ``"NODE.INPUT"`` an asset was put in (a file name the catalogue's
    choices cannot list: not checked as a value). A front end submits the same few graphs
    again and again: one whose JSON encoding (and catalogue) was checked before reuses
    that Workflow (~45 us of validation and roles per submission saved; equal encodings
    are equal JSON values, so the answer is the same)."""
    catalog = service.catalog
    key = _encode(graph)
    if resolved:
        key += b"\0" + "\0".join(sorted(resolved)).encode()
    cache = service.checked_graphs
    found = cache.get(key)
    if found is not None and found[0] is catalog:
        return found[1]
    problems = validate_graph(graph, catalog, strict=catalog is not None)
    if not problems:
        problems = check_values(_without(graph, resolved), catalog)
        # The inputs an asset was given to are checked too, but for a combo's choices (an
        # upload's file name is not in the catalogue's list): an asset where only a link
        # will do ran to the machine's own refusal, after a launch (QA F11).
        problems += [
            p
            for p in check_values(_only(graph, resolved), catalog, choices=False)
            if p not in problems
        ]
    if problems:
        raise invalid_workflow(problems, graph)
    workflow = Workflow(graph, "api")
    workflow.roles()  # computed now, once for every submission of the graph
    if len(key) <= CHECKED_GRAPH_BYTES:
        if key not in cache and len(cache) >= CHECKED_GRAPHS:
            del cache[next(iter(cache))]  # the oldest
        cache[key] = (catalog, workflow)
    return workflow


def _without(graph: dict[str, Any], resolved: Collection[str]) -> dict[str, Any]:
    """``graph`` without the inputs in ``resolved`` (``"NODE.INPUT"``)."""
    if not resolved:
        return graph
    out = dict(graph)
    for binding in resolved:
        nid, _, name = binding.rpartition(".")
        node = out[nid]
        out[nid] = {**node, "inputs": {k: v for k, v in node["inputs"].items() if k != name}}
    return out


def _only(graph: dict[str, Any], resolved: Collection[str]) -> dict[str, Any]:
    """The nodes of ``graph`` with an input in ``resolved``, with those inputs only."""
    out: dict[str, Any] = {}
    for binding in resolved:
        nid, _, name = binding.rpartition(".")
        node = graph[nid]
        kept = out.get(nid, {}).get("inputs", {})
        out[nid] = {**node, "inputs": {**kept, name: node["inputs"][name]}}
    return out


IMAGE_CHECKS: int = 1024
"""Assets whose image check a service remembers (by content hash: bytes never change)."""


def _takes_an_image(service: Service, node: Mapping[str, Any], name: str) -> bool:
    """Whether input ``name`` of ``node`` is an image upload (LoadImage's ``image``)."""
    cls = node.get("class_type")
    catalog = service.catalog
    spec = catalog.get(cls) if catalog is not None and isinstance(cls, str) else None
    config = spec.configs.get(name) if spec is not None else None
    if config is not None:
        return config.image_upload
    return cls in IMAGE_LOADER_CLASSES and name == "image"


IMAGE_DECODES: Final = 2
"""Input images checked (decoded) at once, in worker threads: each may take a few hundred
MB at its peak (``DECODE_PIXELS``), so many uploads at once must not all decode together."""

_DECODES: Final = trio.lowlevel.RunVar[trio.CapacityLimiter]("image_decodes")


def image_decodes() -> trio.CapacityLimiter:
    """The run's limiter of image checks (:data:`IMAGE_DECODES` at once)."""
    try:
        return _DECODES.get()
    except LookupError:
        limiter = trio.CapacityLimiter(IMAGE_DECODES)
        _DECODES.set(limiter)
        return limiter


def _read_image_problem(path: Path) -> str | None:
    """:func:`image_problem` of a stored blob (its pixels decoded, as ``run --image`` is
    checked: a header that parses is not enough); a blob over the upload limit is not
    read. CPU and disk: called in a worker thread."""
    with path.open("rb") as blob:
        size = os.fstat(blob.fileno()).st_size
        if size > MAX_UPLOAD_BYTES:
            return f"{size} bytes is over ComfyUI's upload limit of {MAX_UPLOAD_BYTES} bytes"
        data = blob.read()
    return image_problem(data)  # one rule with run --image: what Pillow (LoadImage) decodes


def refuse_damaged_inputs(service: Service, inputs: Mapping[str, str]) -> None:
    """An input asset whose stored bytes are gone, cut, grown, or found changed
    (``Blobs.holds``: a stat, and what reads found) is 422 ``missing_asset`` before its job
    takes a paid machine: its image check would blame the workflow ("does not decode"), and
    a change that still decodes would run the job on the wrong bytes. Uploading the same
    bytes again repairs it."""
    assets = service.state.service.assets
    for binding, asset_id in inputs.items():
        record = assets.get(asset_id)
        if record is None:  # deleted meanwhile: the submission says missing_asset
            continue
        if not service.blobs.holds(record.hash, record.size):
            nid, _, name = binding.rpartition(".")
            raise ApiError(
                422,
                "missing_asset",
                f"node {nid} input {name!r}: the stored bytes of asset {asset_id} are gone or"
                " damaged on the server's disk: upload the same file again (it repairs"
                " them), then submit",
                details={"node_id": nid, "input": name},
            )


async def check_input_images(
    service: Service, graph: Mapping[str, Any], inputs: Mapping[str, str]
) -> None:
    """The assets put in an image-upload input (LoadImage's ``image``) must be images
    ComfyUI's LoadImage reads, as ``run --image`` is checked (422 ``invalid_workflow``
    naming the node and input). An asset whose bytes are gone is left to the submission
    (422 ``missing_asset``)."""
    assets = service.state.service.assets
    cache = service.image_checks
    problems: list[str] = []
    for binding, asset_id in inputs.items():
        nid, _, name = binding.rpartition(".")
        node = graph[nid]
        if not _takes_an_image(service, node, name):
            continue
        record = assets.get(asset_id)
        if record is None:  # deleted meanwhile (an image check awaited): missing_asset later
            continue
        digest = record.hash
        if digest in cache:
            problem = cache[digest]
        else:
            path = service.blobs.path_of(digest)
            if path is None:  # pragma: no cover - recorded hashes are well formed
                continue
            try:
                problem = await trio.to_thread.run_sync(
                    _read_image_problem, path, limiter=image_decodes()
                )
            except OSError:
                continue
            if len(cache) >= IMAGE_CHECKS:
                del cache[next(iter(cache))]  # the oldest
            cache[digest] = problem
        if problem is not None:
            cls = show(str(node.get("class_type")))
            problems.append(f"node {show(nid)} ({cls}) input {name!r}: asset {asset_id}: {problem}")
    if problems:
        raise invalid_workflow(problems, graph)


MAX_LABELS: int = 16


def job_labels(raw: Any) -> dict[str, str]:
    """The job's ``metadata`` labels: at most 16 string pairs (422 ``metadata_invalid``)."""
    if raw is None:
        return {}

    def refuse(message: str) -> ApiError:
        return ApiError(422, "metadata_invalid", message)

    if not isinstance(raw, dict):
        raise refuse("'metadata' must be an object of string labels")
    if len(raw) > MAX_LABELS:
        raise refuse(f"'metadata' has {len(raw)} pairs: at most {MAX_LABELS}")
    for k, v in raw.items():
        if not isinstance(v, str):
            raise refuse(f"'metadata' label {k!r}: the value must be a string")
        if not 0 < len(k) <= 64 or len(v) > 512:
            raise refuse(f"'metadata' label {k[:64]!r}: keys 1-64 and values 0-512 characters")
    return dict(raw)


def _check_extra_data(raw: Any) -> dict[str, Any] | None:
    """The submission's ``extra_data`` (only ``api_key_comfy_org``); messages never echo
    its values (a credential)."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise invalid_request("'extra_data' must be an object")
    unknown = sorted(k for k in raw if k != "api_key_comfy_org")
    if unknown:
        raise invalid_request(f"'extra_data' accepts only api_key_comfy_org, not {unknown}")
    if not isinstance(raw.get("api_key_comfy_org", ""), str):
        raise invalid_request("'extra_data.api_key_comfy_org' must be a string")
    return dict(raw)


_QUOTED = r"'(?:[^'\\]|\\.)*'" "|" r'"(?:[^"\\]|\\.)*"'
_PROBLEM_OF = re.compile(
    rf"^node (?P<node>{_QUOTED}|.+?)(?=:| \(| input |$)(?: \(.*?\))?"
    rf"(?: input (?P<input>{_QUOTED}))?"
)
"""``node ID (CLASS) input NAME: ...``: an id or name that is not plain printable text is
shown quoted like ``repr`` (:func:`~conjure_actors.domain.workflow.show`); a plain one
may hold spaces (it ends where the class, the input or the colon begins)."""


def _unquoted(text: str) -> str | None:
    if text[:1] not in ("'", '"'):
        return text
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):  # pragma: no cover - the pattern matches a repr
        return None
    return value if isinstance(value, str) else None


def _node_of(line: str, shown: list[tuple[str, str]]) -> str | None:
    """The graph's node id a ``node ID ...`` line names (the longest shown id that ends
    where the class, the input or the colon begins): ids like ``57:35`` (a subgraph's
    inner node) or ``a (copy)`` are not cut at their first colon or parenthesis."""
    rest = line[5:]
    for text, nid in shown:
        if rest.startswith(text) and rest[len(text) : len(text) + 1] in ("", " ", ":"):
            return nid
    return None


def _node_errors(
    problems: tuple[str, ...] | list[str], node_ids: Collection[str] = ()
) -> dict[str, list[dict[str, str]]]:
    """Per-node details from our problem lines (``node 12 (Class) input 'x': ...``), in
    the spec's shape: ``{node id: [{"field": input, "reason": line}]}`` (``field`` when
    the line names an input; the node id as the graph has it, even when shown quoted)."""
    out: dict[str, list[dict[str, str]]] = {}
    shown = sorted(((show(n), n) for n in node_ids), key=lambda item: -len(item[0]))
    for line in problems:
        found = _PROBLEM_OF.match(line)
        if found is None:
            continue
        nid = _node_of(line, shown) if shown else None
        if nid is None:
            nid = _unquoted(found.group("node"))
        if nid is None:  # pragma: no cover - the pattern matches a repr
            continue
        rest = line[5 + len(show(nid)) :]
        named = re.search(rf" input (?P<input>{_QUOTED})", rest.split(": ", 1)[0] + ":")
        name = named.group("input") if named else None
        field = _unquoted(name) if name is not None else None
        entry = {"reason": line} if field is None else {"field": field, "reason": line}
        out.setdefault(nid, []).append(entry)
    return out


def invalid_workflow(
    problems: tuple[str, ...] | list[str], node_ids: Collection[str] = ()
) -> ApiError:
    """422 ``invalid_workflow``: the first problem (and how many more) as the message,
    ``details.node_errors`` per node and every line in ``details.problems``, each once (a
    check of the graph and one of its bindings may find the same problem: it said "(and 1
    more)" of itself, QA10 F5)."""
    problems = list(dict.fromkeys(problems))
    first = problems[0] if problems else "invalid workflow"
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return ApiError(
        422,
        "invalid_workflow",
        f"{first}{more}",
        details={"node_errors": _node_errors(problems, node_ids), "problems": list(problems)},
    )


def resolve_assets(
    service: Service, graph: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, str]]:
    """Replace every ``core/ASSET`` reference (anywhere) and every plain filename in a
    LoadImage ``image`` input by the asset's file name; returns the graph and
    ``{"NODE.INPUT": asset_id}``. Unknown or malformed -> 422 ``missing_asset``."""
    assets = service.state.service.assets
    now = service.conjure.ctx.now()
    by_path: dict[str, str] | None = None  # built on the first plain filename only
    resolved: dict[str, str] = {}
    out: dict[str, Any] = {}
    for nid, node in graph.items():
        if not isinstance(node, dict) or not isinstance(node.get("inputs"), dict):
            out[nid] = node
            continue
        inputs = dict(node["inputs"])
        loader = node.get("class_type") in IMAGE_LOADER_CLASSES
        for name, value in node["inputs"].items():
            asset_id: str | None = None
            if isinstance(value, dict) and value.get("__type") == "core/ASSET":
                info = value.get("info")
                ref = info.get("id") if isinstance(info, dict) else None
                if not isinstance(ref, str) or not ref:
                    raise ApiError(
                        422,
                        "missing_asset",
                        f"node {nid} input {name!r}: the core/ASSET reference has no"
                        ' info.id: send {"__type": "core/ASSET", "info": {"id": "<asset id>"}}'
                        " with the id an upload answered",
                        details={"node_id": nid, "input": name},
                    )
                if ref not in assets or not is_live(assets[ref], now):
                    raise ApiError(
                        422,
                        "missing_asset",
                        f"node {nid} input {name!r}: no asset {ref!r}: upload it first",
                        details={"node_id": nid, "input": name},
                    )
                asset_id = ref
            elif loader and name == "image" and isinstance(value, str):
                if by_path is None:
                    by_path = {
                        record.file_path: record.asset_id  # the latest wins
                        for record in assets.values()
                        if record.file_path is not None and is_live(record, now)
                    }
                found = by_path.get(value)
                if found is None:
                    raise ApiError(
                        422,
                        "missing_asset",
                        f"node {nid} input 'image': no asset named {value!r}: upload it first",
                        details={"node_id": nid, "input": name},
                    )
                asset_id = found
            if asset_id is not None:
                if "." in name:
                    # Bindings are "NODE.INPUT", split at the last dot (node ids may hold
                    # dots): an input whose name holds one cannot be bound (it was a 500).
                    raise invalid_workflow(
                        [
                            f"node {show(nid)} ({show(str(node.get('class_type')))}) input"
                            f" {name!r}: an asset cannot be given to an input whose name holds"
                            " a dot: give it to the node's image input, or rename the input"
                        ],
                        graph,
                    )
                record = assets[asset_id]
                inputs[name] = record.file_path or f"{asset_id}.png"
                resolved[f"{nid}.{name}"] = asset_id
        out[nid] = {**node, "inputs": inputs}
    return out, resolved


async def submit(request: Request) -> Response:
    service = service_of(request)
    body = await _json_body(request)
    if not isinstance(body, dict):
        raise invalid_request("the body must be a JSON object with a 'workflow'")
    for field in _RESERVED:
        if field in body:
            raise invalid_request(f"'{field}' is reserved and not accepted yet")
    # Other fields are left out, not refused: the contract's body is an open object
    # ("additive changes only within v2"), so a newer client's optional field is valid (a
    # 400 refused schema-valid requests). The reserved ones above are refused: a client that
    # sends them relies on what they do.
    graph = body.get("workflow")
    if not isinstance(graph, dict):
        raise invalid_request("'workflow' is required: an API-format graph (a JSON object)")
    extra_data = _check_extra_data(body.get("extra_data"))
    labels = job_labels(body.get("metadata"))
    if isinstance(graph.get("nodes"), list) and isinstance(graph.get("links"), list):
        raise ApiError(
            422,
            "workflow_format_ui",
            "this is a UI-format workflow (nodes/links): export it with Save (API) instead",
        )
    graph, inputs = resolve_assets(service, graph)
    workflow = checked_workflow(service, graph, inputs)
    refuse_damaged_inputs(service, inputs)
    await check_input_images(service, graph, inputs)
    # The input-image node's asset goes as the job's image; every other resolved input as
    # an extra input file: all are uploaded to the machine before the prompt.
    image: Path | None = None
    images: dict[str, Path] = {}
    role = workflow.roles().input_image
    for binding, asset_id in inputs.items():
        record = service.state.service.assets.get(asset_id)
        if record is None:  # deleted while the image check awaited: 422 missing_asset
            raise _refused_inputs(service, inputs, "")
        blob = service.blobs.path_of(record.hash)
        if blob is None:  # pragma: no cover - recorded hashes are well formed
            raise ApiError(422, "missing_asset", f"{binding}: the asset's bytes are gone")
        if binding == f"{role}.image":
            image = blob
        else:
            images[binding] = blob
    key: str | None = request.headers.get("idempotency-key")
    if key is not None and not (0 < len(key) <= 255):
        raise invalid_request("Idempotency-Key must be 1 to 255 characters")
    try:
        job_id = await service.submit_job(
            workflow,
            image=image,
            images=images,
            labels=labels,
            input_assets=inputs,
            idempotency_key=key,
            extra_data=extra_data,
            checked=True,  # checked_workflow above, against the service's catalogue
        )
    except KeyReusedError as exc:
        raise key_reused(service, exc, key) from None
    except WorkflowError as exc:
        raise invalid_workflow(exc.problems, graph) from None
    except UsageError as exc:
        raise _refused_inputs(service, inputs, str(exc)) from None
    return JSONResponse(job_view(request, service, job_id), status_code=201)


def _refused_inputs(service: Service, inputs: dict[str, str], message: str) -> ApiError:
    """The error for a submission the runtime refused: 422 ``missing_asset`` when an input
    asset's bytes are not stored (lost, or removed as its last asset went after the graph
    was resolved), else 400 ``invalid_request``. The runtime's message may name an input's
    file: a path of this server never reaches the client (the asset is named instead)."""
    assets = service.state.service.assets
    for binding, asset_id in inputs.items():
        record = assets.get(asset_id)
        if record is None or not service.blobs.has(record.hash):
            nid, _, name = binding.rpartition(".")
            return ApiError(
                422,
                "missing_asset",
                f"node {nid} input {name!r}: the bytes of asset {asset_id} are gone: "
                "upload them again",
                details={"node_id": nid, "input": name},
            )
    for asset_id in inputs.values():
        blob = service.blobs.path_of(assets[asset_id].hash)
        if blob is not None:
            message = message.replace(str(blob), f"asset {asset_id}")
    return invalid_request(message.replace(str(service.blobs.root), "the blob store"))


# ----------------------------------------------------------------------------- read


async def get_job(request: Request) -> Response:
    service = service_of(request)
    return JSONResponse(job_view(request, service, request.path_params["id"]))


def _int_param(request: Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise invalid_request(f"'{name}' must be an integer") from None
    if not lo <= value <= hi:
        raise invalid_request(f"'{name}' must be between {lo} and {hi}")
    return value


API_STATUSES: Final = (
    "queued",
    "running",
    "succeeded",
    "canceling",
    "canceled",
    "failed",
    "expired",
)
"""The v2 ``JobStatus`` enum (the list's ``status`` filter takes these)."""
ACTIVE_API: Final = frozenset({"queued", "running", "canceling"})
"""The API statuses of a job the index keeps (active, or succeeded lately): a ``status``
filter within these is answered from it, without a walk over every job."""


def _status_filter(request: Request) -> frozenset[str] | None:
    """The ``status`` filter (a comma list of v2 job statuses, the parameter repeatable):
    None when absent; an empty or unknown value is 400 ``invalid_request``."""
    raw = request.query_params.getlist("status")
    if not raw:
        return None
    wanted = {s.strip() for value in raw for s in value.split(",")}
    unknown = sorted(s for s in wanted if s not in API_STATUSES)
    if unknown or not wanted:
        shown = ", ".join(repr(s[:40]) for s in unknown[:3]) or "nothing"
        raise invalid_request(
            f"'status' names {shown}: use a comma list of {', '.join(API_STATUSES)}"
            " (e.g. status=queued,running)"
        )
    return frozenset(wanted)


def _newest_first(service: Service, statuses: frozenset[str] | None) -> list[str] | None:
    """The ids a ``status`` filter within :data:`ACTIVE_API` can match, newest first (the
    active jobs and those that succeeded within the index's ``ENDED_HORIZON``: their outputs
    may still be becoming assets, which reads ``running`` until the AssetActor decided, in
    about 30 s), from the index; None: every job (no filter, or one that names an ended
    status)."""
    if statuses is None or not statuses <= ACTIVE_API:
        return None
    index = service.index
    since = service.conjure.ctx.now() - ENDED_HORIZON
    ids = (
        index.active.union(index.succeeded_since(since)) if "running" in statuses else index.active
    )
    order = index.order
    return sorted(ids, key=lambda jid: order(jid) or 0, reverse=True)


def check_metadata_filter(labels: Mapping[str, str]) -> None:
    """A ``metadata[KEY]=VALUE`` filter's keys: none empty, at most :data:`MAX_LABELS`
    (else 422 ``invalid_metadata_filter`` saying which: an empty key was told "at most 16
    non-empty keys", as if it were one too many, QA10 F6)."""
    if any(not key for key in labels):
        raise ApiError(
            422, "invalid_metadata_filter", "metadata filter key is empty: use metadata[KEY]=VALUE"
        )
    if len(labels) > MAX_LABELS:
        raise ApiError(
            422,
            "invalid_metadata_filter",
            f"{len(labels)} metadata filter keys: at most {MAX_LABELS}",
        )


async def list_jobs(request: Request) -> Response:
    """``GET /api/v2/jobs``: newest first; ``metadata[k]=v`` filters (all must match),
    ``status`` (a comma list of the v2 job statuses: any may match), ``limit`` (1..500,
    default 50), ``cursor`` (the last id of the previous page). A ``status`` filter within
    queued, running and canceling is answered from the job index (no walk over every job);
    any filter is applied before a job's view is built."""
    service = service_of(request)
    limit = _int_param(request, "limit", DEFAULT_LIST, 1, MAX_LIST)
    wanted: dict[str, str] = {}
    for k, v in request.query_params.multi_items():
        if k.startswith("metadata[") and k.endswith("]"):
            wanted[k[len("metadata[") : -1]] = v
        elif k not in ("limit", "cursor", "status"):
            raise invalid_request(f"unknown query parameter {k!r}")
    check_metadata_filter(wanted)
    statuses = _status_filter(request)
    cursor = request.query_params.get("cursor")
    state = service.state
    svc = state.service
    # A cursor that expired since (it left the state): the jobs submitted before it follow
    # (and any submitted in the same instant: one listed twice rather than one skipped).
    gone = svc.expired_jobs.get(cursor) if cursor is not None else None
    before = None if gone is None else gone.submitted_at
    if (
        before is None
        and cursor is not None
        and (cursor not in svc.api_jobs or cursor not in state.jobs)
    ):
        raise ApiError(422, "invalid_cursor", "this cursor was not issued here")
    # Newest first, walked lazily: a page costs what it skips and shows, not a scan and
    # copy of every job.
    candidates = _newest_first(service, statuses)
    ids: Any
    if before is not None:
        jobs = state.jobs
        ids = (
            jid
            for jid in (reversed(jobs) if candidates is None else candidates)
            if jid in jobs and jobs[jid].submitted_at <= before
        )
    elif candidates is None:
        ids = reversed(state.jobs)
        if cursor is not None:
            for jid in ids:
                if jid == cursor:
                    break
    else:
        ids = iter(candidates)
        if cursor is not None:
            after = service.index.order(cursor)
            ids = (jid for jid in candidates if (service.index.order(jid) or 0) < (after or 0))
    page: list[dict[str, Any]] = []
    next_cursor = None
    now = service.conjure.ctx.now()
    for jid in ids:
        api = svc.api_jobs.get(jid)
        if api is None:
            continue
        job = state.jobs.get(jid)
        if job is None or past_retention(job, api, now):
            continue
        if any(api.labels.get(k) != v for k, v in wanted.items()):
            continue
        if statuses is not None and api_status(job, api, svc) not in statuses:
            continue
        if len(page) == limit:
            next_cursor = page[-1]["id"]
            break
        item = job_view(request, service, jid)
        item["create_time"] = item["created_at"]
        item["update_time"] = iso(job.updated_at or job.submitted_at)
        page.append(item)
    body: dict[str, Any] = {"jobs": page}
    if next_cursor is not None:
        body["next_cursor"] = next_cursor
    return JSONResponse(body)


async def get_workflow(request: Request) -> Response:
    service = service_of(request)
    job_id = request.path_params["id"]
    job_view(request, service, job_id)  # 404 as the job does
    job = service.state.jobs[job_id]
    record = service.state.workflows.get(job.workflow_sha256)
    if record is None:
        raise not_found(f"no workflow for job {job_id}")
    graph = apply_bindings(json.loads(record.graph_json), job.bindings)
    api = service.state.service.api_jobs.get(job_id)
    if api is not None:
        graph = _with_asset_refs(service, graph, api.input_assets)
    return JSONResponse({"workflow": graph, "format": "api"})


def asset_ref(service: Service, asset_id: str) -> dict[str, Any]:
    """The ``core/ASSET`` reference to asset ``asset_id`` (its hash and file path while
    the asset is recorded): a submission naming it runs on the same bytes, or is 422
    ``missing_asset`` once the asset is gone."""
    info: dict[str, Any] = {"id": asset_id}
    record = service.state.service.assets.get(asset_id)
    if record is not None:
        info["hash"] = record.hash
        if record.file_path is not None:
            info["file_path"] = record.file_path
    return {"__type": "core/ASSET", "info": info}


def _with_asset_refs(
    service: Service, graph: dict[str, Any], input_assets: Mapping[str, str]
) -> dict[str, Any]:
    """``graph`` with each input a job's asset was bound to (``"NODE.INPUT"`` -> asset id)
    holding that asset's ``core/ASSET`` reference, as the job ran it: the stored graph
    names the asset's file, which a later upload of the same name would take over (a
    plain name resolves to the newest), and a ``/api/conjure/jobs`` job's image is not in
    its graph at all. A node gets a new inputs dict (the graph's nodes are not shared)."""
    for binding, asset_id in input_assets.items():
        nid, _, name = binding.rpartition(".")
        node = graph.get(nid)
        if not isinstance(node, dict) or not isinstance(node.get("inputs"), dict):
            continue
        graph[nid] = {**node, "inputs": {**node["inputs"], name: asset_ref(service, asset_id)}}
    return graph


async def cancel(request: Request) -> Response:
    service = service_of(request)
    job_id = request.path_params["id"]
    job_view(request, service, job_id)
    job = service.state.jobs[job_id]
    if job.status not in st.TERMINAL_STATUSES:
        service.refuse_while_held()  # the cancel could not be logged before the disk frees
        await service.assets.ask(RequestCancel(job_id), timeout=60)
        await service.conjure.cancel(job_id, reason=CLIENT_CANCEL)
    return JSONResponse(job_view(request, service, job_id))


# ----------------------------------------------------------------------------- events


def check_stream_slot(service: Service, poll: str) -> None:
    """429 ``too_many_streams`` once ``max_streams`` event streams are open (``poll``: what
    the client polls instead)."""
    if service.open_streams >= service.settings.max_streams:
        raise ApiError(
            429,
            "too_many_streams",
            f"{service.settings.max_streams} event streams are open: close one, or poll {poll}",
            headers={"Retry-After": str(service.settings.retry_after)},
        )


def _concerns(event: Any, job_id: str) -> bool:
    return getattr(event, "job_id", None) == job_id


async def events(request: Request) -> Response:
    """SSE: a ``status`` snapshot (and the latest ``progress`` and ``preview``) on connect,
    then ``status`` on every change (a queued job's ``queue_position`` too), ``progress``
    at most every ``progress_interval``, ``preview`` (the newest frame, JPEG) at most every
    ``preview_interval``, ``output`` as each output becomes an asset, and the terminal
    ``status`` (the full job); then it ends. Each frame has an ``id:`` (a journal seq and the
    log's tag, ``service.resume``); a reconnect with ``Last-Event-ID`` (or ``?last_event_id=``)
    at or past the job's last change, once it ended, is answered 204 No Content: the client had
    its terminal status, and an ``EventSource`` stops reconnecting on a 204 (it would
    otherwise fetch the whole job again every few seconds after the stream ended)."""
    service = service_of(request)
    job_id = request.path_params["id"]
    tag = await service.changes.tag()
    resume = last_event_id(request, service.journal.last_seq, tag)
    if job_view(request, service, job_id)["status"] in TERMINAL_API and resume is not None:
        changed = await service.changes.since(resume)
        if changed is not None and job_id not in changed:
            return Response(status_code=204)
    check_stream_slot(service, "GET /api/v2/jobs/{id}")

    def frame(name: str, data: Mapping[str, Any]) -> dict[str, Any]:
        return {"event": name, "data": json.dumps(data, separators=(",", ":"))}

    async def stream() -> AsyncIterator[dict[str, Any]]:
        # The frames of each wake go out together, with their ids (resume.stamp): ``sent``
        # the id the client has, ``seen`` the seq of the last record the stream took.
        async with service.journal.subscribe(max_buffer=math.inf) as records:
            seen = service.journal.last_seq
            sent = resume or 0
            out: list[dict[str, Any]] = []
            view = job_view(request, service, job_id)
            status = view["status"]
            ended = status in TERMINAL_API
            sent_progress = view["progress"]
            if sent_progress is not None and ended:
                out.append(frame("progress", sent_progress))  # the terminal status comes last
            out.append(frame("status", status_payload(view, full=ended)))
            if sent_progress is not None and not ended:
                out.append(frame("progress", sent_progress))
            out[0]["retry"] = retry_ms(service)
            if ended:
                for sse in stamp(out, sent, seen, tag):
                    yield sse
                return
            # The newest preview on connect, then at most every preview_interval, looked
            # at on every wake (a preview is no event, but the job's events follow it).
            previews = _PreviewThrottle(service, job_id)
            payload = await previews.due()
            if payload is not None:
                out.append(frame("preview", payload))
            for sse in stamp(out, sent, seen, tag):
                yield sse
            sent = seen
            sent_outputs = {o["id"] for o in view["outputs"]}
            sent_position = view["queue_position"]
            moves = service.index.moves
            dirty = False
            last_progress = trio.current_time()
            while True:
                out = []
                with trio.move_on_after(service.settings.progress_interval):
                    first = await records.receive()
                    # The rest of the commit at once: one wake-up per commit, not per record.
                    for record in (first, *take_ready(records)):
                        seen = record.seq
                        if _concerns(record.event, job_id) or isinstance(
                            record.event, se.AssetRecorded | ev.SystemStopped
                        ):
                            dirty = True
                # Serving stops (after the drain and the machines' stop): one last look, so
                # that the stream ends with the job's status as serving stops: terminal if
                # it ended, else one a client tells from it (it polls GET .../{id} later).
                last = service.stopping.is_set()
                payload = await previews.due()
                if payload is not None:
                    out.append(frame("preview", payload))
                if not dirty and status == "queued" and moves != service.index.moves:
                    # Other jobs joined or left the queue: this job's position may have
                    # moved (the contract's "queue_position updates while queued"). A
                    # counter compare per commit, and a binary search when the queue
                    # changed: a thousand open streams cost no job_view each per job end.
                    moves = service.index.moves
                    job = service.state.jobs.get(job_id)
                    position = queue_position_of(service, job) if job is not None else None
                    if position is not None and position != sent_position:
                        sent_position = position
                        out.append(frame("status", {"status": status, "queue_position": position}))
                expired = False
                if dirty or last:
                    try:
                        view = job_view(request, service, job_id)
                    except ApiError:
                        expired = True  # the stream ends (with what this wake has)
                if (dirty or last) and not expired:
                    for output in view["outputs"]:
                        if output["id"] not in sent_outputs:
                            sent_outputs.add(output["id"])
                            out.append(frame("output", output))
                    moves = service.index.moves  # the view has the position as of now
                    if view["status"] != status or view["queue_position"] != sent_position:
                        status, sent_position = view["status"], view["queue_position"]
                        ended = status in TERMINAL_API
                        out.append(frame("status", status_payload(view, full=ended)))
                        last = last or ended
                    elif last:  # the stream's last frame is the status the job is left in
                        out.append(frame("status", status_payload(view)))
                    # Progress at most every progress_interval; a newer snapshot held back
                    # by the throttle keeps the stream dirty so it goes out on the next tick.
                    dirty = False
                    progress = view["progress"]
                    if not last and progress is not None and progress != sent_progress:
                        now = trio.current_time()
                        if now - last_progress >= service.settings.progress_interval:
                            last_progress, sent_progress = now, progress
                            out.append(frame("progress", progress))
                        else:
                            dirty = True
                for sse in stamp(out, sent, seen, tag):
                    yield sse
                if out:
                    sent = seen
                if last or expired:
                    return

    service.open_streams += 1
    return CountedStream(service, stream(), ping=15, send_timeout=30)


def retry_ms(service: Service) -> int:
    """The ``retry:`` of a stream's first frame: an ``EventSource`` reconnects that many
    milliseconds after a cut (``retry_after``, as a 429 or 503 asks: not the browsers' 3 s
    from every page at once when ``serve`` restarts)."""
    return int(service.settings.retry_after * 1000)


class _PreviewThrottle:
    """One stream's view of a job's previews: the newest one not sent yet, at most every
    ``preview_interval`` seconds."""

    def __init__(self, service: Service, job_id: str) -> None:
        self.previews = service.previews
        self.interval = service.settings.preview_interval
        self.job_id = job_id
        self.sent = 0  # the seq of the last preview sent
        self.last = -math.inf

    async def due(self) -> dict[str, Any] | None:
        """The ``PreviewEvent`` to send now, if any."""
        preview = self.previews.latest(self.job_id)
        if preview is None or preview.seq == self.sent:
            return None
        now = trio.current_time()
        if now - self.last < self.interval:
            return None
        self.sent, self.last = preview.seq, now
        return await self.previews.payload(preview)


class CountedStream(EventSourceResponse):
    """An SSE response that frees its slot of ``max_streams`` however it ends (the stream
    ran out, the client left, the server stopped), even if it never started.

    Its head says ``Connection: close`` (sse-starlette's says ``keep-alive``): a stream ends
    when its job ends or serving stops, and its head went out long before, so it is the one
    place that can tell the client not to reuse the connection. Kept alive, a stream ended
    by serve's stop left the connection to the client, which sent its next request (comfy-sdk
    polls the job at once) as serve closed it: lost, "Server disconnected without sending a
    response" (QA10 F9). A new connection instead is answered, or refused once serve stopped
    listening. The cost: one connect per ended stream."""

    def __init__(self, service: Service, content: Any, **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self.headers["Connection"] = "close"
        self._service = service

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._service.open_streams -= 1


def status_payload(view: Mapping[str, Any], *, full: bool = False) -> dict[str, Any]:
    if full:
        return {**view, "queue_position": view["queue_position"]}
    return {"status": view["status"], "queue_position": view["queue_position"]}


async def jobs(request: Request) -> Response:
    """``/api/v2/jobs``: one route for its methods, so that a 405 there lists them all in
    ``Allow`` (two routes on one path each answered 405 with only their own)."""
    if request.method == "POST":
        return await submit(request)
    return await list_jobs(request)


ROUTES = [
    Route("/api/v2/jobs", jobs, methods=["GET", "POST"]),
    Route("/api/v2/jobs/{id}", get_job, methods=["GET"]),
    Route("/api/v2/jobs/{id}/workflow", get_workflow, methods=["GET"]),
    Route("/api/v2/jobs/{id}/cancel", cancel, methods=["POST"]),
    Route("/api/v2/jobs/{id}/events", events, methods=["GET"]),
]

__all__ = [
    "ROUTES",
    "CountedStream",
    "api_status",
    "asset_ref",
    "check_metadata_filter",
    "check_stream_slot",
    "is_shown",
    "iso",
    "job_labels",
    "job_progress",
    "job_view",
    "past_retention",
    "queue_position_of",
    "retry_ms",
    "status_payload",
]
