"""A kept node catalogue a machine contradicts (QA G12): it was never checked again, so every
later job was accepted, took a paid machine and failed ``prompt_rejected`` there. The
machine is the truth for its version: its ``/object_info`` replaces a kept one that differs.
And the simulator's catalogues are kept apart from RunComfy's (they were keyed by version id
only, so a simulated run wrote into the user's real ones)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import attrs
import pytest
import trio

from conjure_actors.actors.example import bundled_workflow
from conjure_actors.commands.cloud_args import version_catalogue
from conjure_actors.commands.validate import catalogue_path, write_catalogue
from conjure_actors.config import Config, Secret
from conjure_actors.domain.workflow import catalog_from_object_info
from conjure_actors.service.app import Service, Settings
from conjure_actors.sim.catalog import OBJECT_INFO

VERSION = "wv-core-nodes-1"
MISSING = "DepthAnythingV2Preprocessor"  # the CONJURE workflow's custom node


def _config(tmp_path: Path, base_url: str = "https://api.runcomfy.net") -> Config:
    base = Config()
    return attrs.evolve(
        base,
        dev_state_file=str(tmp_path / "state" / "dev.json"),
        runcomfy=attrs.evolve(
            base.runcomfy,
            base_url=base_url,
            user_id="u-1",
            api_token=Secret("t-1"),
            workflow_version=VERSION,
        ),
    )


class _Machine:
    """A machine of the version whose image lacks the CONJURE custom node."""

    def __init__(self) -> None:
        self.info = {k: v for k, v in OBJECT_INFO.items() if k != MISSING}
        self.fetches = 0

    async def object_info(self) -> dict[str, Any]:
        self.fetches += 1
        await trio.lowlevel.checkpoint()
        return dict(self.info)

    def scrub(self, text: str) -> str:
        return text


def _conjure() -> dict[str, Any]:
    graph: dict[str, Any] = json.loads(bundled_workflow("conjure_flux_mesh.json"))
    return graph


@pytest.mark.slow  # (just test <= 30 s: CI and just check run it)
async def test_a_kept_catalogue_the_machine_contradicts_is_replaced_and_refuses(
    tmp_path: Path,
) -> None:
    """The kept catalogue lists the node; the machine's lacks it: the prompt is refused
    before its POST (node and class named), the kept file becomes the machine's, and one
    note says so."""
    config = _config(tmp_path)
    path = catalogue_path(config, VERSION)
    write_catalogue(path, OBJECT_INFO)  # kept by an older run, with the node
    notes: list[str] = []
    check = version_catalogue(config, notes.append)
    assert check is not None, "a kept catalogue is still checked against the machine"
    machine = _Machine()
    refused = await check.refusal(machine, _conjure())  # type: ignore[arg-type]
    await check.refusal(machine, _conjure())  # type: ignore[arg-type]
    assert refused is not None
    assert refused.class_type == MISSING
    assert "(from its machine)" in refused.message
    assert machine.fetches == 1
    assert json.loads(path.read_text()) == machine.info
    assert len(notes) == 1
    assert "differs from the one kept" in notes[0]


async def test_a_kept_catalogue_the_machine_agrees_with_is_left_as_it_is(tmp_path: Path) -> None:
    config = _config(tmp_path)
    path = catalogue_path(config, VERSION)
    write_catalogue(path, OBJECT_INFO)
    before = path.stat().st_mtime_ns
    notes: list[str] = []
    check = version_catalogue(config, notes.append)
    assert check is not None
    machine = _Machine()
    machine.info = dict(OBJECT_INFO)
    assert await check.refusal(machine, _conjure()) is None  # type: ignore[arg-type]
    assert path.stat().st_mtime_ns == before
    assert notes == []


def test_a_simulator_s_catalogue_is_kept_apart_from_runcomfy_s(tmp_path: Path) -> None:
    """Same version id, same home: RunComfy's file is where it was; a simulator's (any port
    of its host) is another one."""
    real = catalogue_path(_config(tmp_path), VERSION)
    sim = catalogue_path(_config(tmp_path, "http://127.0.0.1:41234"), VERSION)
    sim_again = catalogue_path(_config(tmp_path, "http://127.0.0.1:41999/"), VERSION)
    assert real == tmp_path / "state" / "catalogs" / f"{VERSION}.json"
    assert sim != real
    assert sim == sim_again
    assert sim.name == f"{VERSION}.json"


async def test_the_service_validates_submissions_with_the_machine_s_catalogue_once_fetched(
    tmp_path: Path,
) -> None:
    """Started with the stale kept catalogue; once the first machine gave its own, the
    service's submission check uses that one (a graph it refuses is 422, not a job)."""
    config = _config(tmp_path)
    write_catalogue(catalogue_path(config, VERSION), OBJECT_INFO)
    check = version_catalogue(config, lambda _: None)
    assert check is not None
    kept = catalog_from_object_info(OBJECT_INFO)
    conjure = SimpleNamespace(ctx=SimpleNamespace(prompt_check=check))
    service = Service(conjure, None, None, Settings(), catalog=kept, mode="runcomfy")  # type: ignore[arg-type]
    before = service.catalog
    await check.refusal(_Machine(), _conjure())  # type: ignore[arg-type]
    after = service.catalog
    assert before is not None
    assert MISSING in before
    assert after is not None
    assert MISSING not in after
