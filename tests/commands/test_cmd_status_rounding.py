"""``status``'s per-machine costs add up to the total it shows: each was rounded on its own
(three machines of $0.000275 showed $0.0003 each under a total of $0.0008). The total stays
the exact sum rounded (as the run's summary and replay show it); the machines' figures are
shares of it, each within $0.0001 of its cost."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar

import pytest
from hypothesis import given
from hypothesis import strategies as st

import eventlog
from conjure_actors.cli import main
from conjure_actors.clients import runcomfy
from conjure_actors.clients.runcomfy import Server
from conjure_actors.commands.status import SHOWN_UNIT, shown_shares
from conjure_actors.domain import events as ev
from conjure_actors.domain.events import Event
from conjure_actors.domain.prices import format_usd

pytestmark = pytest.mark.usefixtures("no_credentials")


def _dollars(text: str) -> Decimal:
    return Decimal(text.removeprefix("$"))


def test_a_log_s_machine_costs_add_up_to_its_total(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Three machines of 275 micro-dollars: figures that add up to the $0.0008 total."""
    path = tmp_path / "r.log"
    with eventlog.open_writer(path, Event) as writer:
        for sid in ("s1", "s2", "s3"):
            writer.append(
                ev.MachineStopped(
                    server_id=sid, stopped_at=10.0, billed_seconds=1, cost_micros=275, at=10.0
                )
            )
    assert main(["status", str(path)]) == 0
    out = capsys.readouterr().out
    machines = re.findall(r"  machine s\d \(.*\): .*, (\$[\d.]+)\n", out)
    (total,) = re.findall(r"  cost: (\$[\d.]+)", out)
    assert len(machines) == 3, out
    assert total == "$0.0008"
    assert sum(map(_dollars, machines)) == _dollars(total), out


class _Listing:
    """A RunComfy client whose account lists ``servers``."""

    servers: ClassVar[list[Server]] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    async def list_servers(self) -> list[Server]:
        return self.servers


def test_the_account_s_machine_costs_add_up_to_its_total(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Three medium machines stopped after one billed second each ($0.000275)."""
    _Listing.servers = [
        Server(sid, "Deleting", "medium", service_ready_at=1000.0, estimated_stopping_at=1001.0)
        for sid in ("m1", "m2", "m3")
    ]
    monkeypatch.setattr(runcomfy, "RunComfyClient", _Listing)
    monkeypatch.setenv("RUNCOMFY_USER_ID", "u")
    monkeypatch.setenv("RUNCOMFY_API_TOKEN", "t")
    assert main(["status"]) == 0
    out = capsys.readouterr().out
    machines = re.findall(r"  m\d: .*cost at most (\$[\d.]+)\n", out)
    (total,) = re.findall(r"  total so far: at most (\$[\d.]+)", out)
    assert len(machines) == 3, out
    assert total == "$0.0008"
    assert sum(map(_dollars, machines)) == _dollars(total), out


@given(st.lists(st.integers(min_value=0, max_value=10**9), max_size=12))
def test_shares_add_up_to_the_total_shown_each_within_a_unit_of_its_cost(
    costs: list[int],
) -> None:
    """The invariant, for any costs: the shares' sum is the total as shown, each share is
    whole units, and none is a unit or more from its cost."""
    shares = shown_shares(costs)
    assert format_usd(sum(shares)) == format_usd(sum(costs))
    assert all(share % SHOWN_UNIT == 0 for share in shares)
    assert all(abs(share - cost) < SHOWN_UNIT for share, cost in zip(shares, costs, strict=True))
