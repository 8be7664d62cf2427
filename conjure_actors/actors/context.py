"""What every actor of one run shares: the journal, the clocks, the clients, the config.

The :class:`Context` is built once by :func:`conjure_actors.actors.open_conjure` and lives
as long as the run, across actor restarts: an actor that crashes is re-created around the
same context, so live objects (HTTP clients, waiting lease requests) are not lost with it.

``emit`` is the only way anything changes: the journal persists the events, applies them to
``journal.state`` and publishes them, in that order (DESIGN.md, "The event-sourcing rule").
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Callable, Iterable
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from pathlib import Path
from typing import Any, Protocol, TypeVar

import attrs
import httpx
import trio

import eventlog
from conjure_actors.actors.messages import Lease, Reply
from conjure_actors.clients.comfyui import ComfyUIClient
from conjure_actors.clients.runcomfy import SecretURL, Server
from conjure_actors.clock import WallClock
from conjure_actors.config import Config
from conjure_actors.domain.cost_policy import lease_cost_micros
from conjure_actors.domain.preflight import PromptRefusal
from conjure_actors.domain.prices import PriceTable
from conjure_actors.domain.state import State
from conjure_actors.runtime.disk import DiskCommitter, disk_committer
from eventlog import Record

WsConnect = Callable[[str], AbstractAsyncContextManager[Any]]

MakeComfyUIClient = Callable[[str, SecretURL | str], ComfyUIClient]
"""``(server_id, url) -> client``: a ComfyUI client for one machine (its URL kept secret)."""

T = TypeVar("T")

Ids = Callable[[], uuid.UUID]
"""Makes a new id (launch keys, run, job, prompt and WebSocket client ids): ``uuid.uuid4`` in
production; the test harness passes a seeded one so that a run replays exactly."""


class Journal(Protocol):
    """What the actors use of an ``eventlog.Journal`` opened with the domain's ``apply``:
    append (persist -> apply -> publish), the folded state, a live feed of records, and the
    end of a full-disk hold."""

    @property
    def state(self) -> State: ...

    async def append(self, event: Any, /) -> object: ...

    async def append_many(self, events: Iterable[Any], /) -> object: ...

    def subscribe(
        self, max_buffer: float = ...
    ) -> AbstractAsyncContextManager[trio.MemoryReceiveChannel[Record[Any]]]: ...

    def listen(
        self,
        fn: Callable[[list[Record[Any]]], None],
        /,
        on_end: Callable[[Exception], None] | None = None,
    ) -> AbstractContextManager[eventlog.Listener]: ...

    def stop_holding(self) -> None:
        """End a full-disk hold (and hold no more): the runtime's shutdown must not wait
        for the disk while machines bill."""


class RunComfy(Protocol):
    """What the actors use of the RunComfy API (:class:`~conjure_actors.clients.runcomfy.
    RunComfyClient`, against the real service or the simulated one)."""

    async def list_servers(self) -> list[Server]: ...

    async def status(self, server_id: str) -> Server: ...

    async def launch(
        self, workflow_version_id: str, server_type: str, estimated_duration: int
    ) -> Server: ...

    async def extend(self, server_id: str, seconds: int) -> Server: ...

    async def stop(self, server_id: str, *, missing_ok: bool = False) -> Server | None: ...


class Leases(Protocol):
    """The machine pool as one job sees it (``PoolPort``: messages to the MachineActor)."""

    async def lease(
        self,
        job_id: str,
        version: str | None,
        priority: int,
        reply: Reply[Lease],
        only_server: str | None = None,
    ) -> None: ...

    async def queue(self, job_id: str, version: str | None, priority: int, deadline: float) -> None:
        """Put the job into the pool's queue, to wait there without its actor (issue 16)."""

    async def release(self, server_id: str, job_id: str, *, broken: bool = False) -> None: ...

    async def polled(self, server_id: str | None = None) -> None: ...

    def cancel_lease(self, job_id: str) -> None: ...

    def watch_late_prompt(self, server_id: str, prompt_id: str, job_id: str) -> None:
        """The job gave ``prompt_id`` up while its POST may still land on ``server_id``: the
        pool watches for it there and stops it if it does (a tell: never waits)."""


