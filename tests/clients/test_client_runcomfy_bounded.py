"""The RunComfy client keeps a bounded memory of machine hosts, and still scrubs recent ones."""

from __future__ import annotations

import json
import random

import httpx
import pytest
import trio
import trio.testing

from conjure_actors.clients import RetryPolicy
from conjure_actors.clients.errors import RunComfyError
from conjure_actors.clients.runcomfy import RunComfyClient, RunComfyPolicy


async def test_hosts_seen_are_bounded_and_the_newest_still_scrubbed(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Twice the bound of machines seen: at most the bound of hosts kept; an error naming
    the newest is scrubbed (the bound lowered from 1024 to 16: the same eviction, 50x cheaper)."""
    monkeypatch.setattr("conjure_actors.clients.runcomfy._MAX_HOSTS", 16)
    seen = 0

    def answer(request: httpx.Request) -> httpx.Response:
        nonlocal seen
        if request.url.path.endswith("/servers/broken"):
            return httpx.Response(409, text=f"conflict on m{seen - 1}.machines.invalid")
        seen += 1
        server = {
            "server_id": f"s{seen}",
            "current_status": "Ready",
            "main_service_url": f"https://m{seen - 1}.machines.invalid/comfy",
        }
        return httpx.Response(200, content=json.dumps(server))

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as http:
        client = RunComfyClient(
            "https://api.invalid",
            "u",
            "tok",
            http=http,
            policy=RunComfyPolicy(retry=RetryPolicy(attempts=1)),
            rng=random.Random(0),
        )
        for n in range(40):
            await client.status(f"s{n}")
        assert len(client._hosts) <= 16
        with pytest.raises(RunComfyError) as info:
            await client.status("broken")
    assert "m39" not in str(info.value)
    assert "<host>" in str(info.value)
