"""Comfy API v2 assets: multipart upload (server-computed blake3, dedup 201/200,
``expected_hash`` checked), from-hash, HEAD by-hash, metadata, content with Range, delete.

The bytes go to the blob store (temp file, fsync, rename) BEFORE the AssetActor logs
``AssetRecorded``; a rejected upload (too large, hash mismatch, key reused) leaves no blob
that no asset refers to (the AssetActor, the only one that removes blobs, drops it). The
actor records an asset only over a blob still stored; an upload whose blob went between
its store and its record stores it again.

The content route serves only whole bytes: a blob whose file is gone or not its recorded
size is answered 500 ``asset_damaged`` before any header (a stat of the open file); one
whose bytes changed in place is found by hashing a whole-blob read as it is sent, and the
answer is cut before its last bytes (the client sees a failed transfer, never a complete
wrong file; a blob of one chunk, 1 MiB, is read before the headers and so gets the error
object). :func:`check_blobs` checks every blob once at start-up, in the background, and
``GET /api/v2/health`` is ``degraded`` while a damaged blob is known (:func:`damaged_reason`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
import tempfile
from typing import Any, Final
from urllib.parse import quote

import trio
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from conjure_actors.actors.assets import (
    AssetInUse,
    BlobGone,
    DeleteAsset,
    DropBlobIfUnused,
    KeyReused,
    RecordAsset,
    Recorded,
)
from conjure_actors.domain import service_events as se
from conjure_actors.runtime import ActorStoppedError, MailboxFullError, background_checkpoint
from conjure_actors.service.app import Service
from conjure_actors.service.blobs import (
    REFUSALS,
    BlobDamagedError,
    BlobTooLargeError,
    StoreRefusal,
    StoreRefusedError,
    parse_hash,
)
from conjure_actors.service.errors import (
    ApiError,
    insufficient_storage,
    invalid_request,
    not_found,
    part_too_large,
    too_deep,
)
from conjure_actors.service.responses import JSONResponse
from conjure_actors.service.security import url_signer

log = logging.getLogger("conjure_actors.service")

PUT_ATTEMPTS = 3
"""Times an upload stores its bytes: again when the blob went (its last asset deleted)
between the store and the record."""
URL_TTL = 3600.0
"""Seconds a content URL is announced valid at least: with a token, its signature expires
then (:class:`~conjure_actors.service.security.UrlSigner`); without one it does not expire."""
URL_GRID: Final = 600
"""Seconds to which a signed URL's expiry is rounded up (:func:`url_until`): every answer
within those seconds hands out the same URL for a file, so a page that polls its job and
shows ``<img src="{url}">`` hits its cache (a 304 on revalidation) instead of fetching the
file again under a new URL each poll (QA10 F2)."""
MAX_FILE_PATH: Final = 1024
"""Characters an asset's ``file_path`` holds at most."""

_TOKEN: Final = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_QUOTED: Final = r'"(?:[\t !#-\[\]-~]|\\[\t -~])*"'
_MEDIA_TYPE = re.compile(
    rf"{_TOKEN}/{_TOKEN}(?:[ \t]*;[ \t]*{_TOKEN}=(?:{_TOKEN}|{_QUOTED}))*", re.ASCII
)
"""A media type as HTTP's ``Content-Type`` carries it (RFC 9110 8.3.1: ``type/subtype``
and ``; name=value`` parameters, a value a token or a quoted string of visible ASCII)."""
MAX_CONTENT_TYPE: Final = 255
"""Characters an asset's ``content_type`` holds at most."""
INLINE_TYPES: Final = ("image/", "video/", "audio/")
"""Content a browser may show in place (every other type, and SVG, which can run scripts,
is sent as an attachment in a sandbox: an uploaded HTML page never runs as this origin)."""

_RANGE = re.compile(r"([0-9]*)-([0-9]*)")
"""One range-spec of a ``bytes`` Range header (RFC 9110 14.1.1)."""
_FAR: Final = 10**30
"""A byte position past the end of any blob."""


