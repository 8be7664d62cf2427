"""A launch of a workflow version the account does not have is refused, as RunComfy refuses
it: by the served simulator (``python -m conjure_actors sim``) and the embedded cloud, so a
typo in ``--workflow-version`` is caught before real RunComfy."""

from __future__ import annotations

import random
from functools import partial

import httpx
import trio
import trio.testing

from conjure_actors.clients.errors import LaunchError
from conjure_actors.clients.runcomfy import RunComfyClient
from conjure_actors.sim.cloud import CloudTimings, open_simulated_cloud
from conjure_actors.sim.runcomfy import RunComfySim, RunComfyTimings
from conjure_actors.sim.serve import ServedCloud, serve_cloud
from tests.sim.test_sim_runcomfy import AUTH, ROOT, TOKEN, USER


async def test_a_launch_of_an_unknown_version_is_refused_and_launches_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """With ``any_version=False``, an unknown version gets a 4xx and no machine."""
    sim = RunComfySim(user_id=USER, tokens=[TOKEN], any_version=False)
    async with trio.open_nursery() as nursery:
        await nursery.start(sim.run)
        transport = httpx.ASGITransport(app=sim.asgi)
        async with httpx.AsyncClient(transport=transport, headers=AUTH) as http:
            body = {"workflow_version_id": "nope", "server_type": "medium"}
            resp = await http.post(f"{ROOT}/servers", json={**body, "estimated_duration": 600})
            known = sim.workflows[0].version_id
            ok = await http.post(
                f"{ROOT}/servers",
                json={**body, "workflow_version_id": known, "estimated_duration": 600},
            )
        nursery.cancel_scope.cancel()
    assert 400 <= resp.status_code < 500, resp.text
    assert ok.status_code == 200, ok.text
    assert [r.workflow_version_id for r in sim.billing()] == [known]


async def test_the_embedded_cloud_refuses_an_unknown_version_in_one_clear_line(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The client says the version is unknown and names the account's versions: one line,
    no raw body, no machine billing."""
    async with open_simulated_cloud() as cloud:
        async with httpx.AsyncClient(transport=cloud.http_transport()) as http:
            client = RunComfyClient(
                cloud.base_url, cloud.user_id, cloud.token, http=http, rng=random.Random(0)
            )
            try:
                await client.launch("nope-version", "medium", 600)
            except LaunchError as exc:
                message = str(exc)
            else:
                raise AssertionError("an unknown version was launched")
        assert cloud.runcomfy.billing() == []
    assert "'nope-version'" in message
    assert "wv-conjure-flux-mesh-1" in message
    assert "{" not in message
    assert "\n" not in message


async def test_the_served_simulator_refuses_an_unknown_version() -> None:
    """``python -m conjure_actors sim``'s RunComfy (loopback) refuses an unknown version."""
    fast = CloudTimings(runcomfy=RunComfyTimings(ready_delay=0.05, burst=50))
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            served: ServedCloud = await nursery.start(partial(serve_cloud, timings=fast))
            async with httpx.AsyncClient() as http:
                resp = await http.post(
                    f"{served.base_url}/prod/api/users/{served.user_id}/servers",
                    headers={"Authorization": f"Bearer {served.token}"},
                    json={
                        "workflow_version_id": "nope-version",
                        "server_type": "medium",
                        "estimated_duration": 600,
                    },
                )
            assert 400 <= resp.status_code < 500, resp.text
            assert served.runcomfy.billing() == []
            nursery.cancel_scope.cancel()
