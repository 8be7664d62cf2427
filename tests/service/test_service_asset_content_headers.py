"""An uploaded asset's content is served so that a browser never runs it as this origin's
page: ``nosniff`` always, an attachment in a sandbox for anything but images and media, and
``content_type`` must be a media type (QA's D5: an uploaded HTML page was served inline as
``text/html``, and ``text/html; charset=utf-8<script>`` was echoed as is)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from extras_support import open_extras_service
from hypothesis import given
from hypothesis import strategies as hs

from conjure_actors.service.v2_assets import is_media_type


async def _upload(client: Any, content_type: str, file_path: str, data: bytes) -> Any:
    return await client.post(
        "/api/v2/assets",
        data={"content_type": content_type, "file_path": file_path},
        files={"file": (file_path, data, "application/octet-stream")},
    )


async def test_an_uploaded_html_page_is_an_attachment_not_sniffed_and_sandboxed(
    tmp_path: Path, autojump_clock: Any
) -> None:
    """text/html: its type, ``nosniff``, ``attachment`` with its name, a sandboxing CSP."""
    async with open_extras_service(tmp_path) as run:
        made = await _upload(run.client, "text/html", "x.html", b"<script>alert(1)</script>")
        assert made.status_code == 201, made.text
        got = await run.client.get(f"/api/v2/assets/{made.json()['id']}/content")
    assert got.status_code == 200
    assert got.headers["content-type"] == "text/html"
    assert got.headers["x-content-type-options"] == "nosniff"
    assert got.headers["content-disposition"].startswith('attachment; filename="x.html"')
    assert "sandbox" in got.headers["content-security-policy"]


@pytest.mark.parametrize("content_type", ["image/png", "video/mp4", "audio/wav"])
async def test_an_image_or_media_is_shown_in_place_but_not_sniffed(
    tmp_path: Path, autojump_clock: Any, content_type: str
) -> None:
    """Images, video and audio stay inline (an <img> of the URL works), with ``nosniff``."""
    async with open_extras_service(tmp_path) as run:
        made = await _upload(run.client, content_type, "a.bin", b"\x89PNG bytes")
        assert made.status_code == 201, made.text
        got = await run.client.get(f"/api/v2/assets/{made.json()['id']}/content")
    assert got.headers["content-type"] == content_type
    assert got.headers["x-content-type-options"] == "nosniff"
    assert "content-disposition" not in got.headers


async def test_an_svg_is_an_attachment(tmp_path: Path, autojump_clock: Any) -> None:
    """SVG is an image that runs scripts: an attachment too."""
    async with open_extras_service(tmp_path) as run:
        made = await _upload(run.client, "image/svg+xml", "a.svg", b"<svg/>")
        got = await run.client.get(f"/api/v2/assets/{made.json()['id']}/content")
    assert got.headers["content-disposition"].startswith("attachment")


@pytest.mark.parametrize(
    "content_type", ["text/html; charset=utf-8<script>", "html", "image/png\r\nX-A: b", "a/b;c"]
)
async def test_a_content_type_that_is_no_media_type_is_refused(
    tmp_path: Path, autojump_clock: Any, content_type: str
) -> None:
    """400 ``invalid_request`` naming the field and the form it must have; nothing stored."""
    async with open_extras_service(tmp_path) as run:
        made = await _upload(run.client, content_type, "x.html", b"<p>")
        assets = run.service.state.service.assets
    assert made.status_code == 400, made.text
    assert made.json()["error"]["code"] == "invalid_request"
    assert "'content_type' must be a media type" in made.json()["error"]["message"]
    assert assets == {}


@given(hs.text())
def test_a_media_type_accepted_is_visible_ascii_with_one_slash_before_any_parameter(
    text: str,
) -> None:
    """Whatever is accepted can go in a header as it is: visible ASCII, spaces and tabs, a
    ``type/subtype`` first."""
    if is_media_type(text):
        assert text.isascii()
        assert all(c == "\t" or " " <= c <= "~" for c in text)
        assert "/" in text.split(";", 1)[0]