def service_of(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


def is_live(record: se.AssetRecord, now: float) -> bool:
    """Whether an asset is still served: its ``expires_at`` not passed. The AssetActor's
    sweep (every ``SWEEP_INTERVAL``) logs its expiry later; reads do not wait for it."""
    return record.expires_at is None or record.expires_at > now


def content_url(request: Request, record: se.AssetRecord) -> tuple[str, str | None]:
    """The content URL of an asset (absolute: the spec says ``format: uri``) and until when
    it is valid: :func:`url_until`, never past the asset's own expiry, in whole seconds.
    With a token the URL is signed until then (a browser opens it without the header)."""
    from conjure_actors.service.v2_jobs import iso

    base = str(request.base_url).rstrip("/")
    service = service_of(request)
    until: float = url_until(service.conjure.ctx.now())
    if record.expires_at is not None:
        until = min(until, record.expires_at)
    path = signed_path(request, f"/api/v2/assets/{record.asset_id}/content", until)
    return f"{base}{path}", iso(math.floor(until))


def url_until(now: float) -> int:
    """Until when a URL handed out at ``now`` is valid: :data:`URL_TTL` at least, rounded
    up to :data:`URL_GRID` (the same URL for every answer in those seconds)."""
    return math.ceil((now + URL_TTL) / URL_GRID) * URL_GRID


def signed_path(request: Request, path: str, until: float) -> str:
    """``path``, signed until ``until`` (floored to whole seconds) when the service has a
    token; unchanged without one."""
    signer = url_signer(request.scope)
    return path if signer is None else signer.sign(path, math.floor(until))


def asset_view(
    request: Request, record: se.AssetRecord, *, created_new: bool | None = None
) -> dict[str, Any]:
    from conjure_actors.service.v2_jobs import iso

    url, expires = content_url(request, record)
    out: dict[str, Any] = {
        "id": record.asset_id,
        "hash": record.hash,
        "size_bytes": record.size,
        "content_type": record.content_type,
        "file_path": record.file_path,
        "created_at": iso(record.created_at),
        "url": url,
        "url_expires_at": expires,
        "expires_at": iso(record.expires_at),
        "job_id": record.job_id,
        "tags": list(record.tags),
    }
    if created_new is not None:
        out["created_new"] = created_new
    return out


def _record(service: Service, asset_id: str) -> se.AssetRecord:
    """The asset ``asset_id`` as its reads serve it: live, or past its ``expires_at`` but
    held by a job not ended yet (its input waiting for a machine: the sweep keeps it, so
    reads do too; the scan of the jobs runs only for such an asset)."""
    record = service.state.service.assets.get(asset_id)
    if record is None:
        raise not_found(f"no asset {asset_id}")
    if not is_live(record, service.conjure.ctx.now()) and asset_id not in se.held_assets(
        service.state
    ):
        raise not_found(f"no asset {asset_id}")
    return record


def _live_blob(service: Service, hash_text: str) -> se.AssetRecord | None:
    """A live asset over the blob ``hash_text`` (None: no blob, or only expired assets
    over it, whose sweep will remove it)."""
    svc = service.state.service
    if parse_hash(hash_text) is None or hash_text not in svc.blob_refs:
        return None
    now = service.conjure.ctx.now()
    return next((r for r in svc.assets.values() if r.hash == hash_text and is_live(r, now)), None)


def _expires_in(raw: Any) -> int | None:
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise invalid_request("'expires_in' must be an integer (seconds)") from None
    if not 60 <= value <= 604800:
        raise invalid_request("'expires_in' must be between 60 and 604800 seconds")
    return value


def _text_field(form: Any, name: str, *, required: bool) -> str | None:
    value = form.get(name)
    if value is None:
        if required:
            raise invalid_request(f"the form field '{name}' is required")
        return None
    if not isinstance(value, str):
        raise invalid_request(f"the form field '{name}' must be text")
    return value


def is_media_type(text: str) -> bool:
    """Whether ``text`` is a media type a ``Content-Type`` header may carry as it is."""
    return len(text) <= MAX_CONTENT_TYPE and _MEDIA_TYPE.fullmatch(text) is not None


def _check_content_type(content_type: str) -> None:
    if not is_media_type(content_type):
        raise invalid_request(
            "'content_type' must be a media type, type/subtype with optional ; name=value"
            " parameters (e.g. image/png or text/plain; charset=utf-8)"
        )


def content_headers(record: se.AssetRecord) -> dict[str, str]:
    """The headers an asset's content is served with: its type (``application/octet-stream``
    if what was recorded is not a media type: an upload from before this was checked),
    ``nosniff`` always, and for what a browser should not render as this origin's page
    (anything but images, video and audio; SVG) an attachment, sandboxed."""
    kind = record.content_type if is_media_type(record.content_type) else ""
    kind = kind or "application/octet-stream"
    headers = {"Content-Type": kind, "X-Content-Type-Options": "nosniff"}
    essence = kind.split(";", 1)[0].strip().lower()
    if not essence.startswith(INLINE_TYPES) or essence == "image/svg+xml":
        name = (record.file_path or record.asset_id).rsplit("/", 1)[-1] or record.asset_id
        plain = re.sub(r"[^A-Za-z0-9._-]", "_", name)
        headers["Content-Disposition"] = (
            f"attachment; filename=\"{plain}\"; filename*=UTF-8''{quote(name, safe='')}"
        )
        headers["Content-Security-Policy"] = "sandbox; default-src 'none'"
    return headers


def store_refused(
    service: Service, refusal: StoreRefusal, *, folder: str = "its asset store"
) -> ApiError:
    """507 for an upload whose bytes the blob store's folder refused (nothing was stored):
    ``insufficient_storage`` when its disk is full, as for the log's full disk; else
    ``storage_not_writable`` (read-only, or not the server's to write). Both are the
    operator's to fix (serve logged one line naming the folder); a retry after the
    ``Retry-After`` succeeds once it is fixed, and ``GET /api/v2/health`` says ``degraded``
    until then."""
    retry = service.settings.retry_after
    if refusal.disk_full:
        return insufficient_storage(retry)
    return ApiError(
        507,
        "storage_not_writable",
        f"the server cannot write {folder} ({refusal.cause}): nothing of this request"
        " was stored; retry once its operator made it writable",
        headers={"Retry-After": str(retry)},
    )


def _spool_refused(service: Service, refusal: StoreRefusal) -> ApiError:
    """The 507 of an upload whose file the temporary folder (where a form's file past 1 MiB
    is spooled) refused; one ERROR line naming the folder as such refusals start."""
    if getattr(service, "_spool_refusal", None) != refusal:
        service._spool_refusal = refusal  # type: ignore[attr-defined]
        log.error(
            "cannot write the temporary folder %s (%s): uploads larger than 1 MiB fail"
            " (507) until it takes writes again; %s (or set TMPDIR to another folder)",
            tempfile.gettempdir(),
            refusal.cause,
            refusal.remedy(),
        )
    return store_refused(service, refusal, folder="its temporary folder")


def store_problem(service: Service) -> str | None:
    """Why ``GET /api/v2/health`` is ``degraded`` while the blob store refuses writes (None:
    the last write succeeded)."""
    refusal = service.blobs.refusal()
    if refusal is None:
        return None
    what = "its disk is full" if refusal.disk_full else refusal.cause
    return (
        f"the asset store refuses writes ({what}): uploads get 507, and the outputs of jobs"
        " that end meanwhile are not stored (those jobs fail); the server's log names the"
        " folder to fix"
    )


def _check_file_path(file_path: str) -> None:
    if len(file_path) > MAX_FILE_PATH:
        raise invalid_request(
            f"'file_path' is too long ({len(file_path)} characters): send at most"
            f" {MAX_FILE_PATH}, e.g. photo.png"
        )


async def upload(request: Request) -> Response:
    service = service_of(request)
    service.refuse_while_held()  # 507 before the body is spooled to the (full) disk
    limit = service.settings.max_upload_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit + 64 * 1024:
        raise ApiError(413, "payload_too_large", f"an upload is at most {limit} bytes")
    key = request.headers.get("idempotency-key")
    if key is not None and not 0 < len(key) <= 255:
        raise invalid_request("Idempotency-Key must be 1 to 255 characters")
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise invalid_request("send multipart/form-data with file, content_type and file_path")
    try:
        form = await request.form(max_files=1, max_fields=64)
    except (HTTPException, MultiPartException) as exc:  # Starlette's word for a bad body
        detail = exc.detail if isinstance(exc, HTTPException) else exc.message
        raise part_too_large(detail) or invalid_request(
            f"malformed multipart body: {detail}"
        ) from None
    except OSError as exc:  # the file's spool (past 1 MiB: the temporary folder) refused
        if exc.errno is None or exc.errno not in REFUSALS:
            raise
        raise _spool_refused(service, StoreRefusal(exc.errno)) from None
    service._spool_refusal = None  # type: ignore[attr-defined]
    answer: Any = None
    stored: str | None = None  # a blob this request created
    try:
        file = form.get("file")
        if not isinstance(file, UploadFile):
            raise invalid_request("the form field 'file' (the bytes) is required")
        content_type = _text_field(form, "content_type", required=True)
        file_path = _text_field(form, "file_path", required=True)
        expected = _text_field(form, "expected_hash", required=False)
        tags = [t for t in form.getlist("tags") if isinstance(t, str)]
        expires_in = _expires_in(form.get("expires_in"))
        assert content_type is not None
        assert file_path is not None
        if not content_type or not file_path:
            raise invalid_request("'content_type' and 'file_path' must be non-empty")
        _check_file_path(file_path)
        _check_content_type(content_type)
        if expected is not None and parse_hash(expected) is None:
            raise invalid_request("'expected_hash' must be blake3:<64 hex digits>")
        for attempt in range(PUT_ATTEMPTS):
            if attempt:
                file.file.seek(0)
            try:
                hash_text, size, created = await trio.to_thread.run_sync(
                    service.blobs.put_stream, file.file
                )
                if created:
                    stored = hash_text
            except StoreRefusedError as exc:
                raise store_refused(service, exc.refusal) from None
            except BlobTooLargeError:
                raise ApiError(
                    413, "payload_too_large", f"an upload is at most {limit} bytes"
                ) from None
            if expected is not None and expected.lower() != hash_text:
                raise ApiError(
                    409,
                    "hash_mismatch",
                    f"expected_hash {expected} does not match the bytes received ({hash_text})",
                    details={"expected": expected, "actual": hash_text},
                )
            answer = await service.assets.ask(
                RecordAsset(
                    hash=hash_text,
                    size=size,
                    content_type=content_type,
                    file_path=file_path,
                    tags=tuple(tags),
                    expires_in=expires_in,
                    key=key,
                ),
                timeout=60,
            )
            if not isinstance(answer, BlobGone):
                break
        else:  # removed under every attempt (nothing was logged): the spec's one 5xx
            raise ApiError(500, "upstream_error", "the upload could not be stored; retry it")
    finally:
        if stored is not None and not isinstance(answer, Recorded):
            _drop_if_unused(service, stored)
        await form.close()
    if not isinstance(answer, Recorded):
        # Single use, no replay (the spec): the key's first upload may have been recorded
        # though its answer never reached the client (a 5xx, a lost connection), so the
        # refusal names the asset that upload made, when the claim recorded it: the client
        # GETs it instead of uploading again.
        made = answer.asset_id if isinstance(answer, KeyReused) else None
        if made is not None and made in service.state.service.assets:
            url = f"{str(request.base_url).rstrip('/')}/api/v2/assets/{made}"
            raise ApiError(
                422,
                "idempotency_key_reuse",
                f"this Idempotency-Key was used before, by the upload that made asset {made}:"
                " get it instead of uploading again",
                details={"asset_id": made, "url": url},
            )
        raise ApiError(
            422,
            "idempotency_key_reuse",
            "this Idempotency-Key was used before (a key is single use, uploads and"
            " submissions alike): send a new one, or if this upload used it, look up the bytes"
            " by their hash (HEAD /api/v2/assets/by-hash/{hash}) instead of uploading again",
        )
    # New bytes (201) or deduped onto a live asset's (200), as the actor recorded it.
    record = _record(service, answer.asset_id)
    if service.image_checks.get(record.hash) is not None:
        # A submission found these bytes were no image: maybe their blob was damaged then,
        # and this upload stored it whole again (BlobStore.put_stream); the next submission
        # decodes them afresh rather than refusing them for good.
        del service.image_checks[record.hash]
    status = 201 if answer.created_new else 200
    return JSONResponse(
        asset_view(request, record, created_new=answer.created_new), status_code=status
    )


def _drop_if_unused(service: Service, hash_text: str) -> None:
    """Have the AssetActor remove a blob an upload created and no asset took (refused,
    failed, or abandoned: its client went, the actor stopped): it removes it unless an
    asset refers to it by then (an ask cancelled after the actor took it is answered first).
    Never waits, so it runs while the request is cancelled too; with the mailbox full or the
    actor stopped the blob stays (unreferenced: invisible, only disk)."""
    with contextlib.suppress(MailboxFullError, ActorStoppedError):
        service.assets.tell_nowait(DropBlobIfUnused(hash_text))


async def from_hash(request: Request) -> Response:
    service = service_of(request)
    service.refuse_while_held()
    try:
        body = json.loads(await request.body())
    except (ValueError, UnicodeDecodeError):
        raise invalid_request('the body is not JSON: send {"hash": "blake3:..."}') from None
    except RecursionError:
        raise too_deep() from None
    if not isinstance(body, dict) or not isinstance(body.get("hash"), str):
        raise invalid_request("'hash' is required: blake3:<hex>")
    hash_text = body["hash"].lower()
    file_path = body.get("file_path")
    tags = body.get("tags") or []
    if file_path is not None and not isinstance(file_path, str):
        raise invalid_request("'file_path' must be a string")
    if file_path is not None:
        _check_file_path(file_path)
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise invalid_request("'tags' must be a list of strings")
    expires_in = _expires_in(body.get("expires_in"))
    svc = service.state.service
    sample = _live_blob(service, hash_text)
    if sample is None:
        raise ApiError(404, "blob_not_found", "no blob with that hash: upload the bytes")
    now = service.conjure.ctx.now()
    for record in svc.assets.values():  # an identical reference already exists
        if (
            is_live(record, now)
            and record.hash == hash_text
            and record.file_path == file_path
            and record.job_id is None
            and sorted(record.tags) == sorted(tags)
        ):
            return JSONResponse(asset_view(request, record, created_new=False))
    answer = await service.assets.ask(
        RecordAsset(
            hash=hash_text,
            size=svc.blob_sizes[hash_text],
            content_type=sample.content_type,
            file_path=file_path,
            tags=tuple(tags),
            expires_in=expires_in,
        ),
        timeout=60,
    )
    if not isinstance(answer, Recorded):  # BlobGone: its last asset went meanwhile
        raise ApiError(404, "blob_not_found", "no blob with that hash: upload the bytes")
    record = _record(service, answer.asset_id)
    return JSONResponse(asset_view(request, record, created_new=False), status_code=201)


async def head_by_hash(request: Request) -> Response:
    service = service_of(request)
    hash_text = request.path_params["hash"].lower()
    return Response(status_code=200 if _live_blob(service, hash_text) is not None else 404)


async def get_asset(request: Request) -> Response:
    service = service_of(request)
    return JSONResponse(asset_view(request, _record(service, request.path_params["id"])))


async def delete_asset(request: Request) -> Response:
    service = service_of(request)
    asset_id = request.path_params["id"]
    _record(service, asset_id)
    service.refuse_while_held()
    answer = await service.assets.ask(DeleteAsset(asset_id), timeout=60)
    if isinstance(answer, AssetInUse):  # the spec's word: the body never says which hold
        raise ApiError(409, "asset_in_use", "this asset cannot be deleted now")
    if not answer:
        raise not_found(f"no asset {asset_id}")
    return Response(status_code=204)


def _position(digits: str) -> int:
    """A byte position of a Range header: past ``_FAR`` it is past every blob's end (and
    ``int`` of thousands of digits raises ValueError)."""
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) < len(str(_FAR)) else _FAR


