"""`python -m conjure_actors sim`: serve the simulated cloud on loopback until Ctrl-C.

It prints shell ``export`` lines for a RunComfy account the simulator accepts (base URL, user
id, token: a local simulator token, so printing it is fine) and a workflow version it has
(the CONJURE workflow's: pasted into another shell, a bare ``run`` works), a comment naming
every version it accepts, and the URL of a standalone ComfyUI simulator, then serves both
until interrupted. Machines launched through the simulated RunComfy API each get their own
ComfyUI on their own loopback port.
"""

from __future__ import annotations

import argparse
import errno
import logging
import math
import signal
import socket
import sys
from functools import partial
from typing import TYPE_CHECKING, Final

import trio

from conjure_actors.errors import UsageError
from conjure_actors.sim.cloud import CloudFaults, CloudTimings
from conjure_actors.sim.comfyui import ComfyFaults, ComfyTimings
from conjure_actors.sim.runcomfy import RunComfyFaults, RunComfyTimings

if TYPE_CHECKING:
    from conjure_actors.sim.serve import ServedCloud

HELP = "serve a simulated RunComfy account and ComfyUI on loopback until Ctrl-C"


def _probability(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a probability between 0 and 1, got {text}")
    return value


def _non_negative(text: str) -> float:
    value = float(text)
    if not (value >= 0 and math.isfinite(value)):  # nan or inf: never Ready, never done
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds, got {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=0, help="port of the RunComfy API (default 0: any free port)"
    )
    parser.add_argument(
        "--comfyui-port",
        type=int,
        default=0,
        help="port of the standalone ComfyUI (default 0: any free port)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of every random choice")
    parser.add_argument(
        "--ready-delay",
        type=_non_negative,
        default=3.0,
        metavar="S",
        help="seconds from launch to Ready (RunComfy really takes 1-3 min; default 3)",
    )
    parser.add_argument(
        "--deleting-delay",
        type=_non_negative,
        default=2.0,
        metavar="S",
        help="seconds a stopped machine stays 'Deleting' (default 2)",
    )
    parser.add_argument("--user-id", default="sim-user", help="the account's user id")
    parser.add_argument("--token", default=None, help="the API token to accept (default: derived)")
    parser.add_argument(
        "--rate", type=float, default=1.0, help="account rate limit, requests/s (default 1)"
    )
    parser.add_argument("--burst", type=int, default=3, help="requests allowed at once (default 3)")
    parser.add_argument(
        "--clock-offset",
        type=_finite,
        default=0.0,
        metavar="S",
        help=(
            "run the simulated RunComfy's clock S seconds ahead of this host's (negative:"
            " behind): its Date headers, machine times and bills (default 0)"
        ),
    )
    parser.add_argument(
        "--node-scale",
        type=_non_negative,
        default=1.0,
        metavar="S",
        help=(
            "multiply every ComfyUI node duration (default 1: a real server's timings, the"
            " CONJURE workflow ~150 s on a GPU machine; 0.01: run's quick demo; 0: instant)"
        ),
    )
    faults = parser.add_argument_group("fault knobs (probabilities)")
    faults.add_argument(
        "--fault-429",
        type=_probability,
        default=0.0,
        metavar="P",
        help="per RunComfy request: start a burst of 429 answers with Retry-After (default 0)",
    )
    faults.add_argument(
        "--fault-5xx",
        type=_probability,
        default=0.0,
        metavar="P",
        help="per RunComfy request: answer 5xx without acting (default 0)",
    )
    faults.add_argument(
        "--fault-launch-error",
        type=_probability,
        default=0.0,
        metavar="P",
        help="per launch: the machine ends in status Error instead of Ready (default 0)",
    )
    faults.add_argument(
        "--fault-stuck-starting",
        type=_probability,
        default=0.0,
        metavar="P",
        help="per launch: the machine never leaves Starting (default 0)",
    )
    faults.add_argument(
        "--fault-vanish",
        type=_probability,
        default=0.0,
        metavar="P",
        help="per launch: a Ready machine disappears 30 s later (404, billing stops; default 0)",
    )
    faults.add_argument(
        "--fault-ws-drop",
        type=_probability,
        default=0.0,
        metavar="P",
        help="per ComfyUI WebSocket frame: the server drops the socket instead (default 0)",
    )


def _configure(args: argparse.Namespace) -> tuple[CloudFaults, CloudTimings]:
    for flag, port in (("--port", args.port), ("--comfyui-port", args.comfyui_port)):
        if not 0 <= port <= 65535:
            raise UsageError(f"{flag} {port}: use a port from 0 to 65535 (0: any free one)")
    if not (math.isfinite(args.rate) and args.rate > 0) or args.burst < 1:  # nan: refused
        raise UsageError("--rate must be a finite number > 0 and --burst >= 1")
    faults = CloudFaults(
        runcomfy=RunComfyFaults(
            rate_limit_burst_probability=args.fault_429,
            server_error_rate=args.fault_5xx,
            launch_error_rate=args.fault_launch_error,
            stuck_starting_rate=args.fault_stuck_starting,
            vanish_rate=args.fault_vanish,
        ),
        comfyui=ComfyFaults(ws_drop_rate=args.fault_ws_drop),
    )
    timings = CloudTimings(
        runcomfy=RunComfyTimings(
            ready_delay=args.ready_delay,
            deleting_delay=args.deleting_delay,
            rate_per_second=args.rate,
            burst=args.burst,
            clock_offset=args.clock_offset,
        ),
        comfyui=ComfyTimings.real(scale=args.node_scale),
    )
    return faults, timings


async def _serve(args: argparse.Namespace, faults: CloudFaults, timings: CloudTimings) -> None:
    from conjure_actors.sim.serve import serve_cloud

    # Ctrl-C (SIGINT) or SIGTERM ends the serve loop through trio, so every server shuts down
    # through cancellation and the process exits 0 instead of dying in a KeyboardInterrupt.
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            served: ServedCloud = await nursery.start(
                partial(
                    serve_cloud,
                    host=args.host,
                    port=args.port,
                    comfyui_port=args.comfyui_port,
                    seed=args.seed,
                    faults=faults,
                    timings=timings,
                    user_id=args.user_id,
                    token=args.token,
                )
            )
            print(f"# conjure_actors simulated cloud (seed {args.seed}); a local simulator token")
            for line in exports(served):
                print(line)
            print(f"# standalone ComfyUI simulator: {served.comfyui_url}")
            print(f"#   use it with: run --comfyui-url {served.comfyui_url}")
            print("# press Ctrl-C to stop", flush=True)
            async for _ in signals:
                break
            nursery.cancel_scope.cancel()


CONJURE_VERSION: Final = "wv-conjure-flux-mesh-1"
"""The simulator's workflow version of the CONJURE workflow (``run`` without a workflow)."""


def exports(served: ServedCloud) -> list[str]:
    """The lines that point ``run`` (in another shell) at ``served``: the account and a
    workflow version it accepts (RunComfy needs one: ``CONJURE_RUNCOMFY_WORKFLOW_VERSION``,
    the CONJURE workflow's, so that a bare ``run`` works), then a comment naming every
    version the simulator accepts and what each runs."""
    workflows = served.runcomfy.workflows
    versions = [w.version_id for w in workflows]
    default = CONJURE_VERSION if CONJURE_VERSION in versions else versions[0]
    named = ", ".join(f"{w.version_id} ({w.workflow_name})" for w in workflows)
    other = next((v for v in versions if v != default), default)
    return [
        f"export RUNCOMFY_API_BASE_URL={served.base_url}",
        f"export RUNCOMFY_USER_ID={served.user_id}",
        f"export RUNCOMFY_API_TOKEN={served.token}",
        f"export CONJURE_RUNCOMFY_WORKFLOW_VERSION={default}",
        f"# workflow versions it accepts: {named}; another one: run WORKFLOW.json"
        f" --workflow-version {other}",
    ]


def _single(exc: BaseException) -> BaseException:
    """The one exception inside nested single-member exception groups (or ``exc``)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def main(args: argparse.Namespace) -> int:
    faults, timings = _configure(args)
    logging.basicConfig(level=logging.WARNING, format="sim: %(message)s", stream=sys.stderr)
    logging.getLogger("conjure_actors.sim").setLevel(logging.INFO)
    try:
        trio.run(_serve, args, faults, timings)
    except BaseException as exc:
        inner = _single(exc)
        if isinstance(inner, KeyboardInterrupt):  # a second Ctrl-C while shutting down
            print("sim: stopped", file=sys.stderr)
            return 0
        if isinstance(inner, OSError):
            raise UsageError(_listen_problem(args, inner)) from inner
        raise
    print("sim: stopped", file=sys.stderr)
    return 0


def _listen_problem(args: argparse.Namespace, exc: OSError) -> str:
    """Why the simulator cannot listen, and what to change: the address (it does not
    resolve, or is not this machine's) or the ports (taken, or privileged)."""
    why = exc.strerror or str(exc)
    if isinstance(exc, socket.gaierror) or exc.errno == errno.EADDRNOTAVAIL:
        return (
            f"cannot listen on {args.host} ({why}): give --host an address of this machine"
            " (default 127.0.0.1)"
        )
    return (
        f"cannot listen on {args.host} ({why}): pick other ports"
        " (--port, --comfyui-port; 0: any free one)"
    )
