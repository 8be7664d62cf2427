"""Retention: a finished job and its outputs, and an uploaded asset, expire once past
``expires_at`` (an event each), and stay expired after a restart."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from service_helpers import wait_terminal, workflow

from conjure_actors.actors.assets import Retention, SweepNow
from conjure_actors.commands.serve import open_serve
from conjure_actors.service.app import Settings

pytestmark = pytest.mark.slow


class MovableWall:
    """The real wall clock plus an offset a test moves forward."""

    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> float:
        return time.time() + self.offset


async def test_expired_job_outputs_and_assets_are_gone_even_after_restart(
    sim_config: Any, tmp_path: Path
) -> None:
    """Past the retention a sweep logs the expiries: job, output and upload read 404."""
    wall = MovableWall()
    settings = Settings(retention=Retention(jobs=600.0, assets=600.0))
    kwargs: dict[str, Any] = {
        "log_path": tmp_path / "s.log",
        "out_dir": tmp_path / "out",
        "settings": settings,
        "wall": wall,
    }
    async with open_serve(sim_config, **kwargs) as served, httpx.AsyncClient() as http:
        upload = (
            await http.post(
                f"{served.url}/api/v2/assets",
                files={"file": ("a.bin", b"bytes", "application/octet-stream")},
                data={"content_type": "application/octet-stream", "file_path": "a.bin"},
            )
        ).json()
        job = (
            await http.post(
                f"{served.url}/api/v2/jobs", json={"workflow": workflow("invert_save.json")}
            )
        ).json()
        with trio.fail_after(60):
            await wait_terminal(http, served.url, [job["id"]])
        output = (await http.get(f"{served.url}{job['urls']['self']}")).json()["outputs"][0]
        wall.offset = 601.0
        await served.service.assets.ask(SweepNow(), timeout=30)
        gone = [
            (await http.get(f"{served.url}{path}")).status_code
            for path in (
                job["urls"]["self"],
                f"/api/v2/assets/{output['id']}",
                f"/api/v2/assets/{upload['id']}",
            )
        ]
        svc = served.service.state.service
        assert job["id"] in svc.expired_jobs
        assert job["id"] not in svc.api_jobs
        assert not svc.assets
    assert gone == [404, 404, 404]
    async with open_serve(sim_config, **kwargs) as served, httpx.AsyncClient() as http:
        again = await http.get(f"{served.url}{job['urls']['self']}")
        listed = (await http.get(f"{served.url}/api/v2/jobs")).json()["jobs"]
    assert again.status_code == 404
    assert listed == []
    blobs = [p for p in (tmp_path / "s.log.blobs" / "blobs").iterdir()]
    assert blobs == [], "a blob no asset refers to is removed"
