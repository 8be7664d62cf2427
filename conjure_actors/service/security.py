"""Safe by default: who may call ``serve``, from where, how much, how often.

What this module guards, outermost first (see :func:`security_middleware`):

- **The Host a request names** (:class:`HostMiddleware`). Without a token ``serve`` listens
  on loopback only, and answers only requests whose ``Host`` is a loopback name
  (``localhost``, ``*.localhost``, ``127.0.0.0/8``, ``[::1]``) or one listed with
  ``--allowed-host``: anything else is 403 ``forbidden``. That is what stops DNS rebinding
  (a page of ``http://evil.example:8189`` whose name is re-resolved to 127.0.0.1 is
  same-origin to the browser: no CORS, no preflight, an ``Origin`` matching its ``Host``);
  Jupyter and webpack-dev-server keep the same list. A request without ``Host`` (HTTP/1.0)
  names none and passes. With a token, the bearer check guards and ``Host`` is free (a
  reverse proxy may rename it), unless ``--allowed-host`` is given.
- **Forwarded headers from a trusted proxy** (also :class:`HostMiddleware`, only with
  ``--forwarded-allow-ips``): from those peers ``X-Forwarded-Proto``/``X-Forwarded-Host``
  (or, without them, the last element of ``Forwarded``) set the scheme and host of the
  URLs the API builds (``https://`` behind a TLS proxy); from any other peer they are
  ignored. The forwarded host is checked as ``Host`` is, and so is the ``Host`` the
  proxy sent: every name a request carries must be allowed (a page could add an
  ``X-Forwarded-Host: 127.0.0.1`` itself, so the forwarded one alone proves nothing).
- **CORS**, only for the origins the user listed (``--cors-origin``), never ``*``: Starlette's
  ``CORSMiddleware`` with an explicit list answers the preflights of those origins; a
  preflight it refuses (another origin, a method or header not allowed) is 403 ``forbidden``
  in the error envelope, as every other refusal here.
- **The Origin check ComfyUI itself does** (its ``create_origin_only_middleware``): a browser
  request marked ``Sec-Fetch-Site: cross-site``, or whose ``Origin`` host differs from a
  loopback ``Host``, is refused 403 ``forbidden`` unless its origin is listed. That is what
  stops a web page open in the user's browser from driving a loopback service (drive-by
  requests; not DNS rebinding, whose Origin matches its Host: the Host check above stops
  it). Requests without ``Origin`` (curl, the SDK) are not browsers'.
- **A bearer token** (``--token``), compared in constant time; 401 ``unauthorized``.
  ``GET /api/v2/health`` stays open so probes need no credential.
- **Signed URLs** (:class:`UrlSigner`, only with a token): a browser can send no
  ``Authorization`` header with ``<img src>`` or ``EventSource``, so the content URLs the API
  returns (an asset's or output's ``url``) and a job's ``urls.events`` carry
  ``?expires=<epoch s>&sig=<HMAC-SHA256>`` over that path and expiry (``expires`` is the
  ``url_expires_at`` announced). A GET or HEAD of exactly that path with a valid signature
  not past its expiry is served without the token; an altered, expired or foreign one is
  401 saying to get a fresh URL. The key is derived from the token with a fixed label
  (never the token itself), so a new token voids every URL signed before. No access log
  is written, and the service's own log lines name a request's path only, never its
  query: the signatures reach no log.
- **Request size limits**: 413 ``payload_too_large`` (the v2 error envelope), from the
  ``Content-Length`` before a byte is read, or as the body streams in when it has none.

The cap on open SSE streams (429 ``too_many_streams``) and the bounded queue (429
``queue_full`` with ``Retry-After``) are where the streams and the jobs are counted: in
``v2_jobs.events`` and ``Service.submit_job``.

And :func:`check_bind`: a non-loopback ``--host`` without a token is refused before the
socket is opened.

Secrets (the token, RunComfy credentials, machine URLs) never enter a response or a log line:
the refusals below say what was wrong, never a credential presented (a refused Host is
named: it is what the address bar shows, no secret).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import ipaddress
import logging
import re
import time
import urllib.parse
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Any, Final, TypeAlias

import attrs
from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from conjure_actors.errors import UsageError
from conjure_actors.service.responses import JSONResponse

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MAX_UPLOAD_BYTES",
    "HostMiddleware",
    "SecurityMiddleware",
    "SecuritySettings",
    "UrlSigner",
    "check_bind",
    "error_response",
    "is_loopback_host",
    "is_loopback_name",
    "normalize_allowed_host",
    "normalize_origin",
    "parse_forwarded_allow_ips",
    "security_middleware",
    "url_signer",
]

DEFAULT_MAX_BODY_BYTES: Final = 8 * 1024 * 1024
"""A JSON body (a workflow): 8 MiB is far above any real API-format graph."""
DEFAULT_MAX_UPLOAD_BYTES: Final = 100 * 1024 * 1024
"""A multipart body (an asset, the front end's image)."""
MULTIPART_SLACK: Final = 64 * 1024
"""What a multipart body may carry beyond its file (boundaries, headers, form fields)."""

OPEN_PATHS: Final = frozenset({"/api/v2/health"})
"""Paths answered without a token (probes)."""


CORS_METHODS: Final = ("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS")
CORS_HEADERS: Final = (
    "Authorization",
    "Content-Type",
    "Idempotency-Key",
    "Range",
    "If-Range",
    "If-None-Match",
    "If-Match",
    "If-Modified-Since",
    "Last-Event-ID",
    "Cache-Control",
)
"""The request headers a listed origin may send: the API's own, the conditional ones a
page's ``fetch`` of a file sends (a download resumed with ``Range`` + ``If-Range``, a
revalidation with ``If-None-Match``: QA10 F1, a preflight asking for them was 403), and the
two fetch-based SSE readers add (``Last-Event-ID`` on a reconnect, ``Cache-Control``)."""
CORS_EXPOSE: Final = (
    "Retry-After",
    "Content-Range",
    "Accept-Ranges",
    "Location",
    "ETag",
    "Content-Disposition",
)
"""The response headers a listed origin's script may read beyond the safelisted ones: a
file's validators (``ETag``, which ``If-Range`` / ``If-None-Match`` send back) and its name
(``Content-Disposition``, to save a GLB under it), besides the API's own."""


# ----------------------------------------------------------------------------- settings


def normalize_origin(value: str) -> str:
    """``"https://App.example.com:443/"`` -> ``"https://app.example.com"``: the form a browser
    sends in ``Origin``. ``*``, paths, userinfo and non-http(s) schemes are usage errors."""
    raw = value.strip()
    if raw == "*":
        raise UsageError("--cors-origin '*' is refused: list each origin (https://app.example)")
    parsed = urllib.parse.urlsplit(raw)
    try:
        port = parsed.port
    except ValueError:
        port = -1
    if (
        parsed.scheme not in ("http", "https")
        or not parsed.hostname
        or "@" in parsed.netloc
        or parsed.path not in ("", "/")
        or parsed.query
        or parsed.fragment
        or port == -1
        or parsed.netloc.endswith(":")
    ):
        raise UsageError(
            f"--cors-origin {raw!r} is not an origin: give scheme://host[:port], e.g."
            " https://app.example"
        )
    host = parsed.hostname.lower()
    host = f"[{host}]" if ":" in host else host
    default = {"http": 80, "https": 443}[parsed.scheme]
    if port is None or port == default:
        return f"{parsed.scheme}://{host}"
    return f"{parsed.scheme}://{host}:{port}"


def _normalize_origins(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(normalize_origin(v) for v in values)


_NAME: Final = re.compile(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*\.?")
"""A host name as a Host header may carry it (letters, digits, ``-``, ``_``; a final dot)."""


def _authority_of(authority: str) -> tuple[str, int | None] | None:
    """A Host header's ``host[:port]`` as (name, port): the name in lower case, IPv6 without
    brackets, a final dot dropped; None when it is not a well-formed authority (no userinfo,
    path, space or stray character: such a Host names nothing this service answers)."""
    value = authority.strip().lower()
    if value.startswith("["):
        inside, bracket, rest = value[1:].partition("]")
        try:
            ipaddress.IPv6Address(inside)
        except ValueError:
            return None
        port = rest.removeprefix(":")
        ok = bool(bracket) and (
            rest == "" or (rest[0] == ":" and port.isascii() and port.isdigit())
        )
        return (inside, int(port) if port else None) if ok else None
    name, colon, port = value.partition(":")
    if colon and not (port.isascii() and port.isdigit()):
        return None
    if not name or not _NAME.fullmatch(name):
        return None
    return name.removesuffix("."), int(port) if colon else None


def _host_name_of(authority: str) -> str | None:
    """The name of a Host header's ``host[:port]`` (:func:`_authority_of`), or None."""
    parsed = _authority_of(authority)
    return parsed[0] if parsed is not None else None


def is_loopback_name(name: str) -> bool:
    """Whether a Host name can only mean this machine: ``localhost`` and its subdomains
    (RFC 6761: browsers resolve them to loopback themselves), ``127.0.0.0/8`` and ``::1``.
    ``name`` as :func:`_host_name_of` gives it."""
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def normalize_allowed_host(value: str) -> str:
    """``"Comfy.LAN."`` -> ``"comfy.lan"``: an ``--allowed-host`` name as Host names are
    compared (any port). ``*``, a port, a scheme or a path are usage errors."""
    raw = value.strip()
    candidate = raw
    if raw.startswith("["):
        port_given = not raw.endswith("]")
    elif raw.count(":") > 1:  # a bare IPv6 address
        candidate, port_given = f"[{raw}]", False
    else:
        port_given = ":" in raw
    name = None if port_given else _host_name_of(candidate)
    if name is None:
        raise UsageError(
            f"--allowed-host {raw!r} is not a host name: give the name alone, as the browser"
            " sends it in Host (e.g. comfy.lan; no scheme, port, path or '*')"
        )
    return name


def _normalize_allowed_hosts(values: Iterable[str]) -> frozenset[str]:
    return frozenset(normalize_allowed_host(v) for v in values)


Network: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_forwarded_allow_ips(values: Iterable[str]) -> tuple[Network, ...]:
    """``["127.0.0.1,::1", "10.0.0.0/8"]`` -> those networks (an address is a /32 or /128):
    the peers whose forwarded headers are trusted (``--forwarded-allow-ips``)."""
    networks: list[Network] = []
    for value in values:
        for item in (part.strip() for part in value.split(",")):
            if not item:
                continue
            try:
                networks.append(ipaddress.ip_network(item.strip("[]"), strict=False))
            except ValueError:
                raise UsageError(
                    f"--forwarded-allow-ips {item!r} is not an address or a network: give"
                    " the reverse proxy's, e.g. 127.0.0.1,::1 (or 10.0.0.0/8)"
                ) from None
    return tuple(networks)


@attrs.frozen
class SecuritySettings:
    """The limits and credentials ``serve`` runs with (``--token``, ``--cors-origin``...)."""

    token: str | None = attrs.field(default=None, repr=False)
    cors_origins: tuple[str, ...] = attrs.field(default=(), converter=_normalize_origins)
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    allowed_hosts: frozenset[str] = attrs.field(
        default=frozenset(), converter=_normalize_allowed_hosts
    )
    """``--allowed-host``: Host names answered besides the loopback ones."""
    forwarded_allow_ips: tuple[Network, ...] = attrs.field(
        default=(), converter=parse_forwarded_allow_ips
    )
    """``--forwarded-allow-ips``: peers whose X-Forwarded-*/Forwarded headers are trusted."""

    @property
    def checks_host(self) -> bool:
        """Whether a request's Host must be a loopback name or an allowed one: always
        without a token (loopback only then; DNS rebinding), with one only when
        ``--allowed-host`` lists names."""
        return self.token is None or bool(self.allowed_hosts)


def is_loopback_host(host: str) -> bool:
    """Whether binding ``host`` keeps the service on this machine (``""`` binds everything)."""
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Refuse a non-loopback ``host`` without a token (one clear line; the CLI exits 2)."""
    if not is_loopback_host(host) and not token:
        raise UsageError(
            f"refusing to listen on {host or 'every interface'!r} without a token: pass"
            " --token (or set CONJURE_TOKEN), or keep the default --host 127.0.0.1"
        )


# ------------------------------------------------------------------------- signed URLs

SIGNING_LABEL: Final = b"conjure-actors signed URL v1"
"""What the URL-signing key is derived with from the token (HMAC-SHA256(token, label)): a
signature never carries or reveals the token, and a new token voids every URL signed."""
SIGNED_PATHS: Final = re.compile(
    r"/api/v2/(?:assets/[^/]+/content|jobs/[^/]+/events)|/api/conjure/events"
)
"""The paths a signed URL may open (what a browser loads with no header: an ``<img src>``,
an ``EventSource``): an asset's bytes, a job's events and the many-jobs stream, nothing
else."""
QUERY_SIGNED_PATHS: Final = re.compile(r"/api/conjure/events")
"""Signed paths whose query is signed too (which jobs the stream follows): a URL signed for
some jobs opens no other's."""
SIGNED_QUERY: Final = ("expires", "sig")
_EXPIRES_DIGITS: Final = 12
"""Digits of an ``expires`` at most (epoch seconds; past the year 33000)."""
_SIGNER_KEY: Final = "conjure.url_signer"
"""Where :class:`SecurityMiddleware` leaves the signer in a request's scope."""


@attrs.frozen
class UrlSigner:
    """Signs and checks the capability URLs of :data:`SIGNED_PATHS` (module docstring)."""

    key: bytes = attrs.field(repr=False)

    @classmethod
    def from_token(cls, token: str) -> UrlSigner:
        return cls(hmac.new(token.encode(), SIGNING_LABEL, hashlib.sha256).digest())

    def signature(self, path: str, expires: str, rest: str = "") -> str:
        """base64url (no padding) of HMAC-SHA256 over ``path``, ``expires`` as sent, and
        (for :data:`QUERY_SIGNED_PATHS`) ``rest``, the rest of the query (:func:`_rest`)."""
        text = f"{path}\n{expires}" + (f"\n{rest}" if rest else "")
        mac = hmac.new(self.key, text.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()

    def sign(self, path: str, expires: int, query: Sequence[tuple[str, str]] = ()) -> str:
        """``path?[query&]expires=...&sig=...``: ``path`` (with ``query``, signed too for
        :data:`QUERY_SIGNED_PATHS`) opened without a token until ``expires``."""
        stamp = str(int(expires))
        rest = urllib.parse.urlencode(sorted(query))
        signed = rest if QUERY_SIGNED_PATHS.fullmatch(path) else ""
        head = f"{path}?{rest}&" if rest else f"{path}?"
        return f"{head}expires={stamp}&sig={self.signature(path, stamp, signed)}"

    def refusal(self, path: str, query: bytes, now: float) -> str | None:
        """Why a request for ``path`` with this query string is not a valid signed one
        (None: it is). The signature is checked over the ``expires`` exactly as sent, so
        any change of path, expiry or signature is refused."""
        found: dict[str, list[str]] = {}
        for key, value in urllib.parse.parse_qsl(query.decode("latin-1"), keep_blank_values=True):
            if key in SIGNED_QUERY:
                found.setdefault(key, []).append(value)
        expires, sig = found.get("expires", []), found.get("sig", [])
        stamp = expires[0] if len(expires) == 1 else ""
        ok = (
            len(sig) == 1
            and SIGNED_PATHS.fullmatch(path) is not None
            and 0 < len(stamp) <= _EXPIRES_DIGITS
            and stamp.isascii()
            and stamp.isdigit()
        )
        # compare_digest on bytes: a presented signature of any characters is compared.
        presented = sig[0].encode() if len(sig) == 1 else b""
        rest = _rest(query) if QUERY_SIGNED_PATHS.fullmatch(path) else ""
        expected = self.signature(path, stamp, rest).encode()
        if not hmac.compare_digest(presented, expected) or not ok:
            return (
                "this signed URL is not valid (altered, or signed under another token): get"
                " a fresh one from the API (GET the asset or the job with the bearer token),"
                " or send Authorization: Bearer <token>"
            )
        if int(stamp) <= now:
            return (
                "this signed URL has expired: get a fresh one from the API (GET the asset or"
                " the job with the bearer token), or send Authorization: Bearer <token>"
            )
        return None


_SIG_IN_TEXT: Final = re.compile(r"(?<![A-Za-z0-9_])sig=[^&\s\"'<>]*")


class _RedactSignatures(logging.Filter):
    """Replaces every ``sig=...`` of a log line by ``sig=REDACTED``: no access log is
    written by ``serve``, but an embedder may turn one on (``hypercorn.access``), an SSE
    body logged at DEBUG (``sse_starlette``) carries the job's signed URLs, and so does
    a client's request line (``httpx``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "sig=" in message:
            record.msg, record.args = _SIG_IN_TEXT.sub("sig=REDACTED", message), None
        return True


_REDACT_SIGNATURES: Final = _RedactSignatures()
for _name in ("hypercorn.access", "uvicorn.access", "sse_starlette.sse", "httpx"):
    logging.getLogger(_name).addFilter(_REDACT_SIGNATURES)


def url_signer(scope: Scope) -> UrlSigner | None:
    """The signer of the service this request reached (None: no token, URLs stay plain)."""
    signer: UrlSigner | None = scope.get(_SIGNER_KEY)
    return signer


def _rest(query: bytes) -> str:
    """A query without ``expires`` and ``sig``, as :meth:`UrlSigner.sign` wrote it (its
    pairs sorted, encoded alike): what a query-signed path's signature covers."""
    pairs = urllib.parse.parse_qsl(query.decode("latin-1"), keep_blank_values=True)
    return urllib.parse.urlencode(sorted((k, v) for k, v in pairs if k not in SIGNED_QUERY))


def _asks_signed(query: bytes) -> bool:
    return b"sig=" in query or b"expires=" in query


# ------------------------------------------------------------------------------ errors


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    details: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """The v2 error envelope: ``{"error": {"code", "message", "details"}}``."""
    body = {"error": {"code": code, "message": message, "details": details}}
    return JSONResponse(body, status_code=status, headers=headers)


# -------------------------------------------------------------------------- middleware


class _BodyTooLargeError(Exception):
    """Raised from ``receive`` when a body without Content-Length passes its limit."""


_CHECKED: Final = frozenset(
    {b"origin", b"sec-fetch-site", b"host", b"authorization", b"content-length", b"content-type"}
)


def _checked_headers(scope: Scope) -> dict[bytes, str]:
    """The headers the checks read, in one pass over the request's (the first of a
    repeated name wins): five scans per request were ~1 us of it."""
    found: dict[bytes, str] = {}
    for key, value in scope.get("headers", ()):
        if key in _CHECKED and key not in found:
            found[key] = bytes(value).decode("latin-1")
    return found


def origin_refusal(
    scope: Scope, allowed: Collection[str], headers: dict[bytes, str] | None = None
) -> str | None:
    """Why ComfyUI's origin check refuses this request (None: it passes). ``headers``: the
    request's :func:`_checked_headers`, if read already."""
    if headers is None:
        headers = _checked_headers(scope)
    origin = headers.get(b"origin")
    if origin is not None and origin in allowed:
        return None
    if headers.get(b"sec-fetch-site") == "cross-site":
        return "cross-site browser requests are refused"
    host = headers.get(b"host")
    if origin is None or host is None:
        return None
    authority = _authority_of(host)
    if authority is None:  # names nothing: a page's request is not taken on trust
        return "the request's Host header is not a well-formed host[:port]"
    host_name, host_port = authority
    if not is_loopback_name(host_name):
        # As ComfyUI does: only a loopback Host is checked, so a reverse proxy that
        # rewrites Host in front of a real deployment keeps working. (Without a token,
        # HostMiddleware has refused every other Host already.) Loopback as the Host
        # check reads it: *.localhost too, which browsers resolve to this machine.
        return None
    parsed = urllib.parse.urlsplit(origin)
    origin_name = (parsed.hostname or "").lower().removesuffix(".")
    try:
        origin_port = parsed.port
    except ValueError:
        origin_port = None
    same_host = origin_name == host_name
    same_port = origin_port is None or host_port is None or origin_port == host_port
    if same_host and same_port:
        return None
    return "the request's Origin does not match its Host: list it with --cors-origin"


def _authorized(headers: dict[bytes, str], token: str) -> bool:
    header = headers.get(b"authorization") or ""
    scheme, _, presented = header.partition(" ")
    # compare_digest on bytes: a non-ASCII token is compared, not refused with TypeError.
    ok = hmac.compare_digest(presented.strip().encode(), token.encode())
    return ok and scheme.lower() == "bearer"


_FORWARDED_PAIR: Final = re.compile(
    r"""\s*([!#$%&'*+.^_`|~0-9A-Za-z-]+)=("(?:[^"\\]|\\.)*"|[^;,"\s]*)\s*([;,]|$)"""
)
"""One ``key=value`` of a ``Forwarded`` element (RFC 7239), and the separator after it."""


def _forwarded_last(value: str) -> dict[str, str]:
    """The pairs of the last element of a ``Forwarded`` header (the one the nearest proxy
    added), keys in lower case; empty when the header does not parse."""
    elements: list[dict[str, str]] = [{}]
    pos, value = 0, value.strip()
    while pos < len(value):
        match = _FORWARDED_PAIR.match(value, pos)
        if match is None or match.end() == pos:
            return {}
        key, raw, sep = match.groups()
        if raw.startswith('"'):
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        elements[-1][key.lower()] = raw
        if sep == ",":
            elements.append({})
        pos = match.end()
    return elements[-1]


def forwarded_address(headers: dict[bytes, str]) -> tuple[str | None, str | None]:
    """The scheme and host a proxy says the browser used: the last ``X-Forwarded-Proto``
    and ``X-Forwarded-Host`` values (the nearest proxy's), or, when it sends neither, the
    ``proto``/``host`` of the last ``Forwarded`` element (a proxy that sets the X- ones may
    pass a client's ``Forwarded`` through untouched). A scheme other than http(s) is None;
    the host is returned as sent (:class:`HostMiddleware` checks it)."""
    proto = headers.get(b"x-forwarded-proto")
    host = headers.get(b"x-forwarded-host")
    if proto is None and host is None:
        pairs = _forwarded_last(headers.get(b"forwarded") or "")
        proto, host = pairs.get("proto"), pairs.get("host")
    else:
        proto = proto.rsplit(",", 1)[-1].strip() if proto is not None else None
        host = host.rsplit(",", 1)[-1].strip() if host is not None else None
    scheme = proto.lower() if proto and proto.lower() in ("http", "https") else None
    return scheme, host


@functools.lru_cache(maxsize=256)
def _answers(authority: str, allowed: frozenset[str]) -> bool:
    """Whether a Host (``host[:port]``) names this service: loopback or ``allowed``."""
    name = _host_name_of(authority)
    return name is not None and (is_loopback_name(name) or name in allowed)


@functools.lru_cache(maxsize=256)
def _peer_trusted(peer: str, trusted: tuple[Network, ...]) -> bool:
    try:
        address = ipaddress.ip_address(peer.strip("[]"))
    except ValueError:  # a Unix socket's path, or no address at all
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in trusted)


_ADDRESSING: Final = frozenset({b"host", b"x-forwarded-proto", b"x-forwarded-host", b"forwarded"})


class HostMiddleware:
    """Pure ASGI: which Host a request may name, and, from a trusted proxy, the scheme and
    host its URLs are built with (the module docstring says why and when)."""

    def __init__(self, app: ASGIApp, *, settings: SecuritySettings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers: dict[bytes, str] = {}
        for key, value in scope.get("headers", ()):
            if key in _ADDRESSING:
                text = bytes(value).decode("latin-1")
                # Repeated: Host's first wins (as _checked_headers), the forwarded ones add up.
                if key == b"host":
                    headers.setdefault(key, text)
                else:
                    headers[key] = f"{headers[key]},{text}" if key in headers else text
        scheme = forwarded_host = None
        client = scope.get("client")
        trusted = self.settings.forwarded_allow_ips
        if trusted and client and _peer_trusted(str(client[0]), trusted):
            scheme, forwarded_host = forwarded_address(headers)
        if self.settings.checks_host:
            for host in (headers.get(b"host"), forwarded_host):
                if host is not None and not _answers(host, self.settings.allowed_hosts):
                    await self._refusal(scope, host)(scope, receive, send)
                    return
        if forwarded_host is not None and _host_name_of(forwarded_host) is None:
            forwarded_host = None  # not a host: the URLs keep the request's own
        if scheme is not None or forwarded_host is not None:
            scope = dict(scope)
            if scheme is not None:
                scope["scheme"] = scheme
            if forwarded_host is not None:
                scope["headers"] = [
                    *((k, v) for k, v in scope["headers"] if k != b"host"),
                    (b"host", forwarded_host.encode("latin-1")),
                ]
        await self.app(scope, receive, send)

    def _refusal(self, scope: Scope, host: str) -> JSONResponse:
        shown = host if len(host) <= 80 else host[:80] + "..."
        if self.settings.token is not None:
            why = (
                f"Host {shown!r} is not one this service answers: use a loopback name or one"
                " listed with --allowed-host"
            )
        else:
            why = (
                f"Host {shown!r} is not this service's (it listens on loopback and answers"
                f" loopback names only, against DNS rebinding): use {_loopback_url(scope)},"
                " list the name with --allowed-host NAME (a local reverse proxy's), or start"
                " serve with --token"
            )
        return error_response(403, "forbidden", why)


def _loopback_url(scope: Scope) -> str:
    """``http://127.0.0.1:<port>``: where this service answers (its bound port)."""
    server = scope.get("server")
    if not server or server[1] is None:
        return "http://127.0.0.1:<port>"
    host = str(server[0])
    name = _host_name_of(f"[{host}]" if ":" in host else host)
    if name is None or not is_loopback_name(name):
        host = "127.0.0.1"
    return f"http://[{host}]:{server[1]}" if ":" in host else f"http://{host}:{server[1]}"


class SecurityMiddleware:
    """Pure ASGI (so SSE streams pass untouched): origin check, token (or a signed URL),
    body size. ``now``: the clock the signed URLs' expiries are in (the service's)."""

    def __init__(
        self, app: ASGIApp, *, settings: SecuritySettings, now: Callable[[], float] = time.time
    ) -> None:
        self.app = app
        self.settings = settings
        self.now = now
        self.signer = UrlSigner.from_token(settings.token) if settings.token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = _checked_headers(scope)
        limit = self._limit(headers)
        refusal = self._refuse(scope, headers, limit)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        if self.signer is not None:
            scope = {**scope, _SIGNER_KEY: self.signer}
        await self._limited(scope, receive, send, limit)

    def _refuse(self, scope: Scope, headers: dict[bytes, str], limit: int) -> JSONResponse | None:
        signed = self._signed_refusal(scope)
        if signed is None:
            # A valid signed URL is a credential, not an ambient request: it opens from any
            # page it was given to (an <img> of another site sends no Origin, and
            # Sec-Fetch-Site: cross-site), as the bearer token would.
            return None
        why = origin_refusal(scope, self.settings.cors_origins, headers)
        if why is not None:
            return error_response(403, "forbidden", why)
        token = self.settings.token
        if (
            token
            and scope["path"] not in OPEN_PATHS
            and scope["method"] != "OPTIONS"
            and not _authorized(headers, token)
        ):
            return error_response(
                401,
                "unauthorized",
                signed or "missing or wrong bearer token: send Authorization: Bearer <token>",
                headers={"WWW-Authenticate": "Bearer"},
            )
        length = headers.get(b"content-length")
        if length is not None and length.strip().isdigit() and int(length) > limit:
            return self._too_large(limit)
        return None

    def _signed_refusal(self, scope: Scope) -> str | None:
        """For a request presenting a signed URL: None when it is a GET/HEAD of a valid one,
        else why not; ``""`` when it presents none (or there is no token: no signer)."""
        query = scope.get("query_string", b"")
        if self.signer is None or not _asks_signed(query):
            return ""
        if scope["method"] not in ("GET", "HEAD"):
            return "a signed URL opens only with GET or HEAD: send Authorization: Bearer <token>"
        return self.signer.refusal(scope["path"], query, self.now())

    def _limit(self, headers: dict[bytes, str]) -> int:
        ctype = (headers.get(b"content-type") or "").lower()
        if ctype.startswith("multipart/"):
            return self.settings.max_upload_bytes + MULTIPART_SLACK
        return self.settings.max_body_bytes

    @staticmethod
    def _too_large(limit: int) -> JSONResponse:
        return error_response(
            413,
            "payload_too_large",
            f"the request body is larger than this service accepts ({limit} bytes)",
            details={"limit_bytes": limit},
        )

    async def _limited(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        if scope["method"] in ("GET", "HEAD", "DELETE", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        seen = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _BodyTooLargeError
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, watched_send)
        except _BodyTooLargeError:
            if started:
                raise
        except BaseExceptionGroup as group:
            matched, rest = group.split(_BodyTooLargeError)
            if matched is None or started:
                raise
            if rest is not None:
                raise rest from None
        else:
            return
        await self._too_large(limit)(scope, receive, send)


class _CORSMiddleware(CORSMiddleware):
    """Starlette's, but a refused preflight is the v2 envelope (403 ``forbidden``, saying
    what was refused and what to do), not a 400 ``text/plain`` "Disallowed CORS ..."."""

    def preflight_response(self, request_headers: Headers) -> Response:
        answer = super().preflight_response(request_headers)
        if answer.status_code < 400:
            return answer
        headers = {
            key: value
            for key, value in answer.headers.items()
            # Starlette grants private network access on a refused preflight too: a
            # refusal grants nothing.
            if key not in ("content-length", "content-type", "access-control-allow-private-network")
        }
        return error_response(403, "forbidden", self._why(request_headers), headers=headers)

    def _why(self, request_headers: Headers) -> str:
        if not self.is_allowed_origin(request_headers["origin"]):
            # Never the list: which origins may call is not this page's business.
            return "this origin may not call the service: list it with --cors-origin"
        method = request_headers["access-control-request-method"]
        if method not in self.allow_methods:
            return f"method {method!r} is not allowed here: use one of {', '.join(CORS_METHODS)}"
        asked = request_headers.get("access-control-request-headers") or ""
        refused = [
            h.strip() for h in asked.split(",") if h.strip().lower() not in self.allow_headers
        ]
        if refused:
            return (
                f"request header {refused[0]!r} is not allowed: send only"
                f" {', '.join(CORS_HEADERS)} (and the CORS-safelisted ones)"
            )
        return "this cross-origin request is refused (private network access is not allowed)"


def security_middleware(
    settings: SecuritySettings, *, now: Callable[[], float] = time.time
) -> list[Middleware]:
    """The middleware list for ``Starlette(middleware=...)``, outermost first: the Host
    check and forwarded headers (only when there is a Host to check or a proxy to trust),
    CORS for the listed origins (only when some are listed), then
    :class:`SecurityMiddleware` (``now``: the clock of the signed URLs' expiries)."""
    stack: list[Middleware] = []
    if settings.checks_host or settings.forwarded_allow_ips:
        stack.append(Middleware(HostMiddleware, settings=settings))
    if settings.cors_origins:
        stack.append(
            Middleware(
                _CORSMiddleware,
                allow_origins=list(settings.cors_origins),
                allow_methods=list(CORS_METHODS),
                allow_headers=list(CORS_HEADERS),
                expose_headers=list(CORS_EXPOSE),
                allow_credentials=True,
                # A page of a listed (public) origin calling serve on a loopback or private
                # address: Chromium's Private Network Access preflight asks for this.
                allow_private_network=True,
            )
        )
    stack.append(Middleware(SecurityMiddleware, settings=settings, now=now))
    return stack
