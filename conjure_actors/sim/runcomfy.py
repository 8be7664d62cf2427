"""A RunComfy Server API simulator: an ASGI app plus the machines' lifecycles.

It speaks the routes of ``shared/protocols/runcomfy.md`` under
``/prod/api/users/{user_id}``: list workflows, list servers (a bare JSON list), status,
launch, ``update-estimated-duration``, stop (``DELETE``). A launched machine is
``Starting`` at once and ``Ready`` after ``RunComfyTimings.ready_delay``; at that moment a
:class:`MachineHost` starts the machine's own ComfyUI and the sim publishes its
``main_service_url``. The *lease*: ``estimated_stopping_at = service_ready_at +
estimated_duration``; when it runs out the machine stops by itself.

Billing is recorded per machine from ``service_ready_at`` to the stop (``DELETE``, lease
expiry or a vanishing machine) with the same rule the runtime's ledger uses, restated here
so the simulator never imports the domain::

    billed_seconds = max(0, ceil(stopped_at - service_ready_at))
    cost_micros    = (rate_micros_per_hour * billed_seconds + 1800) // 3600

Published times (``service_ready_at``, ``estimated_stopping_at``) are whole microseconds,
ISO-8601 UTC on the wire, so a client that parses them gets back exactly the floats the sim
bills from. A stop time is never published: a ``DELETE`` stops billing at the sim's raw
``wall()`` reading, the same value a client reading the same clock when the call returns
gets; a lease expiry stops it at the published ``estimated_stopping_at``.

Every answer carries a ``Date`` header (RFC 9110, whole seconds) on the sim's clock, as
RunComfy's do. That clock is ``wall`` shifted by ``RunComfyTimings.clock_offset``: an offset
plays a host whose clock disagrees with RunComfy's (its ``Date``, its published times and its
billing records are all on the shifted clock, :attr:`RunComfySim.wall`).

Every wait is a ``trio.sleep`` and every wall time comes from the injectable ``wall``
callable, so the whole cloud runs under ``trio.testing.MockClock`` (pass a wall clock that
follows trio's clock, e.g. ``conjure_actors.clock.TrioWallClock().now``). The ~1 request/s
account limit is a token bucket on ``trio.current_time()``.

Fault knobs (:class:`RunComfyFaults`) are drawn from one ``random.Random(seed)``.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import hmac
import logging
import math
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from typing import Any, Final, Protocol

import attrs
import msgspec
import trio

__all__ = [
    "HOBBY_PRICES_MICROS",
    "PRICE_TABLE_VERSION",
    "PRO_PRICES_MICROS",
    "BillingRecord",
    "MachineHost",
    "RunComfyFaults",
    "RunComfySim",
    "RunComfyTimings",
    "SimWorkflow",
    "billed_seconds",
    "cost_micros",
    "format_iso",
]

PRICE_TABLE_VERSION: Final = "runcomfy-2025-10"

#: Hourly on-demand prices in integer micro-USD (RunComfy Hobby plan). The strings of
#: X-Large Plus and 3X-Large are guesses (undocumented), as in the runtime's price table.
HOBBY_PRICES_MICROS: Final[Mapping[str, int]] = {
    "medium": 990_000,
    "large": 1_750_000,
    "extra-large": 2_500_000,
    "extra-large-plus": 2_990_000,
    "2x-large": 4_990_000,
    "2xl-turbo": 7_490_000,
    "3x-large": 8_750_000,
}

#: Hourly on-demand prices in integer micro-USD (RunComfy Pro plan).
PRO_PRICES_MICROS: Final[Mapping[str, int]] = {
    "medium": 790_000,
    "large": 1_390_000,
    "extra-large": 1_990_000,
    "extra-large-plus": 2_150_000,
    "2x-large": 3_990_000,
    "2xl-turbo": 5_990_000,
    "3x-large": 6_990_000,
}

STARTING: Final = "Starting"
READY: Final = "Ready"
DELETING: Final = "Deleting"
ERROR: Final = "Error"

API_PREFIX: Final = "/prod/api/users/"
_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_US: Final = 1_000_000

log = logging.getLogger("conjure_actors.sim.runcomfy")


def billed_seconds(service_ready_at: float | None, stopped_at: float) -> int:
    """Whole seconds billed from ready to stop, rounded up; 0 for a machine never ready."""
    if service_ready_at is None:
        return 0
    return max(0, math.ceil(stopped_at - service_ready_at))


def cost_micros(rate_micros_per_hour: int, seconds: int) -> int:
    """Cost in micro-USD of ``seconds`` at an hourly rate, rounded half up."""
    return (rate_micros_per_hour * seconds + 1800) // 3600


def _to_us(t: float) -> int:
    return round(t * _US)


def _from_us(us: int) -> float:
    return us / _US


def _shifted(wall: Callable[[], float], offset: float) -> Callable[[], float]:
    if not offset:
        return wall
    return lambda: wall() + offset


def format_iso(us: int) -> str:
    """ISO-8601 UTC with microseconds and a ``Z``: ``2026-11-23T09:00:00.000000Z``."""
    when = _EPOCH + dt.timedelta(microseconds=us)
    return when.isoformat(timespec="microseconds").replace("+00:00", "Z")


@attrs.frozen
class RunComfyTimings:
    """How long the simulated cloud takes (seconds of trio time)."""

    ready_delay: float = 3.0
    """Launch to ``Ready`` (RunComfy really takes 1-3 minutes)."""
    deleting_delay: float = 2.0
    """How long a stopped machine stays listed as ``Deleting`` before it is gone (404)."""
    rate_per_second: float = 1.0
    """The account's request rate limit."""
    burst: int = 3
    """Requests the account may send at once before the rate applies."""
    clock_offset: float = 0.0
    """Seconds RunComfy's clock runs ahead of the host's (``wall``): negative, behind.
    Its ``Date`` headers, published times and billing records all follow it."""

    @classmethod
    def realistic(cls) -> RunComfyTimings:
        """Readiness as slow as the real service (for long MockClock runs)."""
        return cls(ready_delay=120.0, deleting_delay=10.0)


