"""The security layer on its own: a small Starlette app behind ``security_middleware``."""

from __future__ import annotations

import httpx
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as hs
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from conjure_actors.errors import UsageError
from conjure_actors.service.security import (
    SecuritySettings,
    check_bind,
    is_loopback_host,
    normalize_origin,
    origin_refusal,
    security_middleware,
)

TOKEN = "s3cret-token-value"


def make_app(settings: SecuritySettings) -> tuple[Starlette, list]:
    """An app with an echo route that stores what it accepted, health, and an SSE route."""
    stored: list[bytes] = []
    release = trio.Event()

    async def echo(request: Request) -> Response:
        body = await request.body()
        stored.append(body)
        return JSONResponse({"size": len(body)}, status_code=201)

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def events(request: Request) -> Response:
        async def stream():  # type: ignore[no-untyped-def]
            yield b"event: status\ndata: {}\n\n"
            await release.wait()

        return StreamingResponse(stream(), media_type="text/event-stream")

    app = Starlette(
        routes=[
            Route("/api/v2/jobs", echo, methods=["POST"]),
            Route("/api/v2/health", health),
            Route("/api/v2/jobs/{id}/events", events),
        ],
        middleware=security_middleware(settings),
    )
    app.state.release = release
    return app, stored


def _scope(method: str, path: str) -> dict:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1:8189"), (b"content-type", b"application/json")],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8189),
    }


async def asgi_call(
    app: Starlette,
    method: str,
    path: str,
    chunks: list[bytes] = (),  # type: ignore[assignment]
    started: trio.Event | None = None,
) -> list[dict]:
    """Call the ASGI app directly (httpx's transport neither streams a body without length
    nor a response): the request body arrives in ``chunks``; returns every message sent."""
    messages = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
        for i, c in enumerate(chunks)
    ] or [{"type": "http.request", "body": b"", "more_body": False}]
    sent: list[dict] = []
    disconnected = trio.Event()

    async def receive() -> dict:
        if messages:
            return messages.pop(0)
        await disconnected.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)
        if started is not None and message["type"] == "http.response.start":
            started.set()

    await app(_scope(method, path), receive, send)
    return sent


def client(app: Starlette, host: str = "127.0.0.1:8189") -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=f"http://{host}")


