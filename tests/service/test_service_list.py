"""GET /api/v2/jobs pages newest first through ``next_cursor`` (each job once), and refuses
a cursor it did not issue."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from service_helpers import serving, workflow


@pytest.mark.slow  # (just test <= 30 s: CI and just check run it)
async def test_cursor_pages_cover_every_job_once_newest_first(
    sim_config: Any, tmp_path: Path
) -> None:
    """7 jobs in pages of 3: 3 + 3 + 1, newest first, the last page without next_cursor."""
    body = {"workflow": workflow("invert_save.json")}
    async with serving(sim_config, tmp_path) as served, httpx.AsyncClient() as http:
        with trio.fail_after(60):
            ids = []
            for _ in range(7):
                answer = await http.post(f"{served.url}/api/v2/jobs", json=body)
                ids.append(answer.json()["id"])
            pages: list[list[str]] = []
            params: dict[str, Any] = {"limit": 3}
            while True:
                page = (await http.get(f"{served.url}/api/v2/jobs", params=params)).json()
                pages.append([job["id"] for job in page["jobs"]])
                if "next_cursor" not in page:
                    break
                params = {"limit": 3, "cursor": page["next_cursor"]}
    assert [len(p) for p in pages] == [3, 3, 1]
    assert [jid for p in pages for jid in p] == list(reversed(ids))


@pytest.mark.slow
async def test_unknown_cursor_is_422(sim_config: Any, tmp_path: Path) -> None:
    """A cursor that names no job of ours is 422 invalid_cursor."""
    async with serving(sim_config, tmp_path) as served, httpx.AsyncClient() as http:
        with trio.fail_after(30):
            answer = await http.get(f"{served.url}/api/v2/jobs", params={"cursor": "nope"})
    assert answer.status_code == 422
    assert answer.json()["error"]["code"] == "invalid_cursor"