def _range_spec(header: str) -> tuple[int | None, int | None] | None:
    """``(first, last)`` of a ``Range: bytes=first-last`` (either may be absent, not both;
    ``first`` None: the ``last`` final bytes); None when the header is to be ignored and
    the whole representation sent, as RFC 9110 14.2 says: a unit other than ``bytes``
    (MUST be ignored), an invalid range-set (MAY), and a list of several ranges (14.2: a
    server MAY ignore Range; this one sends no multipart/byteranges)."""
    unit, equals, ranges = header.strip().partition("=")
    if not equals or unit.strip().lower() != "bytes":
        return None
    match = _RANGE.fullmatch(ranges.strip())
    if match is None:
        return None
    first, last = match.groups()
    if first == "" and last == "":
        return None
    start = _position(first) if first else None
    end = _position(last) if last else None
    if start is not None and end is not None and end < start:
        return None  # last-pos before first-pos: invalid (14.1.1), not unsatisfiable
    return start, end


def _byte_range(spec: tuple[int | None, int | None], size: int) -> tuple[int, int] | None:
    """``(start, end)`` inclusive of a :func:`_range_spec` over ``size`` bytes; None when
    unsatisfiable (416): ``first`` past the end, a zero suffix, and every range of an
    empty representation (RFC 9110 14.1.1)."""
    first, last = spec
    if size == 0:
        return None
    if first is None:
        if not last:
            return None
        return max(size - last, 0), size - 1
    if first >= size:
        return None
    end = size - 1 if last is None else min(last, size - 1)
    return first, end


