"""The simulators over loopback sockets: hypercorn on trio, port 0 by default.

- :func:`serve_asgi` serves any ASGI app and reports its base URL through ``task_status``;
- :func:`serve_comfyui` serves one ComfyUI simulator (its worker included);
- :func:`serve_cloud` serves a RunComfy account on one port; each machine that becomes Ready
  gets its own ComfyUI on its own port, so its ``main_service_url`` is
  ``http://127.0.0.1:<port>``, and that server shuts down when the machine stops. A standalone
  ComfyUI (not behind RunComfy) is served beside it.

All of them run until cancelled (trio's ``serve_*`` convention). The in-memory twin is
:mod:`conjure_actors.sim.cloud`; these are for the ``sim`` command and loopback tests.
"""

from __future__ import annotations

import logging
import random
import socket
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import attrs
import hypercorn.config
import hypercorn.trio
import trio

from conjure_actors.sim.cloud import CloudFaults, CloudTimings, machine_seed
from conjure_actors.sim.comfyui import ComfyFaults, ComfyTimings, ComfyUISim
from conjure_actors.sim.runcomfy import RunComfySim

__all__ = ["ServedCloud", "ServedComfyUI", "serve_asgi", "serve_cloud", "serve_comfyui"]

log = logging.getLogger("conjure_actors.sim.serve")

_WS_MAX_MESSAGE: int = 64 * 1024 * 1024
_STOP_GRACE: float = 2.0


def _config(host: str, port: int) -> hypercorn.config.Config:
    config = hypercorn.config.Config()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.accesslog = None
    # hypercorn announces "Running on <url>" at INFO: a machine's URL is a capability.
    config.loglevel = "WARNING"
    config.websocket_max_message_size = _WS_MAX_MESSAGE
    config.graceful_timeout = 0.5
    # The apps date their own answers (the RunComfy sim's Date follows its clock, which may
    # run at an offset): a second Date from hypercorn's clock would make the header unreadable.
    config.include_date_header = False
    return config


def _check_port_free(host: str, port: int) -> None:
    """Raise ``OSError`` now if ``host:port`` cannot be bound (hypercorn would leak a socket):
    a port taken, or (port 0 too) a host that does not resolve or is not this machine's."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))


async def serve_asgi(
    app: Any,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    shutdown: trio.Event | None = None,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app``; report ``http://host:port`` (the bound port).

    Runs until cancelled, or until ``shutdown`` is set: then hypercorn stops listening, lets
    open connections finish for a moment and closes them cleanly before this returns.
    """
    _check_port_free(host, port)
    config = _config(host, port)
    trigger = trio.sleep_forever if shutdown is None else shutdown.wait
    async with trio.open_nursery() as nursery:
        binds: list[str] = await nursery.start(
            partial(hypercorn.trio.serve, app, config, shutdown_trigger=trigger)
        )
        task_status.started(binds[0])


@attrs.frozen
class ServedComfyUI:
    """A ComfyUI simulator on loopback."""

    url: str
    sim: ComfyUISim


