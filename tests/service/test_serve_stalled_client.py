"""A client that stops reading its answer is dropped once it takes none of it for
``stall_timeout`` (QA F8: 200 stalled downloads held 200 requests "in flight", 400 fds and
~420 MB of serve's memory until the clients closed, possibly never)."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from service_helpers import serving

from conjure_actors.service import app as service_app

SIZE = 8 * 1024 * 1024


async def _stalled_download(served: Any, asset_id: str, stalled: trio.Event) -> int:
    """GET the asset's content on a raw socket that reads nothing until serve gave up on it,
    then everything; the bytes it got (the head included)."""
    host, port = served.url.removeprefix("http://").split(":")
    sock = trio.socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    await sock.connect((host, int(port)))
    stream = trio.SocketStream(sock)
    request = f"GET /api/v2/assets/{asset_id}/content HTTP/1.1\r\nHost: {host}\r\n\r\n"
    await stream.send_all(request.encode())
    await stalled.wait()
    got = 0
    while chunk := await stream.receive_some(65536):
        got += len(chunk)
    await stream.aclose()
    return got


@pytest.mark.slow
async def test_a_client_that_stops_reading_is_dropped(
    sim_config: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service_app._HeadWithBody, "stall_timeout", 0.5)
    stalled = trio.Event()
    monkeypatch.setattr(service_app, "_client_stalled", lambda *_: stalled.set())
    async with serving(sim_config, tmp_path) as served, httpx.AsyncClient() as http:
        up = await http.post(
            f"{served.url}/api/v2/assets",
            data={"content_type": "application/octet-stream", "file_path": "big.bin"},
            files={"file": ("big.bin", b"\x01" * SIZE, "application/octet-stream")},
        )
        assert up.status_code == 201, up.text
        with trio.fail_after(60):
            got = await _stalled_download(served, up.json()["id"], stalled)
        after = await http.get(f"{served.url}/api/v2/assets/{up.json()['id']}")
    assert got < SIZE  # cut before its end: the connection was closed, not left waiting
    assert after.status_code == 200  # serve goes on
