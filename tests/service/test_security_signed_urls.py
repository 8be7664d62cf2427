"""Signed URLs on their own (G10): the middleware with a token serves a GET/HEAD of exactly
the path a signature covers, until its expiry, without the Authorization header; anything
else is 401 saying what to do."""

from __future__ import annotations

import httpx
from hypothesis import given
from hypothesis import strategies as hs
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from conjure_actors.service.security import (
    SIGNING_LABEL,
    SecuritySettings,
    UrlSigner,
    security_middleware,
)

TOKEN = "s3cret-token-value"
NOW = 1_800_000_000.0
ASSET = "/api/v2/assets/a1b2c3/content"
EVENTS = "/api/v2/jobs/j1/events"


def make_app(token: str | None = TOKEN, cors: tuple[str, ...] = ()) -> Starlette:
    """The bytes and events routes (and a POST one), behind the security layer."""

    async def content(request: Request) -> Response:
        return PlainTextResponse(f"bytes of {request.path_params['id']}")

    async def events(request: Request) -> Response:
        return PlainTextResponse("event: status\ndata: {}\n\n", media_type="text/event-stream")

    async def cancel(request: Request) -> Response:
        return PlainTextResponse("cancelled")

    return Starlette(
        routes=[
            Route("/api/v2/assets/{id}/content", content, methods=["GET", "HEAD"]),
            Route("/api/v2/assets/{id}", content, methods=["GET"]),
            Route("/api/v2/jobs/{id}/events", events),
            Route("/api/v2/jobs/{id}/cancel", cancel, methods=["POST"]),
        ],
        middleware=security_middleware(
            SecuritySettings(token=token, cors_origins=cors), now=lambda: NOW
        ),
    )


def client(app: Starlette) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1")


SIGNER = UrlSigner.from_token(TOKEN)


def _refused(r: httpx.Response, needle: str) -> None:
    assert r.status_code == 401, r.text
    error = r.json()["error"]
    assert error["code"] == "unauthorized"
    assert needle in error["message"]
    assert "\n" not in error["message"]
    assert TOKEN not in r.text


async def test_a_signed_content_url_is_served_without_the_header() -> None:
    async with client(make_app()) as http:
        r = await http.get(SIGNER.sign(ASSET, int(NOW) + 60))
        head = await http.head(SIGNER.sign(ASSET, int(NOW) + 60))
    assert (r.status_code, r.text) == (200, "bytes of a1b2c3")
    assert head.status_code == 200


async def test_a_signed_events_url_is_served_as_an_event_source_asks() -> None:
    """EventSource: a plain GET, Accept: text/event-stream, no Authorization."""
    async with client(make_app()) as http:
        r = await http.get(
            SIGNER.sign(EVENTS, int(NOW) + 60), headers={"Accept": "text/event-stream"}
        )
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")


async def test_a_signed_url_from_another_sites_img_is_served() -> None:
    """An <img> of a front end on another site: no Origin, Sec-Fetch-Site: cross-site. The
    signature is the credential, so the drive-by check does not refuse it."""
    async with client(make_app()) as http:
        r = await http.get(
            SIGNER.sign(ASSET, int(NOW) + 60), headers={"Sec-Fetch-Site": "cross-site"}
        )
        plain = await http.get(ASSET, headers={"Sec-Fetch-Site": "cross-site"})
    assert r.status_code == 200
    assert plain.status_code == 403


async def test_a_signature_for_another_asset_is_refused() -> None:
    _, query = SIGNER.sign("/api/v2/assets/other/content", int(NOW) + 60).split("?")
    async with client(make_app()) as http:
        r = await http.get(f"{ASSET}?{query}")
    _refused(r, "not valid")


async def test_a_signature_opens_no_other_path() -> None:
    """Even a correctly signed path outside the bytes and events (the asset's metadata,
    a cancel) is not opened by a signature."""
    async with client(make_app()) as http:
        meta = await http.get(SIGNER.sign("/api/v2/assets/a1b2c3", int(NOW) + 60))
        cancel = await http.post(SIGNER.sign("/api/v2/jobs/j1/cancel", int(NOW) + 60))
    _refused(meta, "not valid")
    _refused(cancel, "GET or HEAD")


async def test_an_expired_signed_url_is_refused_saying_to_get_a_fresh_one() -> None:
    async with client(make_app()) as http:
        r = await http.get(SIGNER.sign(ASSET, int(NOW)))
    _refused(r, "has expired: get a fresh one")


async def test_a_url_signed_under_another_token_is_refused() -> None:
    """A new --token voids every URL signed before."""
    old = UrlSigner.from_token("the-token-before")
    async with client(make_app()) as http:
        r = await http.get(old.sign(ASSET, int(NOW) + 60))
    _refused(r, "another token")


async def test_a_signed_url_still_opens_with_the_bearer_token_however_tampered() -> None:
    async with client(make_app()) as http:
        r = await http.get(
            f"{ASSET}?expires=1&sig=forged", headers={"Authorization": f"Bearer {TOKEN}"}
        )
    assert r.status_code == 200


async def test_without_a_token_nothing_is_signed_or_checked() -> None:
    async with client(make_app(token=None)) as http:
        r = await http.get(f"{ASSET}?expires=1&sig=forged")
    assert r.status_code == 200


def test_the_key_is_derived_from_the_token_never_the_token_itself() -> None:
    assert SIGNER.key != TOKEN.encode()
    assert UrlSigner.from_token("other").key != SIGNER.key
    assert TOKEN not in SIGNER.sign(ASSET, 1)
    assert TOKEN not in repr(SIGNER)
    assert SIGNING_LABEL  # fixed, public: the token is the secret


_PATHS = hs.sampled_from([ASSET, EVENTS, "/api/v2/assets/x/content"])
_TEXT = hs.text(hs.characters(codec="ascii", exclude_characters="\x00"), max_size=20)


@given(
    path=_PATHS,
    expires=hs.integers(int(NOW) + 1, int(NOW) + 10**6),
    part=hs.sampled_from(["path", "expires", "sig"]),
    edit=_TEXT,
    at=hs.integers(0, 100),
)
def test_any_change_of_a_signed_urls_path_expiry_or_signature_is_refused(
    path: str, expires: int, part: str, edit: str, at: int
) -> None:
    """Insert, replace or drop text anywhere in the path, the expiry or the signature of a
    valid signed URL: unless the result is the original, it is refused."""
    stamp = str(expires)
    sig = SIGNER.signature(path, stamp)
    parts = {"path": path, "expires": stamp, "sig": sig}
    original = parts[part]
    i = at % (len(original) + 1)
    for changed in (
        original[:i] + edit + original[i:],
        original[:i] + edit + original[i + 1 :],
        original[:i] + original[i + len(edit) :],
    ):
        if changed == original:
            continue
        new = {**parts, part: changed}
        query = httpx.QueryParams({"expires": new["expires"], "sig": new["sig"]})
        why = SIGNER.refusal(new["path"], str(query).encode(), NOW)
        assert why is not None, (part, changed)
    assert SIGNER.refusal(path, f"expires={stamp}&sig={sig}".encode(), NOW) is None