async def test_wrong_token_is_401_unauthorized_and_nothing_stored() -> None:
    """A wrong bearer token is refused 401 with the v2 envelope; the route never runs."""
    app, stored = make_app(SecuritySettings(token=TOKEN))
    async with client(app) as c:
        r = await c.post("/api/v2/jobs", content=b"{}", headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "unauthorized"
    assert TOKEN not in r.text
    assert stored == []


async def test_missing_token_is_401() -> None:
    """No Authorization header at all is 401 when a token is set."""
    app, stored = make_app(SecuritySettings(token=TOKEN))
    async with client(app) as c:
        r = await c.post("/api/v2/jobs", content=b"{}")
    assert (r.status_code, r.json()["error"]["code"]) == (401, "unauthorized")
    assert stored == []


async def test_right_token_passes() -> None:
    """The right bearer token reaches the route."""
    app, stored = make_app(SecuritySettings(token=TOKEN))
    async with client(app) as c:
        r = await c.post(
            "/api/v2/jobs", content=b"{}", headers={"Authorization": f"Bearer {TOKEN}"}
        )
    assert r.status_code == 201
    assert stored == [b"{}"]


async def test_health_needs_no_token() -> None:
    """Probes reach /api/v2/health without a credential."""
    app, _ = make_app(SecuritySettings(token=TOKEN))
    async with client(app) as c:
        r = await c.get("/api/v2/health")
    assert r.status_code == 200


async def test_oversized_body_is_413_before_the_route_runs() -> None:
    """A Content-Length over the limit is refused 413 ``payload_too_large``; nothing stored."""
    app, stored = make_app(SecuritySettings(max_body_bytes=100))
    async with client(app) as c:
        r = await c.post("/api/v2/jobs", content=b"x" * 101)
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "payload_too_large"
    assert stored == []


async def test_oversized_chunked_body_is_413() -> None:
    """A body streamed without Content-Length is cut off at the limit, 413, nothing stored."""
    app, stored = make_app(SecuritySettings(max_body_bytes=100))

    sent = await asgi_call(app, "POST", "/api/v2/jobs", [b"x" * 50] * 10)
    assert sent[0]["status"] == 413
    assert b'"payload_too_large"' in b"".join(m.get("body", b"") for m in sent[1:])
    assert stored == []


async def test_multipart_gets_the_upload_limit() -> None:
    """A multipart body is measured against the upload limit, not the JSON one."""
    app, stored = make_app(SecuritySettings(max_body_bytes=100, max_upload_bytes=1000))
    async with client(app) as c:
        r = await c.post("/api/v2/jobs", files={"file": ("a.png", b"x" * 1000, "image/png")})
    assert r.status_code == 201
    assert len(stored) == 1


async def test_foreign_origin_on_loopback_is_403() -> None:
    """A browser request whose Origin host differs from the loopback Host is refused."""
    app, stored = make_app(SecuritySettings())
    async with client(app) as c:
        r = await c.post("/api/v2/jobs", content=b"{}", headers={"Origin": "https://evil.example"})
    assert (r.status_code, r.json()["error"]["code"]) == (403, "forbidden")
    assert stored == []


async def test_cross_site_fetch_is_403() -> None:
    """``Sec-Fetch-Site: cross-site`` is refused even without an Origin header."""
    app, stored = make_app(SecuritySettings())
    async with client(app) as c:
        r = await c.post("/api/v2/jobs", content=b"{}", headers={"Sec-Fetch-Site": "cross-site"})
    assert r.status_code == 403
    assert stored == []


async def test_same_origin_passes() -> None:
    """The service's own page (Origin = Host) passes the origin check."""
    app, _ = make_app(SecuritySettings())
    async with client(app) as c:
        r = await c.post("/api/v2/jobs", content=b"{}", headers={"Origin": "http://127.0.0.1:8189"})
    assert r.status_code == 201


async def test_listed_origin_gets_cors_headers() -> None:
    """A listed origin passes and gets its own name back (never ``*``)."""
    app, _ = make_app(SecuritySettings(cors_origins=("https://app.example",)))
    async with client(app) as c:
        r = await c.post("/api/v2/jobs", content=b"{}", headers={"Origin": "https://app.example"})
        pre = await c.options(
            "/api/v2/jobs",
            headers={
                "Origin": "https://app.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type",
            },
        )
    assert r.status_code == 201
    assert r.headers["access-control-allow-origin"] == "https://app.example"
    assert pre.status_code == 200
    assert pre.headers["access-control-allow-origin"] == "https://app.example"


@pytest.mark.parametrize("asked", ["range, if-range", "if-none-match"])
async def test_a_listed_origin_may_send_a_files_conditional_headers(asked: str) -> None:
    """A page resumes a download (Range + If-Range) or revalidates (If-None-Match) with
    fetch: its preflight passes (QA10 F1: 403, and the browser blocked the request)."""
    app, _ = make_app(SecuritySettings(cors_origins=("https://app.example",)))
    async with client(app) as c:
        pre = await c.options(
            "/api/v2/jobs",
            headers={
                "Origin": "https://app.example",
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": asked,
            },
        )
    assert pre.status_code == 200, pre.text
    allowed = pre.headers["access-control-allow-headers"].lower()
    assert all(name.strip() in allowed for name in asked.split(","))


async def test_a_listed_origins_script_reads_a_files_etag_and_name() -> None:
    """ETag (the validator a page sends back) and Content-Disposition are exposed."""
    app, _ = make_app(SecuritySettings(cors_origins=("https://app.example",)))
    async with client(app) as c:
        r = await c.post("/api/v2/jobs", content=b"{}", headers={"Origin": "https://app.example"})
    exposed = {h.strip().lower() for h in r.headers["access-control-expose-headers"].split(",")}
    assert {"etag", "content-disposition"} <= exposed


async def test_unlisted_origin_gets_no_cors_headers() -> None:
    """An origin not on the list is refused and gets no CORS header."""
    app, _ = make_app(SecuritySettings(cors_origins=("https://app.example",)))
    async with client(app) as c:
        r = await c.post("/api/v2/jobs", content=b"{}", headers={"Origin": "https://other.example"})
    assert r.status_code == 403
    assert "access-control-allow-origin" not in r.headers


async def test_preflight_of_an_unlisted_origin_is_403_forbidden_in_the_envelope() -> None:
    """A CORS preflight from an origin not on the list: 403 ``forbidden`` in the JSON
    envelope, no CORS grant (was Starlette's 400 text/plain "Disallowed CORS origin")."""
    app, _ = make_app(SecuritySettings(cors_origins=("https://app.example",)))
    async with client(app) as c:
        r = await c.options(
            "/api/v2/jobs",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
        )
    assert (r.status_code, r.headers["content-type"]) == (403, "application/json")
    assert r.json()["error"]["code"] == "forbidden"
    assert "--cors-origin" in r.json()["error"]["message"]
    assert "app.example" not in r.text
    assert "access-control-allow-origin" not in r.headers


async def test_preflight_of_a_listed_origin_for_a_method_not_allowed_is_403_naming_it() -> None:
    """A listed origin's preflight for a method the service does not take: 403
    ``forbidden`` naming the method and the ones it takes (was 400 text/plain)."""
    app, _ = make_app(SecuritySettings(cors_origins=("https://app.example",)))
    async with client(app) as c:
        r = await c.options(
            "/api/v2/jobs",
            headers={"Origin": "https://app.example", "Access-Control-Request-Method": "PATCH"},
        )
    assert (r.status_code, r.json()["error"]["code"]) == (403, "forbidden")
    assert "'PATCH'" in r.json()["error"]["message"]


def test_star_origin_is_a_usage_error() -> None:
    """``--cors-origin '*'`` is refused with a clear line."""
    with pytest.raises(UsageError, match=r"\*"):
        SecuritySettings(cors_origins=("*",))


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("https://App.Example:443/", "https://app.example"),
        ("http://localhost:5173", "http://localhost:5173"),
        ("http://[::1]:80", "http://[::1]"),
    ],
)
def test_normalize_origin(raw: str, expected: str) -> None:
    """Origins are normalized to what a browser sends."""
    assert normalize_origin(raw) == expected


