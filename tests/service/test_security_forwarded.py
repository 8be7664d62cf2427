"""Behind an HTTPS reverse proxy: with ``--forwarded-allow-ips``, the proxy's
X-Forwarded-Proto/-Host (or Forwarded) set the scheme and host of the URLs the API builds;
from any other peer, and without the flag, they are ignored."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from extras_support import open_extras_service, png
from hypothesis import given
from hypothesis import strategies as hs

from conjure_actors.errors import UsageError
from conjure_actors.service.security import (
    SecuritySettings,
    forwarded_address,
    parse_forwarded_allow_ips,
)

TOKEN = "tok-8c2f6a0e9b1d4c57"
PROXY = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "comfy.lan"}
"""What a TLS proxy for https://comfy.lan adds (its own connection: Host 127.0.0.1:8189)."""


def _file() -> dict[str, Any]:
    return {"file": ("sketch.png", png(), "image/png")}


async def _asset_url(client: httpx.AsyncClient, headers: dict[str, str]) -> str:
    r = await client.post(
        "/api/v2/assets",
        files=_file(),
        data={"content_type": "image/png", "file_path": "sketch.png"},
        headers=headers,
    )
    assert r.status_code in (200, 201), r.text
    return str(r.json()["url"])


@asynccontextmanager
async def _peer(app: Any, address: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client whose connection comes from ``address`` (the ASGI scope's ``client``)."""
    transport = httpx.ASGITransport(app=app, client=(address, 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8189") as c:
        yield c


async def test_without_the_flag_forwarded_headers_are_ignored(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """No --forwarded-allow-ips: the URLs keep the connection's scheme and Host."""
    async with open_extras_service(tmp_path) as run:
        url = await _asset_url(run.client, PROXY)
    assert url.startswith("http://127.0.0.1:8189/api/v2/assets/")


async def test_a_trusted_proxy_sets_the_scheme_and_host_of_the_urls(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """From a listed proxy: the asset's url is https://comfy.lan/... (no mixed content)."""
    async with open_extras_service(
        tmp_path, forwarded_allow_ips=["127.0.0.1,::1"], allowed_host=["comfy.lan"]
    ) as run:
        url = await _asset_url(run.client, PROXY)
        fetched = await run.client.get(url.removeprefix("https://comfy.lan"), headers=PROXY)
    assert url.startswith("https://comfy.lan/api/v2/assets/")
    assert fetched.status_code == 200


@pytest.mark.slow  # (just test <= 30 s: CI and just check run it)
async def test_a_job_s_output_urls_follow_the_proxy(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """The outputs of a job, read through the proxy, are https URLs on its name."""
    from extras_support import wait_idle

    async with open_extras_service(
        tmp_path, forwarded_allow_ips=["127.0.0.1"], allowed_host=["comfy.lan"]
    ) as run:
        job = await run.client.post(
            "/api/conjure/jobs",
            files={"image": ("sketch.png", png(), "image/png")},
            data={"prompt": "x"},
            headers=PROXY,
        )
        await wait_idle(run.service)
        read = await run.client.get(job.json()["urls"]["self"], headers=PROXY)
    outputs = read.json()["outputs"]
    assert outputs
    assert all(o["url"].startswith("https://comfy.lan/api/v2/assets/") for o in outputs)


async def test_an_untrusted_peer_cannot_spoof_the_urls(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """With the flag, the same headers from a peer not listed are ignored."""
    async with (
        open_extras_service(tmp_path, token=TOKEN, forwarded_allow_ips=["10.0.0.0/8"]) as run,
        _peer(run.app, "203.0.113.9") as stranger,
    ):
        headers = {**PROXY, "Authorization": f"Bearer {TOKEN}"}
        url = await _asset_url(stranger, headers)
    assert url.startswith("http://127.0.0.1:8189/")


async def test_a_peer_inside_a_listed_network_is_trusted(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """--forwarded-allow-ips 10.0.0.0/8 trusts 10.1.2.3 (a proxy in a container network)."""
    async with (
        open_extras_service(tmp_path, token=TOKEN, forwarded_allow_ips=["10.0.0.0/8"]) as run,
        _peer(run.app, "10.1.2.3") as proxy,
    ):
        url = await _asset_url(proxy, {**PROXY, "Authorization": f"Bearer {TOKEN}"})
    assert url.startswith("https://comfy.lan/")


async def test_forwarded_header_is_read_when_no_x_forwarded_one_is_sent(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """RFC 7239: the last element's proto and (quoted) host are used."""
    forwarded = 'for=198.51.100.7;proto=http, for=192.0.2.1;proto=https;host="comfy.lan:8443"'
    async with open_extras_service(
        tmp_path, forwarded_allow_ips=["127.0.0.1"], allowed_host=["comfy.lan"]
    ) as run:
        url = await _asset_url(run.client, {"Forwarded": forwarded})
    assert url.startswith("https://comfy.lan:8443/api/v2/assets/")


async def test_the_forwarded_host_is_checked_as_host_is(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Without a token, a forwarded host that is not allowed is refused like a Host."""
    async with open_extras_service(tmp_path, forwarded_allow_ips=["127.0.0.1"]) as run:
        r = await run.client.get("/api/conjure/mode", headers=PROXY)
    assert (r.status_code, r.json()["error"]["code"]) == (403, "forbidden")
    assert "'comfy.lan'" in r.json()["error"]["message"]


async def test_a_rebound_page_cannot_pass_by_forwarding_a_loopback_host(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """A page rebound to a trusted 127.0.0.1 that adds X-Forwarded-Host: 127.0.0.1 itself is
    still refused: its own Host is checked too."""
    async with open_extras_service(tmp_path, forwarded_allow_ips=["127.0.0.1"]) as run:
        r = await run.client.put(
            "/api/conjure/budget",
            json={"usd": 999},
            headers={"Host": "rebind.attacker.example:8189", "X-Forwarded-Host": "127.0.0.1"},
        )
        assert r.status_code == 403
        assert run.service.state.budget.limit_micros is None


async def test_a_scheme_other_than_http_s_is_ignored(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """X-Forwarded-Proto: javascript does not make javascript: URLs."""
    async with open_extras_service(tmp_path, forwarded_allow_ips=["127.0.0.1"]) as run:
        url = await _asset_url(run.client, {"X-Forwarded-Proto": "javascript"})
    assert url.startswith("http://127.0.0.1:8189/")


async def test_with_a_token_the_proxy_needs_it_too(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Trusting a proxy's headers is no credential: the token is still asked."""
    async with open_extras_service(tmp_path, token=TOKEN, forwarded_allow_ips=["127.0.0.1"]) as run:
        r = await run.client.get("/api/conjure/mode", headers=PROXY)
    assert r.status_code == 401


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"x-forwarded-proto": "http, https"}, ("https", None)),
        ({"x-forwarded-host": "evil.example, comfy.lan"}, (None, "comfy.lan")),
        ({"x-forwarded-proto": "HTTPS", "forwarded": "proto=http;host=x"}, ("https", None)),
        ({"forwarded": "for=a;proto=https;host=comfy.lan"}, ("https", "comfy.lan")),
        ({"forwarded": "proto=https, proto=http"}, ("http", None)),
        ({"forwarded": 'host="a\\"b'}, (None, None)),
        ({"forwarded": "garbage"}, (None, None)),
        ({}, (None, None)),
    ],
)
def test_forwarded_address_takes_the_nearest_proxy_s_values(
    headers: dict[str, str], expected: tuple[str | None, str | None]
) -> None:
    """The last value (the nearest proxy's); X-Forwarded-* over a passed-through Forwarded."""
    found = {k.encode(): v for k, v in headers.items()}
    assert forwarded_address(found) == expected


@given(hs.text(max_size=60))
def test_forwarded_address_never_fails_and_yields_only_http_s(value: str) -> None:
    """Whatever a proxy passes through, the scheme is http, https or None."""
    for name in (b"forwarded", b"x-forwarded-proto"):
        scheme, _ = forwarded_address({name: value})
        assert scheme in (None, "http", "https")


@pytest.mark.parametrize("value", ["*", "proxy.lan", "127.0.0.1/40", "10.0.0.0/8,nope"])
def test_a_bad_forwarded_allow_ips_is_a_usage_error(value: str) -> None:
    """One line naming the value and giving an example."""
    with pytest.raises(UsageError, match=r"--forwarded-allow-ips .*127\.0\.0\.1,::1"):
        parse_forwarded_allow_ips([value])


def test_forwarded_allow_ips_take_addresses_and_networks() -> None:
    """Comma-separated and repeated, IPv4 and IPv6 (bracketed too), addresses and networks."""
    got = SecuritySettings(
        forwarded_allow_ips=("127.0.0.1, [::1]", "10.0.0.0/8")
    ).forwarded_allow_ips
    assert [str(n) for n in got] == ["127.0.0.1/32", "::1/128", "10.0.0.0/8"]


async def test_a_page_served_by_the_proxy_passes_the_origin_check(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """The Origin check compares the page's Origin with the forwarded host, the one the
    browser used: a page of https://localhost:8443 (the proxy) may call."""
    headers = {
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "localhost:8443",
        "Origin": "https://localhost:8443",
    }
    async with open_extras_service(tmp_path, forwarded_allow_ips=["127.0.0.1"]) as run:
        r = await run.client.get("/api/conjure/mode", headers=headers)
    assert r.status_code == 200, r.text