class _Cut(Exception):
    """A blob's bytes were found damaged while they were sent (:class:`_BlobResponse`)."""


class _BlobResponse(StreamingResponse):
    """A blob's bytes, streamed; when they are found damaged on the way (:class:`_Cut`)
    the body ends without its last message, so the server closes the connection short of
    the Content-Length: the client sees a failed transfer, and nothing is logged as a
    server error (the route logged the damage)."""

    async def stream_response(self, send: Any) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        body = self.body_iterator
        try:
            async for chunk in body:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except _Cut:
            return
        finally:
            # A client dropped mid-transfer (it stopped reading: serve's stall timeout)
            # ends the loop by an error: the blob's file is closed now, not by the GC.
            aclose = getattr(body, "aclose", None)
            if aclose is not None:
                await aclose()
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def _remedy(record: se.AssetRecord) -> str:
    """What to do about an asset whose stored bytes are damaged."""
    if record.job_id is not None:
        return f"re-run the job that made it ({record.job_id}), or upload the same bytes again"
    return "upload the same bytes again (that restores it)"


def damaged_error(record: se.AssetRecord, exc: BlobDamagedError) -> ApiError:
    """500 ``asset_damaged``: the asset exists, its stored bytes do not (whole)."""
    damage = exc.damage
    return ApiError(
        500,
        "asset_damaged",
        f"the stored bytes of asset {record.asset_id} {damage.describe()}: {_remedy(record)}",
        details={
            "asset_id": record.asset_id,
            "hash": record.hash,
            "size_bytes": record.size,
            "bytes_on_disk": damage.on_disk,
            "problem": damage.problem,
        },
    )