@attrs.frozen
class RunComfyFaults:
    """Fault knobs; each probability is drawn from the sim's seeded generator.

    Per request: ``rate_limit_burst_probability`` starts a run of ``rate_limit_burst_length``
    429s (with ``Retry-After: retry_after``); ``server_error_rate`` answers 5xx without acting.
    Per launch (decided when the machine is created): ``launch_reject_rate`` answers 500 and
    launches nothing; ``launch_ghost_rate`` launches but answers 502 (the client cannot tell
    the two apart: it must reconcile by listing servers); ``launch_error_rate`` ends in
    ``current_status: "Error"`` instead of Ready; ``stuck_starting_rate`` never leaves
    ``Starting``; ``slow_ready_rate`` multiplies the ready delay by ``slow_ready_factor``;
    ``vanish_rate`` makes a Ready machine disappear (404, its ComfyUI gone, billing stopped)
    ``vanish_after`` seconds after it became Ready; ``unknown_status_rate`` makes a starting
    machine report ``unknown_status`` instead of ``Starting``. ``not_found_polls_after_launch``
    answers the first N status polls of every new machine with 404.
    """

    rate_limit_burst_probability: float = 0.0
    rate_limit_burst_length: int = 3
    retry_after: float = 2.0
    server_error_rate: float = 0.0
    launch_reject_rate: float = 0.0
    launch_ghost_rate: float = 0.0
    launch_error_rate: float = 0.0
    stuck_starting_rate: float = 0.0
    slow_ready_rate: float = 0.0
    slow_ready_factor: float = 10.0
    vanish_rate: float = 0.0
    vanish_after: float = 30.0
    unknown_status_rate: float = 0.0
    unknown_status: str = "Provisioning"
    not_found_polls_after_launch: int = 0


@attrs.frozen
class SimWorkflow:
    """One entry of ``GET /workflows``."""

    workflow_id: str
    workflow_name: str
    version_id: str
    created_at: str = "2026-01-05T10:00:00.000000Z"
    updated_at: str = "2026-01-05T10:00:00.000000Z"


DEFAULT_WORKFLOWS: Final = (
    SimWorkflow("wf-conjure-flux-mesh", "CONJURE FLUX depth + mesh", "wv-conjure-flux-mesh-1"),
    SimWorkflow("wf-core-nodes", "Model-free core nodes", "wv-core-nodes-1"),
)


@attrs.frozen
class BillingRecord:
    """What one machine cost, from ``service_ready_at`` to its stop.

    ``reason``: ``running`` (not stopped yet: billed up to now), ``stopped`` (``DELETE``),
    ``lease_expired`` (``estimated_stopping_at`` passed), ``vanished`` (the fault),
    ``never_ready`` (stopped before Ready, or failed: always 0).
    """

    server_id: str
    server_type: str
    workflow_version_id: str
    rate_micros_per_hour: int
    launched_at: float
    service_ready_at: float | None
    stopped_at: float | None
    billed_seconds: int
    cost_micros: int
    reason: str


