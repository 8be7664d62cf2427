"""Fixtures for the actor tests: a runtime (open_conjure) over a MemoryLog journal against the
in-memory simulated cloud, all under MockClock."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import trio

import eventlog
from conjure_actors.actors.conjure import Conjure, open_conjure
from conjure_actors.clock import TrioWallClock
from conjure_actors.config import Config, PoolConfig, RetryConfig, RunComfyConfig, Secret
from conjure_actors.domain.events import Event
from conjure_actors.domain.state import apply, initial_state


def sim_config(cloud: Any, **pool: Any) -> Config:
    """A config aimed at ``cloud`` with test-friendly pool settings."""
    retry = pool.pop("retry", RetryConfig(initial=1.0, max_delay=5.0))
    budget = pool.pop("budget", None)
    base = Config(
        runcomfy=RunComfyConfig(
            user_id=cloud.user_id,
            api_token=Secret(cloud.token),
            base_url=cloud.base_url,
            workflow_version="wv-conjure-flux-mesh-1",
        ),
        pool=PoolConfig(**{"poll_interval": 2.0, "idle_timeout": 60.0, **pool}),
        retry=retry,
    )
    if budget is not None:
        base = attrs.evolve(base, budget=attrs.evolve(base.budget, usd=budget))
    return base


@asynccontextmanager
async def run_conjure(
    cloud: Any,
    log: eventlog.MemoryLog[Any],
    out_dir: Path,
    config: Config,
    wall: TrioWallClock,
    **kwargs: Any,
) -> AsyncIterator[Conjure]:
    """open_conjure over a journal on ``log`` (which may already hold a crashed run)."""
    async with (
        eventlog.open_journal(
            log, Event, apply=apply, initial=initial_state(), clock=wall.now
        ) as journal,
        open_conjure(
            config,
            journal=journal,
            http=cloud.http_transport(),
            ws_connect=cloud.ws_connect,
            wall=wall,
            out_dir=out_dir,
            seed=1,
            **kwargs,
        ) as conjure,
    ):
        yield conjure


OpenCloud = Callable[..., Any]


async def wait_for(conjure: Conjure, predicate: Callable[[Any], bool]) -> None:
    """Wait until ``predicate(conjure.state)`` holds (checked after every record)."""
    async with conjure.journal.subscribe(max_buffer=float("inf")) as records:
        while not predicate(conjure.state):
            await records.receive()


async def crash_when(
    cloud: Any,
    log: eventlog.MemoryLog[Any],
    out_dir: Path,
    config: Config,
    wall: TrioWallClock,
    body: Callable[[Conjure], Any],
) -> None:
    """Run ``body(conjure)``; when it returns, crash: drop what is not durable, then tear
    the runtime down (the journal stays open around it, failing every later append, as a
    dead process would write nothing more)."""
    async with eventlog.open_journal(
        log, Event, apply=apply, initial=initial_state(), clock=wall.now
    ) as journal:
        with trio.CancelScope() as scope:
            try:
                async with open_conjure(
                    config,
                    journal=journal,
                    http=cloud.http_transport(),
                    ws_connect=cloud.ws_connect,
                    wall=wall,
                    out_dir=out_dir,
                    seed=1,
                ) as conjure:
                    await body(conjure)
                    log.crash()
                    scope.cancel()
            except (eventlog.EventLogError, BaseExceptionGroup):
                pass


@attrs.define(eq=False)
class _StandInCloud:
    """The simulated cloud (RunComfy + one ComfyUI per machine, in memory) until
    ``conjure_actors.sim.cloud`` lands; same surface as its ``SimulatedCloud``."""

    runcomfy: Any
    nursery: trio.Nursery
    wall: Any
    timings: Any = None
    faults: Any = None
    user_id: str = "sim-user"
    token: str = "sim-token"
    base_url: str = "http://runcomfy.sim.invalid"
    machines: dict[str, Any] = attrs.Factory(dict)
    scopes: dict[str, trio.CancelScope] = attrs.Factory(dict)

    async def start_machine(self, server_id: str) -> str:
        from conjure_actors.sim.comfyui import ComfyUISim

        sim = ComfyUISim(
            seed=len(self.machines),
            wall=self.wall,
            timings=self.timings,
            faults=self.faults,
            name=server_id,
        )
        scope = trio.CancelScope()

        async def serve(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
            with scope:
                await sim.run(task_status=task_status)

        await self.nursery.start(serve)
        self.machines[server_id] = sim
        self.scopes[server_id] = scope
        return f"http://{server_id}-comfyui.sim.invalid"

    async def stop_machine(self, server_id: str) -> None:
        scope = self.scopes.pop(server_id, None)
        if scope is not None:
            scope.cancel()

    def machine_sim(self, server_id: str) -> Any:
        return self.machines[server_id]

    def _sim_for(self, host: str) -> Any:
        if host.endswith("-comfyui.sim.invalid"):
            sid = host[: -len("-comfyui.sim.invalid")]
            if sid in self.scopes:
                return self.machines[sid]
        return None

    async def asgi(self, scope: Any, receive: Any, send: Any) -> None:
        host = ""
        for key, value in scope.get("headers", []):
            if key == b"host":
                host = value.decode().split(":")[0]
        if host == "runcomfy.sim.invalid":
            await self.runcomfy.asgi(scope, receive, send)
            return
        sim = self._sim_for(host)
        if sim is None:
            import httpx

            raise httpx.ConnectError(f"no route to {host}")
        await sim.asgi(scope, receive, send)

    def http_transport(self) -> Any:
        import httpx

        return httpx.ASGITransport(app=self.asgi)

    def ws_connect(self, url: str) -> Any:
        from urllib.parse import urlsplit

        host = urlsplit(url).hostname or ""
        sim = self._sim_for(host)
        if sim is None:
            raise OSError(f"no route to {host}")
        return sim.open_ws_in_memory(url)

    def billing(self) -> list[Any]:
        return list(self.runcomfy.billing())

    def running(self) -> list[str]:
        return list(self.runcomfy.running())


@asynccontextmanager
async def open_test_cloud(
    wall: Any,
    *,
    ready_delay: float = 60.0,
    rc_faults: Any = None,
    comfy_faults: Any = None,
    timings: Any = None,
) -> AsyncIterator[Any]:
    """The simulated cloud for actor tests (in memory)."""
    from conjure_actors.sim.runcomfy import RunComfySim, RunComfyTimings

    async with trio.open_nursery() as nursery:
        cloud = _StandInCloud(
            runcomfy=None, nursery=nursery, wall=wall, timings=timings, faults=comfy_faults
        )
        cloud.runcomfy = RunComfySim(
            wall=wall,
            faults=rc_faults,
            host=cloud,
            timings=RunComfyTimings(ready_delay=ready_delay),
        )
        await nursery.start(cloud.runcomfy.run)
        yield cloud
        nursery.cancel_scope.cancel()