def _log_damage(record: se.AssetRecord, exc: BlobDamagedError, answer: str) -> None:
    """One line when a damage is found (at debug level when it was known already)."""
    log.log(
        logging.ERROR if exc.first else logging.DEBUG,
        "the stored bytes of asset %s (blob %s) %s: %s; %s",
        record.asset_id,
        record.hash,
        exc.damage.describe(),
        answer,
        _remedy(record),
    )


#: How a browser may keep an asset's content: the bytes behind an asset id never change, but
#: the asset may be deleted and a token-protected serve's answers are one user's, so a cache
#: keeps them privately and asks again each time, which ``If-None-Match`` answers with a
#: bodiless 304 (a page's gallery or mesh viewer revalidating pays a round trip, not the bytes).
_CONTENT_CACHE_CONTROL: Final = "private, no-cache"


def _entity_tags(header: str) -> list[str]:
    """The entity tags of an ``If-None-Match`` / ``If-Range`` value (``*`` as itself), each
    without its weakness prefix: ``If-None-Match`` compares weakly (RFC 9110 13.1.2)."""
    return [tag.strip().removeprefix("W/") for tag in header.split(",") if tag.strip()]


def _not_modified(request: Request, etag: str) -> bool:
    """Whether ``If-None-Match`` names ``etag`` (or is ``*``): the client has these bytes."""
    header = request.headers.get("if-none-match")
    if header is None:
        return False
    tags = _entity_tags(header)
    return "*" in tags or etag in tags