class MachineHost(Protocol):
    """Starts and stops the ComfyUI behind each machine (the cloud implements this)."""

    async def start_machine(self, server_id: str, workflow_version: str) -> str:
        """Start the machine's ComfyUI (the image of ``workflow_version``); return its
        ``main_service_url``."""
        ...

    async def stop_machine(self, server_id: str) -> None:
        """Stop the machine's ComfyUI (its URL stops answering)."""
        ...


class _NoComfyUI:
    """A :class:`MachineHost` with no ComfyUI behind the URLs (RunComfy-only tests)."""

    async def start_machine(self, server_id: str, workflow_version: str) -> str:
        return f"https://{server_id}-comfyui.sim.invalid"

    async def stop_machine(self, server_id: str) -> None:
        return None


@attrs.define(eq=False)
class _Machine:
    server_id: str
    server_type: str
    workflow_version_id: str
    estimated_duration: int
    rate: int
    launched_at: float
    status: str = STARTING
    ready_us: int | None = None
    stopping_us: int | None = None
    stopped_at: float | None = None
    reason: str = "running"
    url: str | None = None
    gone: bool = False
    # fates drawn at launch
    stuck: bool = False
    error: bool = False
    slow: bool = False
    vanish: bool = False
    unknown: bool = False
    hidden_polls: int = 0
    changed: trio.Event = attrs.field(factory=trio.Event)

    def wake(self) -> None:
        self.changed.set()
        self.changed = trio.Event()


@attrs.frozen
class SimStatistics:
    """Request counters of a :class:`RunComfySim`."""

    requests: int
    rate_limited: int
    server_errors: int
    unauthorized: int
    launched: int


class _Reply(Exception):
    """Raised inside a handler to answer at once with ``status`` and a JSON body."""

    def __init__(self, status: int, body: Any, headers: Iterable[tuple[bytes, bytes]] = ()):
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = list(headers)


def _error(status: int, code: str, message: str) -> _Reply:
    return _Reply(status, {"error": code, "message": message})


