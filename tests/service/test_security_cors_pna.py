"""CORS for listed origins (G5 and the G10 addendum): Chromium's Private Network Access
preflight from a listed origin is answered (an unlisted one is granted nothing), and the
headers fetch-based SSE readers send are allowed."""

from __future__ import annotations

from test_security_signed_urls import EVENTS, client, make_app

APP_ORIGIN = "https://app.example"


async def test_a_private_network_preflight_from_a_listed_origin_is_allowed() -> None:
    """Chromium's Private Network Access preflight (a public page calling a loopback
    serve): the listed origin gets Access-Control-Allow-Private-Network."""
    async with client(make_app(cors=(APP_ORIGIN,))) as http:
        r = await http.options(
            "/api/v2/jobs/j1/cancel",
            headers={
                "Origin": APP_ORIGIN,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type",
                "Access-Control-Request-Private-Network": "true",
            },
        )
    assert r.status_code == 200, r.text
    assert r.headers["access-control-allow-private-network"] == "true"
    assert r.headers["access-control-allow-origin"] == APP_ORIGIN


async def test_a_private_network_preflight_from_an_unlisted_origin_is_refused() -> None:
    async with client(make_app(cors=(APP_ORIGIN,))) as http:
        r = await http.options(
            "/api/v2/jobs/j1/cancel",
            headers={
                "Origin": "https://evil.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Private-Network": "true",
            },
        )
    assert (r.status_code, r.json()["error"]["code"]) == (403, "forbidden")
    assert "access-control-allow-private-network" not in r.headers


async def test_the_headers_fetch_based_sse_readers_send_are_allowed() -> None:
    async with client(make_app(cors=(APP_ORIGIN,))) as http:
        r = await http.options(
            EVENTS,
            headers={
                "Origin": APP_ORIGIN,
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "authorization, last-event-id, cache-control",
            },
        )
    assert r.status_code == 200, r.text
