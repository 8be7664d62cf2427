"""The simulated cloud: one RunComfy account whose machines each run their own ComfyUI.

:class:`SimulatedCloud` is the single object the actors, ``run`` and the property harness
use. Everything is in memory: HTTP goes through :meth:`SimulatedCloud.http_transport` (an
httpx transport that routes by host name to the RunComfy API or to a machine's ComfyUI, each
an ASGI app called in-process), WebSockets through :meth:`SimulatedCloud.ws_connect` (a
trio-websocket connection over memory streams to that machine's ComfyUI). Nothing touches a
socket, so a whole cloud runs under ``trio.testing.MockClock``: an hour of machine time passes
in milliseconds.

Host names (the ``.invalid`` TLD can never resolve, so nothing leaks to a real network):

- ``https://api.runcomfy.sim.invalid``: the RunComfy API (``base_url``);
- ``https://<server_id>-comfyui.sim.invalid``: each Ready machine's ``main_service_url``;
  it stops answering (``httpx.ConnectError`` / ``ConnectionRefusedError``) once the machine
  is stopped, expires or vanishes;
- ``http://comfyui.sim.invalid``: a standalone ComfyUI not behind RunComfy.

For the same apps over loopback sockets see :mod:`conjure_actors.sim.serve`.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Final
from urllib.parse import urlsplit

import attrs
import httpx
import trio
import trio_websocket

from conjure_actors.clock import TrioWallClock
from conjure_actors.sim.comfyui import ComfyFaults, ComfyTimings, ComfyUISim
from conjure_actors.sim.runcomfy import (
    BillingRecord,
    RunComfyFaults,
    RunComfySim,
    RunComfyTimings,
)

__all__ = [
    "API_HOST",
    "STANDALONE_HOST",
    "CloudFaults",
    "CloudTimings",
    "SimulatedCloud",
    "machine_seed",
    "open_simulated_cloud",
]

API_HOST: Final = "api.runcomfy.sim.invalid"
STANDALONE_HOST: Final = "comfyui.sim.invalid"
_MACHINE_SUFFIX: Final = "-comfyui.sim.invalid"


@attrs.frozen
class CloudFaults:
    """Fault knobs of the RunComfy API and of every machine's ComfyUI (and the standalone's)."""

    runcomfy: RunComfyFaults = attrs.field(factory=RunComfyFaults)
    comfyui: ComfyFaults = attrs.field(factory=ComfyFaults)
    standalone: ComfyFaults | None = None
    """Faults of the standalone ComfyUI; ``None``: the same as ``comfyui``."""


@attrs.frozen
class CloudTimings:
    """How long RunComfy (launch, readiness) and ComfyUI (nodes) take."""

    runcomfy: RunComfyTimings = attrs.field(factory=RunComfyTimings)
    comfyui: ComfyTimings = attrs.field(factory=ComfyTimings)


def machine_seed(seed: int, ordinal: int) -> int:
    """The seed of the ``ordinal``-th machine's ComfyUI (0 is the standalone one)."""
    return seed * 1_000_003 + ordinal


@attrs.define(eq=False)
class _Machine:
    sim: ComfyUISim
    scope: trio.CancelScope
    transport: httpx.ASGITransport


class _HostRouter(httpx.AsyncBaseTransport):
    """An httpx transport that hands each request to the ASGI app serving its host."""

    def __init__(self, cloud: SimulatedCloud) -> None:
        self._cloud = cloud

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        transport = self._cloud._transport_for(request.url.host)
        if transport is None:
            # Never name the host: a machine's host name is a capability.
            raise httpx.ConnectError(
                "simulated host is not reachable (machine stopped, or unknown host)",
                request=request,
            )
        return await transport.handle_async_request(request)