@pytest.mark.parametrize("raw", ["ftp://x", "https://a/b", "https://u@h", "https://h:", "h"])
def test_bad_origin_is_refused(raw: str) -> None:
    """Anything but scheme://host[:port] is a usage error."""
    with pytest.raises(UsageError):
        normalize_origin(raw)


def test_non_loopback_bind_without_token_is_refused() -> None:
    """``--host 0.0.0.0`` without a token is one clear usage error."""
    with pytest.raises(UsageError, match="--token"):
        check_bind("0.0.0.0", None)


def test_non_loopback_bind_with_token_is_allowed() -> None:
    """A token makes a non-loopback bind acceptable."""
    check_bind("0.0.0.0", TOKEN)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.1", "::1", "[::1]", "localhost"])
def test_loopback_hosts(host: str) -> None:
    """Loopback addresses need no token."""
    assert is_loopback_host(host)
    check_bind(host, None)


@pytest.mark.parametrize("host", ["", "0.0.0.0", "::", "192.168.1.4", "example.com"])
def test_non_loopback_hosts(host: str) -> None:
    """Every other address (and the empty one: all interfaces) is not loopback."""
    assert not is_loopback_host(host)


_HOSTS = hs.sampled_from(["127.0.0.1", "localhost", "[::1]", "app.localhost", "127.8.9.1"])
_NAMES = hs.sampled_from(
    ["127.0.0.1", "localhost", "[::1]", "app.localhost", "evil.example", "app.example"]
)
_PORTS = hs.one_of(hs.none(), hs.sampled_from([80, 443, 5173, 8189]))


def _scope_with(host: str, origin: str) -> dict:
    return {
        "type": "http",
        "headers": [(b"host", host.encode()), (b"origin", origin.encode())],
    }


@given(
    host=_HOSTS,
    host_port=_PORTS,
    name=_NAMES,
    port=_PORTS,
    scheme=hs.sampled_from(["http", "https"]),
)
def test_origin_check_passes_exactly_the_same_host(
    host: str, host_port: int | None, name: str, port: int | None, scheme: str
) -> None:
    """On a loopback Host, an unlisted Origin passes iff it names the same host (and the
    same port whenever both say one)."""
    host_header = host if host_port is None else f"{host}:{host_port}"
    origin = f"{scheme}://{name}" if port is None else f"{scheme}://{name}:{port}"
    same = name == host and (port is None or host_port is None or port == host_port)
    assert (origin_refusal(_scope_with(host_header, origin), ()) is None) == same


@pytest.mark.parametrize("host", ["app.localhost:8189", "LOCALHOST.:8189", "[::1]:8189"])
def test_the_origin_check_reads_loopback_as_the_host_check_does(host: str) -> None:
    """Every Host the Host check answers as loopback (``*.localhost`` too, a final dot, any
    case) has its Origin checked: a foreign page's request is refused, the same host's
    passes (a Host under ``.localhost`` once skipped the check: found by review)."""
    assert origin_refusal(_scope_with(host, "https://evil.example"), ()) is not None
    same = "http://" + host.lower().replace(".:", ":")
    assert origin_refusal(_scope_with(host, same), ()) is None


def test_a_page_request_with_a_malformed_host_is_refused() -> None:
    assert origin_refusal(_scope_with("127.0.0.1:abc", "https://evil.example"), ()) is not None


@given(host=_HOSTS, name=_NAMES, port=_PORTS)
def test_a_listed_origin_always_passes(host: str, name: str, port: int | None) -> None:
    """An origin on the --cors-origin list passes whatever the Host."""
    origin = normalize_origin(f"https://{name}" if port is None else f"https://{name}:{port}")
    assert origin_refusal(_scope_with(f"{host}:8189", origin), (origin,)) is None


@given(name=_NAMES, port=_PORTS, scheme=hs.sampled_from(["http", "https", "HTTP"]))
def test_normalize_origin_is_idempotent(name: str, port: int | None, scheme: str) -> None:
    """Normalizing a normalized origin changes nothing."""
    raw = f"{scheme}://{name.upper()}" + ("" if port is None else f":{port}") + "/"
    once = normalize_origin(raw)
    assert normalize_origin(once) == once
    assert "/" not in once.split("://", 1)[1]
