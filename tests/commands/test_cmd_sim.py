"""`python -m conjure_actors sim`: prints usable env lines, serves, exits 0 on Ctrl-C."""

from __future__ import annotations

import errno
import logging
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import trio

from conjure_actors.cli import build_parser
from conjure_actors.commands import sim
from conjure_actors.errors import UsageError

EXPORTS = (
    "RUNCOMFY_API_BASE_URL",
    "RUNCOMFY_USER_ID",
    "RUNCOMFY_API_TOKEN",
    "CONJURE_RUNCOMFY_WORKFLOW_VERSION",
)


async def _read_until_ready(proc: trio.Process) -> str:
    assert proc.stdout is not None
    text = b""
    while b"press Ctrl-C" not in text:
        chunk = await proc.stdout.receive_some()
        if not chunk:
            break
        text += chunk
    return text.decode()


@pytest.mark.slow  # a subprocess: not in the inner loop (just test)
async def test_sim_command_prints_env_serves_and_exits_0_on_sigint() -> None:
    """The printed base URL, user id and token work; SIGINT ends the process with status 0."""
    with trio.fail_after(60):
        proc = await trio.lowlevel.open_process(
            [sys.executable, "-m", "conjure_actors", "sim", "--port", "0", "--seed", "3"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            text = await _read_until_ready(proc)
            env = {}
            for line in text.splitlines():
                if line.startswith("export "):
                    name, _, value = line[len("export ") :].partition("=")
                    env[name] = value
            assert set(env) == set(EXPORTS)
            assert "standalone ComfyUI simulator: http://127.0.0.1:" in text
            async with httpx.AsyncClient() as http:
                resp = await http.get(
                    f"{env['RUNCOMFY_API_BASE_URL']}/prod/api/users/{env['RUNCOMFY_USER_ID']}/servers",
                    headers={"Authorization": f"Bearer {env['RUNCOMFY_API_TOKEN']}"},
                )
            assert resp.status_code == 200
            assert resp.json() == []
            proc.send_signal(signal.SIGINT)
            code = await proc.wait()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert code == 0


def test_busy_port_is_a_usage_error() -> None:
    """A port already in use gives a one-line UsageError (exit 2), not a traceback."""
    sim_logger = logging.getLogger("conjure_actors.sim")
    level = sim_logger.level
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        args = build_parser().parse_args(["sim", "--port", str(port)])
        try:
            with pytest.raises(UsageError, match=r"cannot listen.*pick other ports"):
                sim.main(args)
        finally:
            sim_logger.setLevel(level)


def test_a_host_that_does_not_resolve_names_host_not_ports() -> None:
    """A host that does not resolve: the line says to change ``--host`` (it said "pick
    other ports", which could never help)."""
    sim_logger = logging.getLogger("conjure_actors.sim")
    level = sim_logger.level
    args = build_parser().parse_args(["sim", "--host", "999.1.1.1"])
    try:
        with pytest.raises(UsageError, match="give --host an address of this machine"):
            sim.main(args)
    finally:
        sim_logger.setLevel(level)


def test_an_address_not_of_this_machine_names_host_not_ports() -> None:
    """EADDRNOTAVAIL (an address of another machine) is the host's fault too."""
    args = build_parser().parse_args(["sim", "--host", "192.0.2.1"])
    exc = OSError(errno.EADDRNOTAVAIL, os.strerror(errno.EADDRNOTAVAIL))
    assert "give --host an address of this machine" in sim._listen_problem(args, exc)


@pytest.mark.parametrize("value", ["-1", "nan", "inf"])
def test_a_delay_that_is_not_a_finite_number_of_seconds_is_refused(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--ready-delay nan`` (or inf, or below 0) would leave every machine Starting for
    ever: one argparse line and exit 2 instead."""
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["sim", "--ready-delay", value])
    assert exc.value.code == 2
    assert "must be a finite number >= 0" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--port", "99999"], "--port 99999: use a port from 0 to 65535"),
        (["--comfyui-port", "-1"], "--comfyui-port -1: use a port from 0 to 65535"),
        (["--rate", "nan"], "--rate must be a finite number > 0"),
    ],
)
def test_a_port_out_of_range_or_a_nan_rate_is_refused(args: list[str], message: str) -> None:
    """sim --port 99999 was an OverflowError traceback from bind (as serve's was)."""
    with pytest.raises(UsageError, match=message):
        sim.main(build_parser().parse_args(["sim", *args]))


async def test_the_exports_sim_prints_give_run_a_workflow_version_it_accepts() -> None:
    """`sim --help`'s example (its exports, then a bare `run`) failed with "RunComfy needs a
    workflow version": the exports now set one the simulator accepts (the CONJURE
    workflow's), and a comment names every version it accepts."""
    from functools import partial

    from conjure_actors.config import load_config
    from conjure_actors.sim.serve import serve_cloud

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            served = await nursery.start(partial(serve_cloud, port=0, comfyui_port=0))
            lines = sim.exports(served)
            nursery.cancel_scope.cancel()
    env = dict(
        line.removeprefix("export ").split("=", 1) for line in lines if line.startswith("export ")
    )
    config = load_config(env=env, cwd=Path("/nonexistent"))
    accepted = {w.version_id for w in served.runcomfy.workflows}
    assert config.mode == "runcomfy"
    assert config.runcomfy.workflow_version == "wv-conjure-flux-mesh-1"
    comment = [line for line in lines if line.startswith("# workflow versions")]
    assert comment, lines
    assert all(version in comment[0] for version in accepted)