def _range_applies(request: Request, etag: str) -> bool:
    """Whether a ``Range`` may be answered with part of these bytes: no ``If-Range``, or one
    that names ``etag`` exactly (a strong comparison); a date or another tag means the
    client's copy may be other bytes, so it gets the whole content (RFC 9110 13.1.5)."""
    header = request.headers.get("if-range")
    return header is None or header.strip() == etag


async def content(request: Request) -> Response:
    service = service_of(request)
    record = _record(service, request.path_params["id"])
    size = record.size
    etag = f'"{record.hash}"'
    if _not_modified(request, etag):
        return Response(
            status_code=304, headers={"ETag": etag, "Cache-Control": _CONTENT_CACHE_CONTROL}
        )
    headers = {
        "Accept-Ranges": "bytes",
        **content_headers(record),
        "ETag": etag,
        "Cache-Control": _CONTENT_CACHE_CONTROL,
    }
    wanted = request.headers.get("range")
    if wanted is not None and not _range_applies(request, etag):
        wanted = None
    spec = _range_spec(wanted) if wanted is not None else None
    start, end, status = 0, size - 1, 200
    if spec is not None:
        span = _byte_range(spec, size)
        if span is None:
            return Response(status_code=416, headers={"Content-Range": f"bytes */{size}"})
        start, end = span
        status = 206
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    headers["Content-Length"] = str(max(end - start + 1, 0))
    try:
        # Opened before the answer starts: a DELETE landing meanwhile removes the blob's
        # name, not the bytes this answer's head promises; a file gone or of another size
        # is answered here. Its first chunk is read before the head too: a blob of one
        # chunk is then checked whole (hashed) before anything is sent.
        chunks = service.blobs.open_checked(record.hash, size, start, end)
        try:
            first = await trio.to_thread.run_sync(next, chunks, None)
        except BaseException:
            chunks.close()
            raise
    except BlobDamagedError as exc:
        _log_damage(record, exc, "answered 500 asset_damaged")
        raise damaged_error(record, exc) from None
    if first is None:  # nothing to send (an empty blob)
        return Response(b"", status_code=status, headers=headers)

    async def body() -> Any:
        try:
            yield first
            while True:
                try:
                    chunk = await trio.to_thread.run_sync(next, chunks, None)
                except BlobDamagedError as exc:
                    _log_damage(record, exc, "its transfer was cut before its end")
                    raise _Cut from None
                if chunk is None:
                    return
                yield chunk
        finally:
            chunks.close()

    return _BlobResponse(body(), status_code=status, headers=headers)


