"""The node catalogue of a RunComfy workflow version with none recorded: fetched once from
the run's first machine, kept where ``machine up`` keeps it, and each prompt checked against
it before its POST; a failed fetch is a note and the prompts go unchecked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio

from conjure_actors.actors.example import bundled_workflow
from conjure_actors.clients.errors import TransportError
from conjure_actors.commands.cloud_args import VersionCatalogue
from conjure_actors.sim.catalog import OBJECT_INFO


class _Machine:
    """What the check uses of a machine's ComfyUI client: ``object_info`` and ``scrub``."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.fetches = 0

    async def object_info(self) -> dict[str, Any]:
        self.fetches += 1
        await trio.lowlevel.checkpoint()
        if self.fail:
            raise TransportError("GET /object_info: connection refused")
        return dict(OBJECT_INFO)

    def scrub(self, text: str) -> str:
        return text


def _conjure() -> dict[str, Any]:
    graph: dict[str, Any] = json.loads(bundled_workflow("conjure_flux_mesh.json"))
    return graph


@pytest.mark.slow
async def test_the_catalogue_is_fetched_once_kept_and_refuses_a_bad_value(
    tmp_path: Path,
) -> None:
    """Two prompts, one fetch: the catalogue is kept (0600); a good prompt passes, a combo
    value the version lacks is refused with its node, class and the pre-flight's line."""
    path = tmp_path / "catalogs" / "wv-1.json"
    notes: list[str] = []
    check = VersionCatalogue(path, "wv-1", notes.append)
    machine = _Machine()
    assert await check.refusal(machine, _conjure()) is None  # type: ignore[arg-type]
    bad = _conjure()
    bad["20"]["inputs"]["scheduler"] = "nope"
    refused = await check.refusal(machine, bad)  # type: ignore[arg-type]
    assert refused is not None
    assert (refused.node_id, refused.class_type) == ("20", "KSampler")
    assert refused.message.startswith(
        "workflow version wv-1's node catalogue (from its machine) refuses the prompt"
        " (not submitted): node 20 (KSampler) input 'scheduler': 'nope' is not one of:"
    )
    assert machine.fetches == 1
    assert json.loads(path.read_text()) == OBJECT_INFO
    assert path.stat().st_mode & 0o777 == 0o600
    assert notes == []


async def test_a_failed_fetch_is_a_note_and_the_prompts_go_unchecked(tmp_path: Path) -> None:
    """The machine does not give its catalogue: one note, nothing kept, no prompt refused,
    and it is not asked again for every job."""
    path = tmp_path / "catalogs" / "wv-1.json"
    notes: list[str] = []
    check = VersionCatalogue(path, "wv-1", notes.append)
    machine = _Machine(fail=True)
    bad = _conjure()
    bad["20"]["inputs"]["scheduler"] = "nope"
    assert await check.refusal(machine, bad) is None  # type: ignore[arg-type]
    assert await check.refusal(machine, bad) is None  # type: ignore[arg-type]
    assert machine.fetches == 1
    assert notes == [
        "workflow version wv-1: its machine did not give its node catalogue"
        " (GET /object_info: connection refused); the jobs run without that check"
    ]
    assert not path.exists()
