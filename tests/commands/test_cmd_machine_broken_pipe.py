"""``machine up | true``: stdout's reader leaves while a machine is launched. The broken
pipe used to escape between the launch and its record (exit 141, not a word): the machine
billed until its lease ended, recorded nowhere. Now the lines go to stderr and the machine
is recorded (``machine down`` stops it)."""

from __future__ import annotations

import argparse
import io
import os
import sys
from pathlib import Path

import pytest
import trio
import trio.testing

from conjure_actors.commands.machine import machine_action, pending_path, read_dev_machine
from conjure_actors.config import Config, RunComfyConfig
from tests.clients.test_client_runcomfy import VERSION, open_client
from tests.commands.test_cmd_machine import served

CONFIG = Config(runcomfy=RunComfyConfig(workflow_version=VERSION))


class Closed(io.StringIO):
    """A stdout whose reader has left."""

    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")

    def flush(self) -> None:
        raise BrokenPipeError(32, "Broken pipe")


_VERSION = ("--workflow-version", "wv-conjure-flux-mesh-1")


def _args(action: str) -> argparse.Namespace:
    return argparse.Namespace(action=action, duration=3600.0, wait=600.0)


async def test_machine_up_into_a_closed_pipe_records_the_machine_and_says_so_on_stderr(
    autojump_clock: trio.testing.MockClock,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The machine launched is Ready and recorded, its lines on stderr; `machine down`
    (its stdout fine again) stops it."""
    path = tmp_path / "dev.json"
    async with open_client() as (sim, client):
        monkeypatch.setattr(sys, "stdout", Closed())
        assert await machine_action(_args("up"), CONFIG, path, client) == 0
        monkeypatch.undo()
        (server_id,) = sim.running()
        recorded = read_dev_machine(path)
        assert recorded is not None
        assert recorded.server_id == server_id
        assert not pending_path(path).exists()
        err = capsys.readouterr().err
        assert f"launched dev machine {server_id}" in err
        assert f"dev machine {server_id} is Ready; recorded in {path}" in err
        assert await machine_action(_args("down"), CONFIG, path, client) == 0
        assert sim.running() == []


@pytest.mark.slow  # a subprocess against a simulated cloud on loopback
async def test_machine_up_piped_into_true_leaves_no_machine_unrecorded(tmp_path: Path) -> None:
    """`machine up ... | true` (a real pipe, its reader gone): exit 0, the lines on stderr,
    the machine recorded; it was exit 141, nothing said, only STATE.launching left."""
    async with served() as cloud:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNCOMFY_", "CONJURE_"))}
        env.update(
            RUNCOMFY_API_BASE_URL=cloud.base_url,
            RUNCOMFY_USER_ID=cloud.user_id,
            RUNCOMFY_API_TOKEN=cloud.token,
            CONJURE_DEV_STATE_FILE=str(tmp_path / "dev.json"),
        )
        read, write = os.pipe()
        os.close(read)
        try:
            with trio.fail_after(90):
                proc = await trio.run_process(
                    [sys.executable, "-m", "conjure_actors", "machine", "up", *_VERSION],
                    cwd=tmp_path,
                    env=env,
                    stdout=write,
                    capture_stderr=True,
                    check=False,
                )
        finally:
            os.close(write)
        err = proc.stderr.decode()
        assert proc.returncode == 0, err
        assert "is Ready; recorded in" in err
        assert read_dev_machine(tmp_path / "dev.json") is not None
        assert not pending_path(tmp_path / "dev.json").exists()
