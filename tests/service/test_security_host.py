"""The Host check of ``serve`` (DNS rebinding): without a token, a request naming a Host that
is not a loopback name (or one listed with ``--allowed-host``) is 403 ``forbidden`` and does
nothing. Through the app ``serve`` runs (httpx's ASGI transport), and on a real socket."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from extras_support import open_extras_service, serve_args
from hypothesis import given
from hypothesis import strategies as hs
from hypothesis.provisional import domains
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from conjure_actors.commands.serve import build_app, open_serve
from conjure_actors.service.app import Settings
from conjure_actors.service.security import SecuritySettings, security_middleware

TOKEN = "tok-5a1e0c9b2d7f4e83"
REBOUND = "rebind.attacker.example:8189"
"""What a browser sends after DNS rebinding: the page's own name, now resolved to 127.0.0.1."""
BROWSER = {"Host": REBOUND, "Origin": f"http://{REBOUND}", "Sec-Fetch-Site": "same-origin"}


def _refused(r: httpx.Response) -> bool:
    return r.status_code == 403 and r.json()["error"]["code"] == "forbidden"


async def test_a_rebound_page_cannot_raise_the_budget(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """The repro: PUT /api/conjure/budget from a rebound page was 200; now 403 and the
    budget is what it was."""
    async with open_extras_service(tmp_path, cors_origin=["https://app.example"]) as run:
        before = run.service.state.budget.limit_micros
        r = await run.client.put("/api/conjure/budget", json={"usd": 999}, headers=BROWSER)
        assert _refused(r), r.text
        assert run.service.state.budget.limit_micros == before


async def test_a_rebound_page_cannot_submit_a_paid_job(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """POST /api/v2/jobs from a rebound page was 201 (a paid job); now 403 and no job."""
    async with open_extras_service(tmp_path) as run:
        r = await run.client.post("/api/v2/jobs", json={"workflow": {}}, headers=BROWSER)
        assert _refused(r), r.text
        assert run.service.state.jobs == {}


async def test_the_refusal_says_where_the_service_answers_and_how_to_allow_a_name(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """One line naming the Host refused, the loopback URL to use and the two ways out."""
    async with open_extras_service(tmp_path) as run:
        r = await run.client.get("/api/conjure/mode", headers={"Host": "comfy.lan:8189"})
    message = r.json()["error"]["message"]
    assert "'comfy.lan:8189'" in message
    assert "http://127.0.0.1:8189" in message
    assert "--allowed-host" in message
    assert "--token" in message
    assert "\n" not in message


@pytest.mark.parametrize("path", ["/api/v2/health", "/metrics"])
async def test_probes_follow_the_same_rule(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, path: str
) -> None:
    """The health probe and the metrics answer loopback names, not a foreign Host."""
    async with open_extras_service(tmp_path) as run:
        assert (await run.client.get(path)).status_code == 200
        assert _refused(await run.client.get(path, headers={"Host": REBOUND}))


@pytest.mark.parametrize(
    "host", ["localhost:8189", "LocalHost", "app.localhost:8189", "127.0.0.2", "[::1]:8189"]
)
async def test_loopback_spellings_are_served(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, host: str
) -> None:
    """localhost, its subdomains, 127.0.0.0/8 and [::1] (with or without a port) pass."""
    async with open_extras_service(tmp_path) as run:
        r = await run.client.get("/api/conjure/mode", headers={"Host": host})
    assert r.status_code == 200


async def test_an_allowed_host_is_served(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """--allowed-host comfy.lan (a local reverse proxy's name) is answered, any port."""
    async with open_extras_service(tmp_path, allowed_host=["Comfy.LAN"]) as run:
        ok = await run.client.get("/api/conjure/mode", headers={"Host": "comfy.lan:443"})
        other = await run.client.get("/api/conjure/mode", headers={"Host": "other.lan"})
    assert ok.status_code == 200
    assert _refused(other)


async def test_a_preflight_from_a_listed_origin_is_refused_on_a_foreign_host(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """The Host check runs before CORS: a foreign Host gets no CORS answer either."""
    async with open_extras_service(tmp_path, cors_origin=["https://app.example"]) as run:
        r = await run.client.options(
            "/api/v2/jobs",
            headers={
                "Host": REBOUND,
                "Origin": "https://app.example",
                "Access-Control-Request-Method": "POST",
            },
        )
    assert _refused(r)
    assert "access-control-allow-origin" not in r.headers


async def test_a_request_without_host_is_served(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """HTTP/1.0 without a Host names no host: served as before."""
    async with open_extras_service(tmp_path) as run:
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.0",
            "method": "GET",
            "scheme": "http",
            "path": "/api/v2/health",
            "raw_path": b"/api/v2/health",
            "query_string": b"",
            "root_path": "",
            "headers": [],
            "client": ("127.0.0.1", 5000),
            "server": ("127.0.0.1", 8189),
        }
        await run.app(scope, receive, send)
    assert sent[0]["status"] == 200


async def test_with_a_token_host_is_free_and_the_token_still_required(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """With a token the bearer check guards (a reverse proxy may rename Host): a foreign Host
    without the token is 401, with it 200."""
    async with open_extras_service(tmp_path, token=TOKEN) as run:
        bare = await run.client.get("/api/conjure/mode", headers={"Host": REBOUND})
        authed = await run.client.get(
            "/api/conjure/mode",
            headers={"Host": REBOUND, "Authorization": f"Bearer {TOKEN}"},
        )
    assert bare.status_code == 401
    assert authed.status_code == 200


async def test_with_a_token_and_allowed_hosts_the_host_is_checked(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """--allowed-host with a token: Host must be loopback or listed (the token still asked)."""
    async with open_extras_service(tmp_path, token=TOKEN, allowed_host=["comfy.lan"]) as run:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        listed = await run.client.get("/api/conjure/mode", headers={"Host": "comfy.lan", **auth})
        other = await run.client.get("/api/conjure/mode", headers={"Host": REBOUND, **auth})
        unauthed = await run.client.get("/api/conjure/mode", headers={"Host": "comfy.lan"})
    assert listed.status_code == 200
    assert _refused(other)
    assert "--allowed-host" in other.json()["error"]["message"]
    assert unauthed.status_code == 401


@pytest.mark.slow
async def test_serve_on_a_socket_refuses_a_rebound_host_and_serves_http_1_0(
    tmp_path: Path, sim_config: Any
) -> None:
    """On a real socket (hypercorn): a rebound Host is 403; HTTP/1.0 without Host is 200."""
    args = serve_args()
    with trio.fail_after(60):
        async with (
            open_serve(
                sim_config,
                log_path=tmp_path / "serve.log",
                out_dir=tmp_path / "out",
                settings=Settings(),
                app_factory=lambda service: build_app(service, args),
            ) as served,
            httpx.AsyncClient(base_url=served.url) as client,
        ):
            rebound = await client.put("/api/conjure/budget", json={"usd": 999}, headers=BROWSER)
            assert _refused(rebound)
            assert (await client.get("/api/v2/health")).status_code == 200
            port = int(served.url.rsplit(":", 1)[1])
            async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
                await stream.send_all(b"GET /api/v2/health HTTP/1.0\r\n\r\n")
                head = b""
                while b"\r\n" not in head:
                    chunk = await stream.receive_some()
                    if not chunk:
                        break
                    head += chunk
    assert head.split(b"\r\n", 1)[0].split()[1] == b"200"


# ---------------------------------------------------------------- the property, at the middleware


def _status(settings: SecuritySettings, host: str) -> tuple[int, dict[str, Any]]:
    """The status and JSON body of GET /ok with this Host, through ``security_middleware``."""

    async def ok(request: Request) -> Response:
        return JSONResponse({"ok": True})

    app = Starlette(routes=[Route("/ok", ok)], middleware=security_middleware(settings))
    sent: list[dict[str, Any]] = []

    async def call() -> None:
        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": "/ok",
            "raw_path": b"/ok",
            "query_string": b"",
            "root_path": "",
            "headers": [(b"host", host.encode("latin-1"))],
            "client": ("127.0.0.1", 5000),
            "server": ("127.0.0.1", 8189),
        }
        await app(scope, receive, send)

    trio.run(call)
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent[0]["status"], json.loads(body)


_PORT = hs.one_of(hs.just(""), hs.integers(0, 65535).map(lambda p: f":{p}"))


def _spell_case(draw: Any, text: str) -> str:
    return "".join(c.upper() if draw(hs.booleans()) else c for c in text)


@hs.composite
def loopback_hosts(draw: Any) -> str:
    """Every spelling of a loopback Host a browser may send: localhost (and its
    subdomains, a final dot, any case), 127.0.0.0/8, [::1] in any IPv6 spelling; any port."""
    kind = draw(hs.sampled_from(["localhost", "sub", "v4", "v6"]))
    if kind == "v4":
        name = str(ipaddress.IPv4Address(0x7F000000 + draw(hs.integers(0, 2**24 - 1))))
    elif kind == "v6":
        name = draw(hs.sampled_from(["[::1]", "[0:0:0:0:0:0:0:1]", "[::0:1]"]))
    else:
        label = draw(hs.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True))
        name = f"{label}.localhost" if kind == "sub" else "localhost"
        name = _spell_case(draw, name) + draw(hs.sampled_from(["", "."]))
    return name + draw(_PORT)


def _not_loopback_v4(address: ipaddress.IPv4Address) -> bool:
    return not address.is_loopback


@hs.composite
def foreign_hosts(draw: Any) -> str:
    """Hosts that are not this machine's loopback: domain names (never under .localhost),
    other IPv4/IPv6 addresses, and junk that is not a host at all."""
    kind = draw(hs.sampled_from(["domain", "v4", "v6", "junk"]))
    if kind == "domain":
        name = draw(domains().filter(lambda d: not d.lower().rstrip(".").endswith("localhost")))
    elif kind == "v4":
        name = str(draw(hs.ip_addresses(v=4).filter(_not_loopback_v4)))
    elif kind == "v6":
        name = f"[{draw(hs.ip_addresses(v=6).filter(lambda a: not a.is_loopback))}]"
    else:
        name = draw(
            hs.text(hs.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=30).filter(
                lambda t: "localhost" not in t.lower() and not t.strip().startswith(("127.", "["))
            )
        )
    return name + draw(_PORT)


@pytest.mark.slow  # ~0.3 s or more: the inner loop runs without it, CI with it
@given(host=foreign_hosts())
def test_any_foreign_host_is_refused(host: str) -> None:
    """Without a token, any Host that is not a loopback name is 403 ``forbidden``."""
    status, body = _status(SecuritySettings(), host)
    assert (status, body["error"]["code"]) == (403, "forbidden")


@given(host=loopback_hosts())
def test_any_loopback_spelling_is_served(host: str) -> None:
    """Without a token, every spelling of a loopback Host reaches the route."""
    assert _status(SecuritySettings(), host) == (200, {"ok": True})


@hs.composite
def host_names(draw: Any) -> str:
    """A name a user may list with --allowed-host: a domain or an IP address."""
    return draw(
        hs.one_of(
            domains(),
            hs.ip_addresses(v=4).map(str),
            hs.ip_addresses(v=6).map(lambda a: f"[{a}]"),
        )
    )


@pytest.mark.slow  # ~0.2 s or more: the inner loop runs without it, CI with it
@given(name=host_names(), port=_PORT)
def test_a_listed_host_is_served_with_any_port(name: str, port: str) -> None:
    """A name listed with --allowed-host is served whatever its port and case."""
    settings = SecuritySettings(allowed_hosts=(name,))
    assert _status(settings, name.upper() + port)[0] == 200
    assert _status(settings, "other.invalid" + port)[0] == 403