def damaged_reason(service: Service) -> str | None:
    """Why ``GET /api/v2/health`` is ``degraded`` while blobs of live assets are known
    damaged (None: none known)."""
    damaged = service.blobs.damaged()
    if not damaged:
        return None
    svc = service.state.service
    hit = [r for r in svc.assets.values() if r.hash in damaged]
    if not hit:
        return None
    named = ", ".join(r.asset_id for r in hit[:3]) + (", ..." if len(hit) > 3 else "")
    return (
        f"the stored bytes of {len(hit)} asset(s) are gone or damaged ({named}): their"
        " content is answered 500 asset_damaged, which says what happened; upload the same"
        " bytes again, or re-run the jobs that made them"
    )


async def check_blobs(service: Service) -> None:
    """Check every blob live assets refer to, once, in the background (serve's start):
    first their files' sizes (a stat each), then their bytes (read whole and hashed, a
    chunk at a time, each read waiting for its turn behind requests in flight). A damage
    found is logged (one line naming an asset over it) and remembered: its content answers
    500 ``asset_damaged`` and ``GET /api/v2/health`` is ``degraded`` (see
    :func:`damaged_reason`). First, one write is tried in the store: a folder that refuses
    writes from the start is logged and reported by health (:func:`store_problem`) before
    an upload or a job's output finds it."""
    with contextlib.suppress(OSError):  # another error: the first real write will tell
        await trio.to_thread.run_sync(service.blobs.probe_write)
    gate = service.gate
    with gate.background() if gate is not None else contextlib.nullcontext():
        sizes = dict(service.state.service.blob_sizes)
        for hashing in (False, True):
            for hash_text, size in sizes.items():
                await background_checkpoint()
                await _check_blob(service, hash_text, size, hashing=hashing)


