"""``status`` with RunComfy credentials lists a Ready machine of a type the price table has
no price for (one launched from the dashboard) as of unknown cost, and its total says it
leaves that out: it said "cost so far $0.0000" and a total without it."""

from __future__ import annotations

import time
from typing import Any, ClassVar

import pytest

from conjure_actors.cli import main
from conjure_actors.clients import runcomfy
from conjure_actors.clients.runcomfy import Server


class _Listing:
    """A RunComfy client whose account lists ``servers``."""

    servers: ClassVar[list[Server]] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    async def list_servers(self) -> list[Server]:
        return self.servers


def test_a_ready_machine_of_an_unpriced_type_is_of_unknown_cost(
    no_credentials: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The priced machine's cost, the other's "cost unknown", and a total that says so."""
    ready_at = time.time() - 3600
    _Listing.servers = [
        Server("m1", "Ready", "medium", service_ready_at=ready_at),
        Server("x1", "Ready", "xl-plus", service_ready_at=ready_at),
    ]
    monkeypatch.setattr(runcomfy, "RunComfyClient", _Listing)
    monkeypatch.setenv("RUNCOMFY_USER_ID", "u")
    monkeypatch.setenv("RUNCOMFY_API_TOKEN", "t")
    assert main(["status"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "RunComfy: 2 machine(s)"
    assert lines[1].startswith("  m1: Ready, medium, cost so far $0.99")
    assert lines[2].startswith("  x1: Ready, xl-plus, cost unknown (no ")
    assert "price for type xl-plus)" in lines[2]
    assert lines[3].startswith("  total so far: $0.99")
    assert "and the cost of 1 machine(s) of a type without a price" in lines[3]