Scope = Mapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class RunComfySim:
    """The RunComfy API for one account, with its machines and their bills.

    Start :meth:`run` in a nursery (it hosts readiness timers and leases), then serve
    :meth:`asgi` in memory (``httpx.ASGITransport``) or over loopback (hypercorn).
    """

    def __init__(
        self,
        *,
        user_id: str = "sim-user",
        tokens: Iterable[str] = ("sim-token",),
        seed: int = 0,
        faults: RunComfyFaults | None = None,
        timings: RunComfyTimings | None = None,
        wall: Callable[[], float] = time.time,
        prices: Mapping[str, int] | None = None,
        workflows: Iterable[SimWorkflow] = DEFAULT_WORKFLOWS,
        host: MachineHost | None = None,
        any_version: bool = True,
    ) -> None:
        self.user_id = user_id
        self._tokens = tuple(tokens)
        if not self._tokens:
            raise ValueError("RunComfySim needs at least one accepted API token")
        self.faults = faults or RunComfyFaults()
        self.timings = timings or RunComfyTimings()
        #: The sim's (RunComfy's) clock: ``wall`` shifted by ``timings.clock_offset``.
        self.wall = _shifted(wall, self.timings.clock_offset)
        self.prices: Mapping[str, int] = dict(prices or HOBBY_PRICES_MICROS)
        self.workflows = tuple(workflows)
        # False: a launch of a workflow version not in ``workflows`` is refused, as RunComfy
        # refuses it (``python -m conjure_actors sim`` and the embedded cloud); True lets a
        # unit test launch any version without listing it.
        self.any_version = any_version
        self.host: MachineHost = host or _NoComfyUI()
        self._rng = random.Random(seed)
        self._machines: dict[str, _Machine] = {}  # every machine ever launched, launch order
        self._nursery: trio.Nursery | None = None
        # the account's rate limit (server side: refuses instead of waiting)
        self._bucket_tokens = float(self.timings.burst)
        self._bucket_last: float | None = None
        self._burst_left = 0
        self._requests = 0
        self._rate_limited = 0
        self._server_errors = 0
        self._unauthorized = 0

    # ------------------------------------------------------------------ harness API

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Host the machines' lifecycles until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                self._nursery = None

    def billing(self) -> list[BillingRecord]:
        """One record per machine ever launched (running ones billed up to now)."""
        now = self.wall()
        return [self._record(m, now) for m in self._machines.values()]

    def running(self) -> list[str]:
        """Server ids of machines not stopped yet (Starting, Ready, Error, ...)."""
        return [m.server_id for m in self._machines.values() if m.stopped_at is None]

    def total_cost_micros(self) -> int:
        """Sum of every machine's cost so far."""
        return sum(r.cost_micros for r in self.billing())

    def statistics(self) -> SimStatistics:
        """Request counters (429s, 5xx, 401s) and machines launched."""
        return SimStatistics(
            requests=self._requests,
            rate_limited=self._rate_limited,
            server_errors=self._server_errors,
            unauthorized=self._unauthorized,
            launched=len(self._machines),
        )

    def inject_rate_limit_burst(self, length: int) -> None:
        """Answer the next ``length`` requests with 429 (``Retry-After: faults.retry_after``)."""
        self._burst_left = max(self._burst_left, length)

    def vanish(self, server_id: str) -> bool:
        """Make a machine disappear now (the ``vanish_rate`` fate on demand): billing stops
        now, the API answers 404, its ComfyUI is torn down. False if already stopped/unknown."""
        m = self._machines.get(server_id)
        if m is None or m.stopped_at is not None:
            return False
        self._stop(m, self.wall(), "vanished")
        return True

    def status_of(self, server_id: str) -> str | None:
        """The true status of a machine (``None`` once gone), bypassing faults."""
        m = self._machines.get(server_id)
        return None if m is None or m.gone else m.status

    def _record(self, m: _Machine, now: float) -> BillingRecord:
        ready = None if m.ready_us is None else _from_us(m.ready_us)
        end = m.stopped_at if m.stopped_at is not None else now
        seconds = billed_seconds(ready, end)
        return BillingRecord(
            server_id=m.server_id,
            server_type=m.server_type,
            workflow_version_id=m.workflow_version_id,
            rate_micros_per_hour=m.rate,
            launched_at=m.launched_at,
            service_ready_at=ready,
            stopped_at=m.stopped_at,
            billed_seconds=seconds,
            cost_micros=cost_micros(m.rate, seconds),
            reason=m.reason,
        )

    # ------------------------------------------------------------------ lifecycles

    def _now_us(self) -> int:
        return _to_us(self.wall())

    def _spawn(self, fn: Callable[[_Machine], Awaitable[None]], m: _Machine) -> None:
        if self._nursery is None:
            raise RuntimeError("RunComfySim.run() is not running: start it in a nursery first")
        self._nursery.start_soon(fn, m)

    async def _lifecycle(self, m: _Machine) -> None:
        delay = self.timings.ready_delay * (self.faults.slow_ready_factor if m.slow else 1.0)
        with trio.move_on_after(delay):
            while m.stopped_at is None:
                await m.changed.wait()
        if m.stopped_at is not None:
            return
        if m.stuck:
            return  # stays Starting until someone stops it
        if m.error:
            m.status = ERROR
            log.info("server %s failed to start (status Error)", m.server_id)
            return
        url = await self.host.start_machine(m.server_id, m.workflow_version_id)
        if m.stopped_at is not None:  # stopped while its ComfyUI was booting
            await self.host.stop_machine(m.server_id)
            return
        now = self._now_us()
        m.url = url
        m.status = READY
        m.ready_us = now
        m.stopping_us = now + m.estimated_duration * _US
        log.info("server %s is Ready (lease %d s)", m.server_id, m.estimated_duration)
        vanish_us = now + _to_us(self.faults.vanish_after) if m.vanish else None
        # The lease: sleep until the earliest deadline, waking up whenever the machine
        # changes (an extension moves the deadline, a DELETE ends the lifecycle).
        while m.stopped_at is None:
            assert m.stopping_us is not None
            deadline = m.stopping_us if vanish_us is None else min(m.stopping_us, vanish_us)
            remaining = _from_us(deadline - self._now_us())
            if remaining <= 0:
                if vanish_us is not None and deadline == vanish_us:
                    self._stop(m, self.wall(), "vanished")
                else:
                    self._stop(m, _from_us(m.stopping_us), "lease_expired")
                break
            with trio.move_on_after(remaining):
                await m.changed.wait()

    def _stop(self, m: _Machine, at: float, reason: str) -> None:
        """Stop billing at ``at_us`` and tear the machine down in the background."""
        if m.stopped_at is not None:
            return
        m.stopped_at = at
        m.reason = reason if m.ready_us is not None else "never_ready"
        record = self._record(m, at)
        log.info(
            "server %s stopped (%s): %d s billed, %d micro-USD",
            m.server_id,
            m.reason,
            record.billed_seconds,
            record.cost_micros,
        )
        if reason == "vanished":
            m.gone = True
        else:
            m.status = DELETING
        m.wake()
        self._spawn(self._teardown, m)

    async def _teardown(self, m: _Machine) -> None:
        if m.url is not None:
            await self.host.stop_machine(m.server_id)
        if not m.gone:
            await trio.sleep(self.timings.deleting_delay)
            m.gone = True

    # ------------------------------------------------------------------ HTTP

    async def asgi(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI 3 entry point (``http`` and ``lifespan`` scopes)."""
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        try:
            status, payload, headers = self._handle(scope, body)
        except _Reply as reply:
            status, payload, headers = reply.status, reply.body, reply.headers
        data = msgspec.json.encode(payload)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(data)).encode()),
                    (b"date", email.utils.formatdate(self.wall(), usegmt=True).encode()),
                    *headers,
                ],
            }
        )
        await send({"type": "http.response.body", "body": data})

    def _handle(self, scope: Scope, body: bytes) -> tuple[int, Any, list[tuple[bytes, bytes]]]:
        self._requests += 1
        method: str = scope["method"]
        path: str = scope["path"]
        if not path.startswith(API_PREFIX):
            raise _error(404, "not_found", "no such route")
        parts = [p for p in path[len(API_PREFIX) :].split("/") if p]
        if not parts:
            raise _error(404, "not_found", "no such route")
        self._authorize(scope, parts[0])
        self._rate_limit()
        if self._rng.random() < self.faults.server_error_rate:
            self._server_errors += 1
            status = self._rng.choice((500, 502, 503))
            raise _error(status, "internal_error", "the service is temporarily unavailable")
        route = parts[1:]
        match route:
            case ["workflows"] if method == "GET":
                return 200, [attrs.asdict(w) for w in self.workflows], []
            case ["servers"] if method == "GET":
                return 200, [self._wire(m) for m in self._visible()], []
            case ["servers"] if method == "POST":
                return 200, self._launch(body), []
            case ["servers", server_id] if method == "GET":
                return 200, self._wire(self._poll(server_id)), []
            case ["servers", server_id] if method == "DELETE":
                m = self._find(server_id)
                self._stop(m, self.wall(), "stopped")
                return 200, self._wire(m), []
            case ["servers", server_id, "update-estimated-duration"] if method == "POST":
                return 200, self._extend(self._find(server_id), body), []
            case ["workflows"] | ["servers"] | ["servers", _] | ["servers", _, _]:
                raise _error(405, "method_not_allowed", f"{method} is not allowed here")
        raise _error(404, "not_found", "no such route")

    def _authorize(self, scope: Scope, user_id: str) -> None:
        header = b""
        for name, value in scope.get("headers", []):
            if name.lower() == b"authorization":
                header = value
        ok = False
        if header.startswith(b"Bearer "):
            given = header[len(b"Bearer ") :].strip()
            ok = any(hmac.compare_digest(given, t.encode()) for t in self._tokens)
        if not ok or user_id != self.user_id:
            self._unauthorized += 1
            raise _error(401, "unauthorized", "invalid API token or user id")

    def _rate_limit(self) -> None:
        now = trio.current_time()
        rate = self.timings.rate_per_second
        if self._bucket_last is not None and now > self._bucket_last:
            elapsed = now - self._bucket_last
            self._bucket_tokens = min(self.timings.burst, self._bucket_tokens + elapsed * rate)
        self._bucket_last = now if self._bucket_last is None else max(now, self._bucket_last)
        if self._burst_left == 0 and self._rng.random() < self.faults.rate_limit_burst_probability:
            self._burst_left = self.faults.rate_limit_burst_length
        if self._burst_left > 0:
            self._burst_left -= 1
            self._rate_limited += 1
            raise self._too_many(self.faults.retry_after)
        if self._bucket_tokens < 1.0 - 1e-9:  # tolerate float rounding of the refill
            self._rate_limited += 1
            raise self._too_many((1.0 - self._bucket_tokens) / rate)
        self._bucket_tokens = max(0.0, self._bucket_tokens - 1.0)

    @staticmethod
    def _too_many(wait: float) -> _Reply:
        return _Reply(
            429,
            {"error": "rate_limited", "message": "about 1 request per second is allowed"},
            [(b"retry-after", str(max(1, math.ceil(wait))).encode())],
        )

    def _visible(self) -> list[_Machine]:
        return [m for m in self._machines.values() if not m.gone]

    def _find(self, server_id: str) -> _Machine:
        m = self._machines.get(server_id)
        if m is None or m.gone:
            raise _error(404, "server_not_found", "no such server")
        return m

    def _poll(self, server_id: str) -> _Machine:
        m = self._find(server_id)
        if m.hidden_polls > 0:
            m.hidden_polls -= 1
            raise _error(404, "server_not_found", "no such server")
        return m

    def _wire(self, m: _Machine) -> dict[str, Any]:
        status = m.status
        if status == STARTING and m.unknown:
            status = self.faults.unknown_status
        return {
            "server_id": m.server_id,
            "user_id": self.user_id,
            "server_type": m.server_type,
            "estimated_duration": m.estimated_duration,
            "current_status": status,
            "main_service_url": m.url,
            "service_ready_at": None if m.ready_us is None else format_iso(m.ready_us),
            "estimated_stopping_at": None if m.stopping_us is None else format_iso(m.stopping_us),
            "workflow_version_id": m.workflow_version_id,
        }

    @staticmethod
    def _json_object(body: bytes) -> dict[str, Any]:
        try:
            data = msgspec.json.decode(body)
        except msgspec.DecodeError:
            raise _error(400, "invalid_request", "the body is not JSON") from None
        if not isinstance(data, dict):
            raise _error(400, "invalid_request", "the body must be a JSON object")
        return data

    @staticmethod
    def _positive_int(data: Mapping[str, Any], key: str) -> int:
        value = data.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise _error(400, "invalid_request", f"{key} must be a positive integer (seconds)")
        return value

    def _launch(self, body: bytes) -> dict[str, Any]:
        data = self._json_object(body)
        version = data.get("workflow_version_id")
        if not isinstance(version, str) or not version:
            raise _error(400, "invalid_request", "workflow_version_id must be a non-empty string")
        if not self.any_version and version not in {w.version_id for w in self.workflows}:
            # RunComfy's answer to an unknown version is not documented (protocols/
            # runcomfy.md: any non-2xx is an error with its status and body); its documented
            # error body elsewhere is a status, a numeric code and a message.
            raise _Reply(
                404,
                {
                    "status_code": 404,
                    "error_code": 404001,
                    "message": f"workflow version {version} not found",
                },
            )
        server_type = data.get("server_type")
        if not isinstance(server_type, str) or server_type not in self.prices:
            raise _error(
                400, "invalid_server_type", f"server_type must be one of {list(self.prices)}"
            )
        duration = self._positive_int(data, "estimated_duration")
        f = self.faults
        rng = self._rng
        if rng.random() < f.launch_reject_rate:
            self._server_errors += 1
            raise _error(500, "internal_error", "could not launch the server")
        ghost = rng.random() < f.launch_ghost_rate
        m = _Machine(
            server_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            server_type=server_type,
            workflow_version_id=version,
            estimated_duration=duration,
            rate=self.prices[server_type],
            launched_at=self.wall(),
            stuck=rng.random() < f.stuck_starting_rate,
            error=rng.random() < f.launch_error_rate,
            slow=rng.random() < f.slow_ready_rate,
            vanish=rng.random() < f.vanish_rate,
            unknown=rng.random() < f.unknown_status_rate,
            hidden_polls=f.not_found_polls_after_launch,
        )
        self._spawn(self._lifecycle, m)
        self._machines[m.server_id] = m
        log.info("server %s launched (%s, %s)", m.server_id, server_type, version)
        if ghost:
            self._server_errors += 1
            raise _error(502, "bad_gateway", "upstream error")
        return self._wire(m)

    def _extend(self, m: _Machine, body: bytes) -> dict[str, Any]:
        data = self._json_object(body)
        duration = self._positive_int(data, "update_estimated_duration")
        if m.status != READY or m.ready_us is None:
            raise _error(400, "server_not_ready", "the duration can only change once Ready")
        now = self.wall()
        m.estimated_duration = duration
        m.stopping_us = m.ready_us + duration * _US
        if _from_us(m.stopping_us) <= now:
            self._stop(m, now, "lease_expired")
        else:
            m.wake()
        return self._wire(m)
