"""An asset's content answers its validators: ``If-None-Match`` with the ``ETag`` it sends is
a bodiless 304 (a page revalidating an image or a mesh downloaded every byte again), and a
``Range`` resumed with a stale ``If-Range`` gets the whole content; ``/api/v2/assets/{id}``
answers 405 with every method it has in ``Allow``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
from extras_support import open_extras_service

DATA = b"0123456789abcdef"


async def _content(headers: dict[str, str], tmp_path: Path) -> tuple[Any, str]:
    """GET the content of a fresh asset of ``DATA`` with ``headers`` ("{etag}" in a value is
    replaced by the asset's ETag); the answer and the ETag."""
    with trio.fail_after(600):
        async with open_extras_service(tmp_path) as run:
            up = await run.client.post(
                "/api/v2/assets",
                data={"content_type": "application/octet-stream", "file_path": "v.bin"},
                files={"file": ("v.bin", DATA, "application/octet-stream")},
            )
            assert up.status_code == 201, up.text
            url = f"/api/v2/assets/{up.json()['id']}/content"
            etag = (await run.client.get(url)).headers["etag"]
            sent = {k: v.replace("{etag}", etag) for k, v in headers.items()}
            return await run.client.get(url, headers=sent), etag


@pytest.mark.parametrize("header", ["{etag}", "W/{etag}", '"other", {etag}', "*"])
async def test_a_matching_if_none_match_is_304_without_a_body(
    tmp_path: Path, autojump_clock: Any, header: str
) -> None:
    r, etag = await _content({"If-None-Match": header}, tmp_path)
    assert (r.status_code, r.content) == (304, b"")
    assert r.headers["etag"] == etag
    assert r.headers["cache-control"] == "private, no-cache"


async def test_another_if_none_match_gets_the_bytes(tmp_path: Path, autojump_clock: Any) -> None:
    r, _ = await _content({"If-None-Match": '"blake3:00"'}, tmp_path)
    assert (r.status_code, r.content) == (200, DATA)
    assert r.headers["cache-control"] == "private, no-cache"


async def test_a_range_with_its_own_if_range_is_206(tmp_path: Path, autojump_clock: Any) -> None:
    r, _ = await _content({"Range": "bytes=2-5", "If-Range": "{etag}"}, tmp_path)
    assert (r.status_code, r.content) == (206, DATA[2:6])


@pytest.mark.parametrize("header", ['"blake3:00"', "W/{etag}", "Sat, 05 Dec 2026 10:00:00 GMT"])
async def test_a_range_with_a_stale_if_range_gets_the_whole_content(
    tmp_path: Path, autojump_clock: Any, header: str
) -> None:
    """RFC 9110 13.1.5: If-Range compares strongly; a weak tag or a date (serve sends no
    Last-Modified) cannot show the client's copy is these bytes."""
    r, _ = await _content({"Range": "bytes=2-5", "If-Range": header}, tmp_path)
    assert (r.status_code, r.content, r.headers.get("content-range")) == (200, DATA, None)


async def test_a_405_on_an_asset_lists_every_method_it_has(
    tmp_path: Path, autojump_clock: Any
) -> None:
    """Two routes on one path answered 405 with only the first's methods (GET, HEAD)."""
    with trio.fail_after(600):
        async with open_extras_service(tmp_path) as run:
            r = await run.client.put("/api/v2/assets/some-id")
    assert r.status_code == 405
    assert {m.strip() for m in r.headers["allow"].split(",")} == {"GET", "HEAD", "DELETE"}