class PromptCheck(Protocol):
    """A check of each prompt just before its ``POST /prompt``, against the node catalogue of
    the machine it goes to (``run``/``serve`` on a RunComfy workflow version with no recorded
    catalogue: :class:`conjure_actors.commands.cloud_args.VersionCatalogue`). ``version``:
    the workflow version whose catalogue it is; a prompt going to a machine of another
    version is not checked (nor is its catalogue taken) by it."""

    version: str

    async def refusal(self, client: ComfyUIClient, prompt: dict[str, Any]) -> PromptRefusal | None:
        """None to submit the prompt; else why it must not be (its ``message`` is the line
        the job fails with)."""
        ...


@attrs.define(eq=False)
class Context:
    """Shared, long-lived objects of one run."""

    config: Config
    journal: Journal
    wall: WallClock
    table: PriceTable
    out_dir: Path
    http: httpx.AsyncClient
    ws_connect: WsConnect | None
    runcomfy: RunComfy | None  # in runcomfy and simulated mode, else None
    rng: random.Random
    inputs_dir: Path
    mode: str = "simulated"
    appended: int = 0
    ids: Ids = uuid.uuid4
    prompt_check: PromptCheck | None = None  # a prompt checked before its POST (None: not)
    disk: DiskCommitter | None = None  # writes output files (None: the trio run's shared one)
    # While it returns True, no waiting job is given a machine nor one launched for it (the
    # job service's output folder refusing writes: each would run, paid, to fail at the save).
    hold_jobs: Callable[[], bool] | None = None
    _graphs: dict[str, dict[str, Any]] = attrs.field(factory=dict, init=False, repr=False)
    _derived: dict[tuple[str, str], Any] = attrs.field(factory=dict, init=False, repr=False)

    @property
    def state(self) -> State:
        return self.journal.state

    def graph(self, sha256: str) -> dict[str, Any]:
        """The graph of a registered workflow, parsed from the log once per run and shared
        by every job of it: read it, never change it (``apply_bindings`` copies)."""
        graph = self._graphs.get(sha256)
        if graph is None:
            graph = json.loads(self.state.workflows[sha256].graph_json)
            self._graphs[sha256] = graph
        return graph

    def derived(self, sha256: str, what: str, compute: Callable[[dict[str, Any]], T]) -> T:
        """``compute(graph)`` of a registered workflow, computed once per run and shared by
        every job of it (its roles, its SaveImageWebsocket nodes...): a pure function of the
        graph, named ``what``; read the result, never change it."""
        key = (sha256, what)
        try:
            value: T = self._derived[key]
        except KeyError:
            value = self._derived[key] = compute(self.graph(sha256))
        return value

    def now(self) -> float:
        return self.wall.now()

    def lease_micros(self, server_type: str | None = None) -> int:
        """What one lease (``pool.lease_seconds``) of ``server_type`` (default the
        configured one) commits to, at the price table's rate: the budget's unit for a
        launch (``PriceTableError`` for a type the table does not price)."""
        rate = self.table.rate(server_type or self.config.runcomfy.server_type)
        return lease_cost_micros(rate, self.config.pool.lease_seconds)

    def committer(self) -> DiskCommitter:
        """The group committer of the run's durable file writes (a job's outputs): one per
        process (the trio run's, :func:`~conjure_actors.runtime.disk.disk_committer`),
        shared by every job, unless ``disk`` names another."""
        return self.disk if self.disk is not None else disk_committer()

    def require_runcomfy(self) -> RunComfy:
        """The RunComfy client, for code that runs only in runcomfy or simulated mode."""
        if self.runcomfy is None:
            raise RuntimeError(f"no RunComfy client in {self.mode} mode")
        return self.runcomfy

    async def emit(self, *events: Any) -> None:
        """Journal events (persist -> apply -> publish); returns once they are durable."""
        if not events:
            return
        if len(events) == 1:
            await self.journal.append(events[0])
        else:
            await self.journal.append_many(list(events))
        self.appended += len(events)