async def _check_blob(service: Service, hash_text: str, size: int, *, hashing: bool) -> None:
    """One blob: its file's size, or (``hashing``) its bytes."""
    if hash_text not in service.state.service.blob_refs:  # its last asset went meanwhile
        return
    try:
        chunks = service.blobs.open_checked(hash_text, size, 0, size - 1)
        try:
            while hashing and await trio.to_thread.run_sync(next, chunks, None) is not None:
                await background_checkpoint()
        finally:
            chunks.close()
    except BlobDamagedError as exc:
        assets = service.state.service.assets.values()
        record = next((r for r in assets if r.hash == hash_text), None)
        if record is not None:
            _log_damage(record, exc, "found at start-up; its content is answered 500 asset_damaged")


async def asset(request: Request) -> Response:
    """``/api/v2/assets/{id}``: one route for its methods, so that a 405 there lists them all
    in ``Allow`` (two routes on one path each answered 405 with only their own)."""
    if request.method == "DELETE":
        return await delete_asset(request)
    return await get_asset(request)


ROUTES = [
    Route("/api/v2/assets", upload, methods=["POST"]),
    Route("/api/v2/assets/from-hash", from_hash, methods=["POST"]),
    Route("/api/v2/assets/by-hash/{hash}", head_by_hash, methods=["HEAD"]),
    Route("/api/v2/assets/{id}", asset, methods=["GET", "DELETE"]),
    Route("/api/v2/assets/{id}/content", content, methods=["GET"]),
]

__all__ = [
    "ROUTES",
    "URL_GRID",
    "URL_TTL",
    "asset_view",
    "check_blobs",
    "content_url",
    "damaged_error",
    "damaged_reason",
    "is_live",
    "signed_path",
    "url_until",
]
