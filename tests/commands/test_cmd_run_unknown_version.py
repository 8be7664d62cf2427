"""``run --workflow-version X`` of a version the account does not have is bad input, as it
is for ``machine up``: one line naming the account's versions, exit 2, before anything is
launched or logged. It was a refused launch that failed the job: exit 1, as if RunComfy had
failed."""

from __future__ import annotations

import os
import sys
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
from bad_input_support import one_line_usage_error

from conjure_actors.clients.errors import ClientError
from conjure_actors.commands.run import VERSION_CHECK_SECONDS, refuse_unknown_version
from conjure_actors.errors import UsageError
from conjure_actors.sim.serve import ServedCloud, serve_cloud
from tests.clients.test_client_runcomfy import open_client


async def test_a_version_the_account_does_not_have_is_a_usage_error_naming_its_own(
    autojump_clock: Any,
) -> None:
    """The line names the version and the account's versions, and says which flag."""
    async with open_client() as (sim, rc):
        with pytest.raises(UsageError) as caught:
            await refuse_unknown_version(rc, "wv-nope")
    said = str(caught.value)
    assert said.startswith("RunComfy does not know workflow version 'wv-nope'")
    assert sim.workflows[0].version_id in said
    assert "--workflow-version" in said


async def test_a_version_the_account_has_passes(autojump_clock: Any) -> None:
    """The account's own version goes on to the run."""
    async with open_client() as (sim, rc):
        await refuse_unknown_version(rc, sim.workflows[0].version_id)


async def test_a_listing_that_fails_stops_nothing() -> None:
    """No listing (an outage, a 5xx): the run goes on and its launch is the judge."""

    class Down:
        async def list_workflows(self) -> Any:
            raise ClientError("list workflows: HTTP 503", status=503)

    await refuse_unknown_version(Down(), "wv-any")


async def test_a_listing_that_does_not_answer_stops_nothing_for_long(
    autojump_clock: Any,
) -> None:
    """A RunComfy that hangs: the check gives up within its bound, the run goes on."""

    class Hanging:
        async def list_workflows(self) -> Any:
            await trio.sleep_forever()

    with trio.fail_after(VERSION_CHECK_SECONDS + 1):
        await refuse_unknown_version(Hanging(), "wv-any")


@pytest.mark.slow
async def test_run_with_an_unknown_version_exits_2_in_one_line_and_leaves_no_log(
    tmp_path: Path,
) -> None:
    """Against a simulated account on loopback: exit 2, one line, nothing launched or
    logged."""
    async with trio.open_nursery() as nursery:
        cloud: ServedCloud = await nursery.start(partial(serve_cloud, seed=7))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNCOMFY_", "CONJURE_"))}
        env.update(
            RUNCOMFY_API_BASE_URL=cloud.base_url,
            RUNCOMFY_USER_ID=cloud.user_id,
            RUNCOMFY_API_TOKEN=cloud.token,
        )
        with trio.fail_after(60):
            done = await trio.run_process(
                [
                    *(sys.executable, "-m", "conjure_actors", "run"),
                    *("--workflow-version", "wv-nope", "--log", "run.log", "--out", "out"),
                ],
                cwd=tmp_path,
                env=env,
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
        launched = cloud.runcomfy.running()
        nursery.cancel_scope.cancel()
    err = one_line_usage_error(done.returncode, done.stderr.decode())
    assert "'wv-nope'" in err
    assert "wv-conjure-flux-mesh-1" in err
    assert not (tmp_path / "run.log").exists()
    assert launched == []


async def test_a_signal_during_the_version_check_does_not_wait_for_it(
    autojump_clock: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check runs in the scope a stop signal cancels (a fresh run has launched nothing):
    a RunComfy slow to answer is not waited for, the run goes on to stop at once."""
    from conjure_actors.commands import run as run_mod
    from conjure_actors.config import Config, RunComfyConfig, Secret

    async def hangs(config: Any) -> None:
        await trio.sleep_forever()

    monkeypatch.setattr(run_mod, "_check_workflow_version", hangs)
    config = Config(
        runcomfy=RunComfyConfig(
            user_id="u", api_token=Secret("t"), workflow_version="wv-1", base_url="http://x"
        )
    )
    checks = trio.CancelScope()
    checks.cancel()  # the signal came
    with trio.fail_after(1):
        async with run_mod._cloud(config, checks=checks) as (_, mode, *_rest):
            assert mode == "runcomfy"
