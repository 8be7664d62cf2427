"""``serve`` on RunComfy (our simulated account on loopback): submissions are checked
against the node catalogue recorded for the workflow version, as ``run`` checks them."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from service_helpers import serving, wait_terminal, workflow

from conjure_actors.commands.validate import catalogue_path
from conjure_actors.config import load_config
from conjure_actors.sim.catalog import object_info
from conjure_actors.sim.cloud import CloudTimings
from conjure_actors.sim.runcomfy import RunComfyTimings
from conjure_actors.sim.serve import ServedCloud, serve_cloud

pytestmark = pytest.mark.slow

VERSION = "wv-conjure-flux-mesh-1"


@asynccontextmanager
async def runcomfy_account(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> AsyncIterator[tuple[trio.Nursery, Any]]:
    """Our simulated RunComfy account on loopback, and the settings of a run on it
    (``tmp_path`` the working directory); the block's nursery runs the cloud."""
    timings = CloudTimings(runcomfy=RunComfyTimings(ready_delay=0.5, deleting_delay=0.2))
    monkeypatch.chdir(tmp_path)
    async with trio.open_nursery() as nursery:
        cloud: ServedCloud = await nursery.start(partial(serve_cloud, timings=timings, seed=5))
        monkeypatch.setenv("RUNCOMFY_API_BASE_URL", cloud.base_url)
        monkeypatch.setenv("RUNCOMFY_USER_ID", cloud.user_id)
        monkeypatch.setenv("RUNCOMFY_API_TOKEN", cloud.token)
        config = load_config(
            config_file=None,
            flags={
                "runcomfy.workflow_version": VERSION,
                "dev_state_file": str(tmp_path / "dev_machine.json"),
            },
        )
        yield nursery, config


async def test_recorded_catalogue_refuses_an_unknown_node(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """With a catalogue recorded for the version, an unknown class is 422 before any
    machine is launched; a known workflow is accepted."""
    async with runcomfy_account(monkeypatch, tmp_path) as (nursery, config):
        kept = catalogue_path(config, VERSION)
        kept.parent.mkdir(parents=True)
        kept.write_text(json.dumps(object_info(())))
        unknown = workflow("invert_save.json")
        unknown["2"]["class_type"] = "NotOnThatVersion"
        async with serving(config, tmp_path) as served, httpx.AsyncClient() as http:
            assert served.service.mode == "runcomfy"
            refused = await http.post(f"{served.url}/api/v2/jobs", json={"workflow": unknown})
            accepted = await http.post(
                f"{served.url}/api/v2/jobs", json={"workflow": workflow("invert_save.json")}
            )
            jobs = list(served.service.state.jobs)
        nursery.cancel_scope.cancel()
    assert refused.status_code == 422
    assert refused.json()["error"]["code"] == "invalid_workflow"
    assert accepted.status_code == 201
    assert jobs == [accepted.json()["id"]]


async def test_catalogue_from_the_first_machine_refuses_at_submission_from_then_on(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """With no catalogue recorded at start, the first job's machine gives it (the prompt
    check fetches and keeps it); from then on an unknown class is a 422 at submission."""
    async with runcomfy_account(monkeypatch, tmp_path) as (nursery, config):
        unknown = workflow("invert_save.json")
        unknown["2"]["class_type"] = "NotOnThatVersion"
        async with serving(config, tmp_path) as served, httpx.AsyncClient() as http:
            assert served.service.catalog is None
            first = await http.post(
                f"{served.url}/api/v2/jobs", json={"workflow": workflow("invert_save.json")}
            )
            assert first.status_code == 201, first.text
            with trio.fail_after(60):
                (done,) = await wait_terminal(http, served.url, [first.json()["id"]])
            refused = await http.post(f"{served.url}/api/v2/jobs", json={"workflow": unknown})
        nursery.cancel_scope.cancel()
    assert done["status"] == "succeeded"
    assert catalogue_path(config, VERSION).is_file()
    assert refused.status_code == 422
    assert refused.json()["error"]["code"] == "invalid_workflow"