async def serve_comfyui(
    sim: ComfyUISim | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    shutdown: trio.Event | None = None,
    task_status: trio.TaskStatus[ServedComfyUI] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``sim`` (a fresh one by default) and run its worker until cancelled (or until
    ``shutdown`` is set, see :func:`serve_asgi`)."""
    sim = sim or ComfyUISim()
    async with trio.open_nursery() as nursery:
        await nursery.start(sim.run)

        async def http(task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
            await serve_asgi(
                sim.asgi, host=host, port=port, shutdown=shutdown, task_status=task_status
            )
            nursery.cancel_scope.cancel()  # the server is down: stop its worker too

        url = await nursery.start(http)
        task_status.started(ServedComfyUI(url, sim))


@attrs.frozen
class ServedCloud:
    """A RunComfy account on loopback, plus a standalone ComfyUI."""

    base_url: str
    user_id: str
    token: str = attrs.field(repr=False)
    runcomfy: RunComfySim
    comfyui_url: str
    comfyui: ComfyUISim
    machines: dict[str, ComfyUISim] = attrs.field(eq=False)
    """Every machine's ComfyUI by server id (kept after the machine stops)."""


class _LoopbackMachines:
    """A :class:`~conjure_actors.sim.runcomfy.MachineHost` serving each machine on a port."""

    def __init__(
        self,
        nursery: trio.Nursery,
        *,
        host: str,
        seed: int,
        faults: ComfyFaults,
        timings: ComfyTimings,
        wall: Callable[[], float],
    ) -> None:
        self._nursery = nursery
        self._host = host
        self._seed = seed
        self._faults = faults
        self._timings = timings
        self._wall = wall
        self.machines: dict[str, ComfyUISim] = {}
        self._running: dict[str, tuple[trio.CancelScope, trio.Event, trio.Event]] = {}

    async def start_machine(self, server_id: str, workflow_version: str) -> str:
        sim = ComfyUISim(
            seed=machine_seed(self._seed, len(self.machines) + 1),
            faults=self._faults,
            timings=self._timings,
            wall=self._wall,
            name=f"server {server_id}",
            workflow_version=workflow_version,
        )
        scope = trio.CancelScope()
        shutdown = trio.Event()
        done = trio.Event()

        async def host(
            task_status: trio.TaskStatus[ServedComfyUI] = trio.TASK_STATUS_IGNORED,
        ) -> None:
            try:
                with scope:
                    await serve_comfyui(
                        sim, host=self._host, shutdown=shutdown, task_status=task_status
                    )
            finally:
                done.set()

        served: ServedComfyUI = await self._nursery.start(host)
        self.machines[server_id] = sim
        self._running[server_id] = (scope, shutdown, done)
        log.debug("server %s: its ComfyUI is served on loopback", server_id)
        return served.url

    async def stop_machine(self, server_id: str) -> None:
        running = self._running.pop(server_id, None)
        if running is None:
            return
        scope, shutdown, done = running
        # Drop the sockets from the app side, then let hypercorn close its connections
        # (cancelling it outright would leave an open WebSocket's socket unclosed).
        self.machines[server_id].restart()
        shutdown.set()
        with trio.move_on_after(_STOP_GRACE):
            await done.wait()
        scope.cancel()
        log.debug("server %s: its ComfyUI is down", server_id)


async def serve_cloud(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    comfyui_port: int = 0,
    seed: int = 0,
    faults: CloudFaults | None = None,
    timings: CloudTimings | None = None,
    wall: Callable[[], float] = time.time,
    user_id: str = "sim-user",
    token: str | None = None,
    task_status: trio.TaskStatus[ServedCloud] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve a simulated RunComfy account (and a standalone ComfyUI) until cancelled."""
    faults = faults or CloudFaults()
    timings = timings or CloudTimings()
    token = token or f"sim-token-{random.Random(seed).getrandbits(64):016x}"
    async with trio.open_nursery() as nursery:
        machines = _LoopbackMachines(
            nursery,
            host=host,
            seed=seed,
            faults=faults.comfyui,
            timings=timings.comfyui,
            wall=wall,
        )
        runcomfy = RunComfySim(
            user_id=user_id,
            tokens=[token],
            seed=seed,
            faults=faults.runcomfy,
            timings=timings.runcomfy,
            wall=wall,
            host=machines,
            any_version=False,
        )
        await nursery.start(runcomfy.run)
        base_url = await nursery.start(partial(serve_asgi, runcomfy.asgi, host=host, port=port))
        standalone = ComfyUISim(
            seed=machine_seed(seed, 0),
            faults=faults.standalone or faults.comfyui,
            timings=timings.comfyui,
            wall=wall,
            name="standalone comfyui",
        )
        served: ServedComfyUI = await nursery.start(
            partial(serve_comfyui, standalone, host=host, port=comfyui_port)
        )
        task_status.started(
            ServedCloud(
                base_url=base_url,
                user_id=user_id,
                token=token,
                runcomfy=runcomfy,
                comfyui_url=served.url,
                comfyui=standalone,
                machines=machines.machines,
            )
        )