class SimulatedCloud:
    """A RunComfy account and its machines, in memory. Make it with :func:`open_simulated_cloud`."""

    def __init__(
        self,
        nursery: trio.Nursery,
        *,
        seed: int = 0,
        faults: CloudFaults | None = None,
        timings: CloudTimings | None = None,
        wall: Callable[[], float],
        user_id: str = "sim-user",
        token: str | None = None,
    ) -> None:
        self._nursery = nursery
        self.seed = seed
        self.faults = faults or CloudFaults()
        self.timings = timings or CloudTimings()
        self.wall = wall
        self.user_id = user_id
        self.token = token or f"sim-token-{random.Random(seed).getrandbits(64):016x}"
        self.base_url = f"https://{API_HOST}"
        comfy = self.timings.comfyui
        #: How much faster than a real GPU machine its ComfyUI nodes run (inf: instant).
        self.speedup = comfy.speedup / comfy.scale if comfy.scale > 0 else float("inf")
        self.runcomfy = RunComfySim(
            user_id=user_id,
            tokens=[self.token],
            seed=seed,
            faults=self.faults.runcomfy,
            timings=self.timings.runcomfy,
            wall=wall,
            host=self,
            any_version=False,
        )
        self._api = httpx.ASGITransport(app=self.runcomfy.asgi)
        self._standalone = ComfyUISim(
            seed=machine_seed(seed, 0),
            faults=self.faults.standalone or self.faults.comfyui,
            timings=self.timings.comfyui,
            wall=wall,
            name="standalone comfyui",
        )
        self._standalone_transport = httpx.ASGITransport(app=self._standalone.asgi)
        self._live: dict[str, _Machine] = {}
        self._all: dict[str, ComfyUISim] = {}

    def __repr__(self) -> str:
        return f"SimulatedCloud(user_id={self.user_id!r}, token=<redacted>, seed={self.seed})"

    async def _start(self) -> None:
        await self._nursery.start(self.runcomfy.run)
        await self._nursery.start(self._standalone.run)

    # ------------------------------------------------------------------ public API

    def http_transport(self) -> httpx.AsyncBaseTransport:
        """An httpx transport reaching the RunComfy API, every live machine and the standalone."""
        return _HostRouter(self)

    def ws_connect(
        self, url: str
    ) -> AbstractAsyncContextManager[trio_websocket.WebSocketConnection]:
        """``ws_connect`` for the ComfyUI client: an in-memory WebSocket to ``url``'s host."""
        return self._ws_connect(url)

    @contextlib.asynccontextmanager
    async def _ws_connect(self, url: str) -> AsyncIterator[trio_websocket.WebSocketConnection]:
        sim = self._sim_for(urlsplit(url).hostname)
        if sim is None:
            raise ConnectionRefusedError(
                "simulated host is not reachable (machine stopped, or unknown host)"
            )
        async with sim.open_ws_in_memory(url) as conn:
            yield conn

    def standalone_comfyui(self) -> tuple[str, ComfyUISim]:
        """A ComfyUI not behind RunComfy: its base URL and its simulator."""
        return f"http://{STANDALONE_HOST}", self._standalone

    def billing(self) -> list[BillingRecord]:
        """Every machine's bill (see :meth:`RunComfySim.billing`)."""
        return self.runcomfy.billing()

    def running(self) -> list[str]:
        """Server ids of machines not stopped yet."""
        return self.runcomfy.running()

    def machine_sim(self, server_id: str) -> ComfyUISim:
        """The ComfyUI of a machine that became Ready (still inspectable after it stopped)."""
        try:
            return self._all[server_id]
        except KeyError:
            raise KeyError(f"server {server_id} never had a ComfyUI (not Ready yet?)") from None

    def live_machines(self) -> dict[str, ComfyUISim]:
        """The ComfyUIs of machines that are Ready now, by server id."""
        return {server_id: m.sim for server_id, m in self._live.items()}

    def set_faults(self, faults: CloudFaults) -> None:
        """Swap every fault knob: the RunComfy API's, the live machines', the standalone's,
        and those of machines that become Ready from now on."""
        self.faults = faults
        self.runcomfy.faults = faults.runcomfy
        for machine in self._live.values():
            machine.sim.faults = faults.comfyui
        self._standalone.faults = faults.standalone or faults.comfyui

    def http_client(self, **kwargs: object) -> httpx.AsyncClient:
        """An ``httpx.AsyncClient`` on :meth:`http_transport` (``kwargs`` go to httpx)."""
        return httpx.AsyncClient(transport=self.http_transport(), **kwargs)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ MachineHost

    async def start_machine(self, server_id: str, workflow_version: str) -> str:
        """Boot the machine's own ComfyUI (with its version's nodes) in the cloud's nursery;
        return its URL."""
        sim = ComfyUISim(
            seed=machine_seed(self.seed, len(self._all) + 1),
            faults=self.faults.comfyui,
            timings=self.timings.comfyui,
            wall=self.wall,
            name=f"server {server_id}",
            workflow_version=workflow_version,
        )
        scope = trio.CancelScope()

        async def host(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            with scope:
                await sim.run(task_status=task_status)

        await self._nursery.start(host)
        self._live[server_id] = _Machine(sim, scope, httpx.ASGITransport(app=sim.asgi))
        self._all[server_id] = sim
        return f"https://{server_id}{_MACHINE_SUFFIX}"

    async def stop_machine(self, server_id: str) -> None:
        """The machine is gone: its sockets drop, its worker stops, its host stops answering."""
        machine = self._live.pop(server_id, None)
        if machine is None:
            return
        machine.sim.restart()  # drops every WebSocket and the running prompt
        machine.scope.cancel()

    # ------------------------------------------------------------------ routing

    def _sim_for(self, host: str | None) -> ComfyUISim | None:
        if host == STANDALONE_HOST:
            return self._standalone
        if host and host.endswith(_MACHINE_SUFFIX):
            machine = self._live.get(host[: -len(_MACHINE_SUFFIX)])
            return None if machine is None else machine.sim
        return None

    def _transport_for(self, host: str) -> httpx.ASGITransport | None:
        if host == API_HOST:
            return self._api
        if host == STANDALONE_HOST:
            return self._standalone_transport
        if host.endswith(_MACHINE_SUFFIX):
            machine = self._live.get(host[: -len(_MACHINE_SUFFIX)])
            return None if machine is None else machine.transport
        return None


@contextlib.asynccontextmanager
async def open_simulated_cloud(
    *,
    seed: int = 0,
    faults: CloudFaults | None = None,
    timings: CloudTimings | None = None,
    wall: Callable[[], float] | None = None,
    user_id: str = "sim-user",
    token: str | None = None,
) -> AsyncIterator[SimulatedCloud]:
    """A running :class:`SimulatedCloud`; everything stops when the block exits.

    ``wall`` defaults to a :class:`~conjure_actors.clock.TrioWallClock` so wall times follow
    ``MockClock``; pass the runtime's own wall clock to share the same timeline.
    """
    async with trio.open_nursery() as nursery:
        cloud = SimulatedCloud(
            nursery,
            seed=seed,
            faults=faults,
            timings=timings,
            wall=wall or TrioWallClock().now,
            user_id=user_id,
            token=token,
        )
        await cloud._start()
        try:
            yield cloud
        finally:
            nursery.cancel_scope.cancel()
