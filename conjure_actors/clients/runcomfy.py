"""The RunComfy Server API client (httpx): launch, status, list, extend, stop, workflows.

Every request first takes a token from the account's shared :class:`TokenBucket` (about one
request per second with a small burst): share ONE client, or at least one bucket, per
account. A 429 pauses that bucket for ``Retry-After`` so every caller backs off together.

Retries follow :class:`~conjure_actors.clients.retry.RetryPolicy` (jittered exponential
backoff): connect errors, 429 and 5xx are retried for idempotent calls. ``launch`` is not
idempotent: a timeout, a lost connection or a 5xx after it was sent raise
:class:`OutcomeUnknownError` and the caller reconciles with :meth:`RunComfyClient.list_servers`
instead of launching blindly again. A 404 for a server this client launched moments ago is
retried for ``not_found_grace`` seconds (RunComfy has been seen answering 404 right after a
launch), until an answer of RunComfy showed that server (a listing, or its own lookup): from
then on RunComfy knows it, and a 404 means it is gone.

Secrets: the API token and each machine's ``main_service_url`` never appear in a log line,
an exception message or a repr. The URL lives in a :class:`SecretURL` whose repr and str are
redacted (``reveal()`` returns it); error bodies are truncated and scrubbed of the token,
of URLs and of every machine host this client has seen.

Clocks: RunComfy's times (``service_ready_at``, ``estimated_stopping_at``) are on RunComfy's
clock, the runtime's (leases, bills, budget) on the local one. Every answer's ``Date`` header
is a sample of RunComfy's clock (:class:`ClockOffset`); each time this client hands over is
moved into the local clock's basis (RunComfy's time minus the offset), so that a host clock
that disagrees with RunComfy's bills, renews and budgets as a synced one does. An offset
within :data:`CLOCK_CORRECTION_THRESHOLD` is not corrected (``Date`` has whole seconds);
one above :data:`CLOCK_NOTE_THRESHOLD` is told once per process (a warning on this logger).
A client made without a local clock (``wall``) corrects nothing.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import logging
import math
import random
import re
import statistics
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final
from urllib.parse import quote, urlsplit

import attrs
import httpx
import msgspec
import trio

from conjure_actors.clients.bodies import excerpt, send_capped
from conjure_actors.clients.comfyui import origin_of
from conjure_actors.clients.errors import (
    AuthError,
    ClientError,
    LaunchError,
    OutcomeUnknownError,
    RateLimitedError,
    RunComfyError,
    RunComfyResponseError,
    ServerNotFoundError,
    TransportError,
    UnknownWorkflowVersionError,
)
from conjure_actors.clients.ratelimit import TokenBucket
from conjure_actors.clients.retry import (
    RetryPolicy,
    connect_problem,
    lost_problem,
    parse_retry_after,
)

__all__ = [
    "CLOCK_CORRECTION_THRESHOLD",
    "CLOCK_NOTE_THRESHOLD",
    "DEFAULT_BASE_URL",
    "KNOWN_STATUSES",
    "ClockOffset",
    "RunComfyClient",
    "SecretURL",
    "Server",
    "Workflow",
    "clock_note",
    "parse_http_date",
    "parse_timestamp",
    "versions_said",
]

log = logging.getLogger("conjure_actors.clients.runcomfy")

DEFAULT_BASE_URL: Final = "https://api.runcomfy.net"
KNOWN_STATUSES: Final = frozenset(
    {"Starting", "Initializing", "Ready", "Stopping", "Deleting", "Error"}
)
_BODY_LIMIT: Final = 200
# The largest answer read: a list of every server of an account is a few kB.
_ANSWER_LIMIT: Final = 8 * 1024 * 1024
_MAX_HOSTS: Final = 1024
_URL_RE: Final = re.compile(r"(?:https?|wss?)://[^\s\"'<>]+", re.IGNORECASE)
_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


class SecretURL:
    """A capability URL (a machine's ComfyUI): redacted in ``repr``/``str``; ``reveal()``."""

    __slots__ = ("_label", "_url")

    def __init__(self, url: str, label: str = "machine") -> None:
        self._url = url
        self._label = label

    def reveal(self) -> str:
        """The URL itself: pass it to an HTTP client, never to a log or a message."""
        return self._url

    def __repr__(self) -> str:
        return f"SecretURL(<{self._label}: redacted>)"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SecretURL) and other._url == self._url

    def __hash__(self) -> int:
        return hash(self._url)


def versions_said(workflows: Sequence[Any]) -> str:
    """The account's workflow versions for a one-line message: the first 8 (each with its
    workflow's name when it has one), how many more, or "none"."""
    known = ", ".join(
        f"{w.version_id} ({w.workflow_name})" if w.workflow_name else w.version_id
        for w in workflows[:8]
    )
    more = f" and {len(workflows) - 8} more" if len(workflows) > 8 else ""
    return f"{known or 'none'}{more}"


@attrs.frozen
class Server:
    """A machine as RunComfy described it. ``status`` is an open string (see KNOWN_STATUSES)."""

    server_id: str
    status: str
    server_type: str | None = None
    workflow_version_id: str | None = None
    estimated_duration: int | None = None
    service_ready_at: float | None = None
    estimated_stopping_at: float | None = None
    url: SecretURL | None = None

    @property
    def is_ready(self) -> bool:
        return self.status == "Ready"

    @property
    def is_known_status(self) -> bool:
        return self.status in KNOWN_STATUSES


@attrs.frozen
class Workflow:
    """One entry of ``GET /workflows``."""

    workflow_id: str
    workflow_name: str
    version_id: str
    created_at: float | None = None
    updated_at: float | None = None


class _ServerWire(msgspec.Struct):
    server_id: str
    current_status: str | None = None
    server_type: str | None = None
    workflow_version_id: str | None = None
    estimated_duration: int | float | None = None
    main_service_url: str | None = None
    service_ready_at: str | int | float | None = None
    estimated_stopping_at: str | int | float | None = None


class _WorkflowWire(msgspec.Struct):
    workflow_id: str
    workflow_name: str = ""
    version_id: str = ""
    created_at: str | int | float | None = None
    updated_at: str | int | float | None = None


_server_decoder: Final = msgspec.json.Decoder(_ServerWire)
_servers_decoder: Final = msgspec.json.Decoder(list[_ServerWire])
_workflows_decoder: Final = msgspec.json.Decoder(list[_WorkflowWire])


def parse_timestamp(value: str | int | float | None) -> float | None:
    """ISO-8601 (UTC assumed when no zone) or epoch seconds -> epoch seconds; ``None`` stays."""
    if value is None or isinstance(value, int | float):
        return None if value is None else float(value)
    if not value:
        return None
    when = dt.datetime.fromisoformat(value)
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    # Exact microseconds / 1e6 (not datetime.timestamp() on a naive value): the same float
    # the simulator bills from, so a ledger built from these times matches its bill.
    return (when - _EPOCH) / dt.timedelta(seconds=1)


CLOCK_CORRECTION_THRESHOLD: Final = 2.0
"""Seconds: a smaller offset of RunComfy's clock is not corrected (``Date`` has whole
seconds, so a synced host measures up to about a second; it behaves exactly as before).
Once corrected, an offset is corrected until it falls under half of this: an estimate near
the threshold must not switch the correction on and off between two times of one machine."""
CLOCK_NOTE_THRESHOLD: Final = 5.0
"""Seconds: a larger offset is told to the operator (once per process)."""
_CLOCK_SAMPLES: Final = 15
# Offsets already told, per RunComfy origin: once per process, not once per client (``run``
# makes a short-lived client to check the workflow version before the runtime's own).
_clock_told: set[str] = set()


def parse_http_date(value: str | None) -> float | None:
    """An HTTP ``Date`` (RFC 9110: IMF-fixdate, or an obsolete form) -> epoch seconds;
    ``None`` for no value or one that is not a date."""
    if not value:
        return None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # "-0000": UTC, source unknown
        when = when.replace(tzinfo=dt.UTC)
    try:
        return (when - _EPOCH) / dt.timedelta(seconds=1)
    except OverflowError:
        return None


def clock_note(offset: float) -> str:
    """The operator's line for RunComfy's clock running ``offset`` s ahead of this host's."""
    where = "behind" if offset > 0 else "ahead of"
    return (
        f"this host's clock is {abs(offset):.0f} s {where} RunComfy's: its times are "
        "corrected by that; sync the clock (NTP)"
    )


class ClockOffset:
    """How far RunComfy's clock runs ahead of the local one, from its answers' ``Date``.

    ``Date`` has whole seconds: when it says ``D``, RunComfy's time at the answer was in
    ``[D, D + 1)``, and the answer was made between the local send and receive times, so
    the offset lies in ``[D - received, D + 1 - sent]``. One answer alone tells the
    offset to half a second plus half the round trip (the middle of that interval). The
    answers' intervals all hold the true offset, and answers made at different fractions
    of a second cut each other down: the estimate is the middle of the intersection of
    the last :data:`_CLOCK_SAMPLES` intervals, good to about half a round trip after a few
    answers. When they do not meet (an answer dated by another clock, RunComfy's clock
    stepped), it is the median of their middles instead: one odd answer does not move it.
    """

    def __init__(
        self,
        *,
        threshold: float = CLOCK_CORRECTION_THRESHOLD,
        samples: int = _CLOCK_SAMPLES,
    ) -> None:
        self.threshold = threshold
        self._bounds: deque[tuple[float, float]] = deque(maxlen=samples)
        self._estimate: float | None = None
        self._correcting = False  # see CLOCK_CORRECTION_THRESHOLD (on at it, off at half)

    def sample(self, date: float, sent: float, received: float) -> None:
        """One answer dated ``date`` (whole seconds, RunComfy's clock), sent and received at
        the local ``sent`` and ``received``."""
        low, high = date - max(sent, received), date + 1 - min(sent, received)
        if not (math.isfinite(low) and math.isfinite(high)):
            return
        self._bounds.append((low, high))
        low = max(b[0] for b in self._bounds)
        high = min(b[1] for b in self._bounds)
        if low <= high:
            estimate = (low + high) / 2
        else:
            estimate = statistics.median((b[0] + b[1]) / 2 for b in self._bounds)
        self._estimate = estimate
        if abs(estimate) >= self.threshold:
            self._correcting = True
        elif abs(estimate) < self.threshold / 2:
            self._correcting = False

    @property
    def estimate(self) -> float | None:
        """Seconds RunComfy's clock runs ahead (negative: behind); ``None`` before a sample."""
        return self._estimate

    @property
    def correction(self) -> float:
        """What to subtract from RunComfy's times: the estimate, or 0 within the threshold
        (once past it, until under half of it)."""
        estimate = self._estimate
        if estimate is None or not self._correcting:
            return 0.0
        return estimate


@attrs.frozen
class RunComfyPolicy:
    """Retry policy plus RunComfy specifics."""

    retry: RetryPolicy = attrs.field(factory=RetryPolicy)
    not_found_grace: float = 60.0
    """Retry 404s for a server this client launched less than this many seconds ago and
    that no answer has shown since (a listing, a lookup): the lag is over once one has."""
    default_retry_after: float = 2.0
    """Pause after a 429 that carried no usable ``Retry-After``."""


def _server_path(server_id: str, tail: str = "") -> str:
    """``/servers/{id}`` (+ ``tail``) with the id quoted as one path segment: an id that
    came from a command line cannot name another route (``a/b``, ``x?y``, ``x#y``). An id
    that is no segment at all ("", ``.``, ``..``: the account's list once the path is
    normalized) is refused before any request."""
    if not server_id.strip("."):
        raise RunComfyError(f"not a RunComfy server id: {server_id!r}")
    return f"/servers/{quote(server_id, safe='')}{tail}"


class RunComfyClient:
    """One RunComfy account. Share one instance (or one ``bucket``) per account."""

    def __init__(
        self,
        base_url: str,
        user_id: str,
        token: str,
        *,
        http: httpx.AsyncClient,
        bucket: TokenBucket | None = None,
        policy: RunComfyPolicy | None = None,
        rng: random.Random | None = None,
        wall: Callable[[], float] | None = None,
    ) -> None:
        """``wall``: the local clock the caller compares RunComfy's times with (the
        runtime's :class:`~conjure_actors.clock.SystemWallClock`, ``time.time`` for a
        command's look): they are corrected into its basis. ``None``: handed over as they are
        (a caller with no clock of its own, or one that shares the simulator's)."""
        if not user_id or not token:
            raise AuthError(
                "RunComfy needs a user id and an API token: "
                "set RUNCOMFY_USER_ID and RUNCOMFY_API_TOKEN"
            )
        self._root = f"{base_url.rstrip('/')}/prod/api/users/{user_id}"
        self._origin = origin_of(base_url)  # for messages: no path (the user id), no query
        self._user_id = user_id
        self._token = token
        self._headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        self._http = http
        self.bucket = bucket or TokenBucket(rate=1.0, burst=2)
        self.policy = policy or RunComfyPolicy()
        self._rng = rng or random.Random()
        self._wall = wall
        #: RunComfy's clock against ``wall``, from every answer's ``Date``.
        self.clock = ClockOffset()
        # Servers this client launched that no answer has shown since -> when (trio time):
        # a 404 for one within ``not_found_grace`` is RunComfy's lag, retried (_in_grace).
        self._launched_at: dict[str, float] = {}
        # Machine hosts seen, to scrub from error bodies: the newest MAX_HOSTS only, so that
        # a client that outlives thousands of machines does not keep every name.
        self._hosts: OrderedDict[str, None] = OrderedDict()

    def __repr__(self) -> str:
        return f"RunComfyClient(user_id={self._user_id!r}, token=<redacted>)"

    # ------------------------------------------------------------------ API

    async def list_workflows(self) -> list[Workflow]:
        """``GET /workflows``."""
        resp = await self._request("GET", "/workflows", what="list workflows")
        wires = self._decode(_workflows_decoder, resp, "list workflows")
        return [
            Workflow(
                workflow_id=w.workflow_id,
                workflow_name=w.workflow_name,
                version_id=w.version_id,
                created_at=self._time(w.created_at, "list workflows"),
                updated_at=self._time(w.updated_at, "list workflows"),
            )
            for w in wires
        ]

    async def list_servers(self) -> list[Server]:
        """``GET /servers``: every machine of the account."""
        resp = await self._request("GET", "/servers", what="list servers")
        servers = [
            self._server(w, "list servers")
            for w in self._decode(_servers_decoder, resp, "list servers")
        ]
        if self._launched_at:
            for server in servers:
                self._shown(server.server_id)
        return servers

    async def status(self, server_id: str) -> Server:
        """``GET /servers/{id}``; 404 -> :class:`ServerNotFoundError` (after the launch grace)."""
        what = f"status of server {server_id}"
        resp = await self._request("GET", _server_path(server_id), what=what, server_id=server_id)
        server = self._server(self._decode(_server_decoder, resp, what), what)
        self._shown(server_id)
        return server

    async def launch(
        self, workflow_version_id: str, server_type: str, estimated_duration: int
    ) -> Server:
        """``POST /servers``: a new machine, ``Starting``. Not retried once it may have landed."""
        what = f"launch of a {server_type} server"
        try:
            resp = await self._request(
                "POST",
                "/servers",
                what=what,
                json={
                    "workflow_version_id": workflow_version_id,
                    "server_type": server_type,
                    "estimated_duration": int(estimated_duration),
                },
                idempotent=False,
            )
            server = self._server(self._decode(_server_decoder, resp, what), what)
        except LaunchError as exc:
            if workflow_version_id and exc.status in (400, 404, 422):
                await self._refused_version(workflow_version_id, exc)
            raise
        except RunComfyResponseError as exc:
            # An answer we cannot read (a 2xx that is not a server, one too large to read)
            # does not say "refused": the machine may be up, its id unread, and only a
            # listing can tell (a refusal here would leave it billing, unknown).
            raise OutcomeUnknownError(
                f"{exc}: it may have launched; list servers before trying again",
                status=exc.status,
            ) from None
        self._launched_at[server.server_id] = trio.current_time()
        return server

    async def _refused_version(self, version: str, refusal: LaunchError) -> None:
        """A launch refused with a 4xx: if ``version`` is not among the account's workflow
        versions (``GET /workflows``), the refusal is said as that, with the versions it
        has (RunComfy's answer to an unknown version is not documented, so the listing,
        not the body, tells). A listing that fails, or names the version: nothing said."""
        try:
            workflows = await self.list_workflows()
        except ClientError:
            return
        if any(w.version_id == version for w in workflows):
            return
        raise UnknownWorkflowVersionError(
            f"RunComfy does not know workflow version {version!r} (the launch was refused,"
            f" HTTP {refusal.status}): pass one of the account's: {versions_said(workflows)}",
            status=refusal.status,
        ) from None

    async def extend(self, server_id: str, seconds: int) -> Server:
        """``update-estimated-duration``: the lease becomes ready-time + ``seconds``."""
        what = f"lease update of server {server_id}"
        resp = await self._request(
            "POST",
            _server_path(server_id, "/update-estimated-duration"),
            what=what,
            json={"update_estimated_duration": int(seconds)},
            server_id=server_id,
        )
        return self._server(self._decode(_server_decoder, resp, what), what)

    async def stop(self, server_id: str, *, missing_ok: bool = False) -> Server | None:
        """``DELETE /servers/{id}``: billing stops when this returns. ``None`` if gone and
        ``missing_ok``."""
        what = f"stop of server {server_id}"
        try:
            resp = await self._request(
                "DELETE", _server_path(server_id), what=what, server_id=server_id
            )
        except ServerNotFoundError:
            if missing_ok:
                return None
            raise
        self._launched_at.pop(server_id, None)
        return self._server(self._decode(_server_decoder, resp, what), what)

    async def wait_until_ready(
        self, server_id: str, *, give_up_after: float = 600.0, interval: float = 5.0
    ) -> Server:
        """Poll until ``Ready``; ``Error`` or ``give_up_after`` s -> :class:`LaunchError`."""
        with trio.move_on_after(give_up_after):
            while True:
                server = await self.status(server_id)
                if server.is_ready:
                    return server
                if server.status == "Error":
                    raise LaunchError(f"server {server_id} failed to start (status Error)")
                if not server.is_known_status:
                    log.info("server %s reports unknown status %r", server_id, server.status)
                await trio.sleep(interval)
        raise LaunchError(f"server {server_id} was not Ready within {give_up_after:g} s; stop it")

    # ------------------------------------------------------------------ plumbing

    def scrub(self, text: str) -> str:
        """``text`` without the token, URLs or machine hosts, on one line, truncated."""
        text = text.replace(self._token, "<token>")
        text = _URL_RE.sub("<url>", text)
        for host in self._hosts:
            text = text.replace(host, "<host>")
        text = " ".join(text.split())
        if len(text) > _BODY_LIMIT:
            text = text[:_BODY_LIMIT] + "..."
        return text

    async def _request(
        self,
        method: str,
        route: str,
        *,
        what: str,
        json: Mapping[str, Any] | None = None,
        idempotent: bool = True,
        server_id: str | None = None,
    ) -> httpx.Response:
        """Send with the bucket, retries and 404 grace; return a 2xx response or raise.

        ``idempotent=False`` is the launch: never resent once it may have reached the server
        (a 429 or a connect error prove it did not), and a 4xx becomes :class:`LaunchError`.

        The bucket is taken OUTSIDE the per-attempt deadline: waiting for our turn under the
        account's rate limit is not the server being slow, and must never turn a launch
        into "outcome unknown".
        """
        policy = self.policy.retry
        url = self._root + route
        failures = 0
        not_found_delays = policy.delays(self._rng)
        while True:
            await self.bucket.acquire()
            response: httpx.Response | None = None
            problem = ""
            sent = None if self._wall is None else self._wall()
            with trio.move_on_after(policy.request_timeout) as scope:
                try:
                    response = await send_capped(
                        self._http,
                        method,
                        url,
                        limit=_ANSWER_LIMIT,
                        too_large=lambda: RunComfyResponseError(
                            f"RunComfy {what} answered more than {_ANSWER_LIMIT} bytes; not read"
                        ),
                        json=json,
                        headers=self._headers,
                    )
                except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                    problem = connect_problem(exc).replace(
                        "cannot connect", f"cannot connect to {self._origin}", 1
                    )
                except httpx.TransportError as exc:
                    problem = lost_problem(exc, self.scrub)
                    if not idempotent:
                        raise OutcomeUnknownError(
                            f"RunComfy {what}: sent, but {problem}; list servers "
                            "before trying again"
                        ) from None
            if scope.cancelled_caught:
                problem = f"no answer within {policy.request_timeout:g} s"
                if not idempotent:
                    raise OutcomeUnknownError(
                        f"RunComfy {what}: {problem}; list servers before trying again"
                    )
            wait: float | None = None
            if response is not None:
                if self._wall is not None and sent is not None:
                    self._measure_clock(response, sent, self._wall())
                code = response.status_code
                log.debug("RunComfy %s -> HTTP %d", what, code)
                if code < 300:
                    return response
                retry_after = parse_retry_after(response.headers.get("retry-after"))
                if code == 429:
                    pause = (
                        retry_after if retry_after is not None else self.policy.default_retry_after
                    )
                    # Hold every caller of this account, not just this one.
                    self.bucket.pause(min(pause, policy.max_retry_after))
                    problem = "HTTP 429 rate_limited"
                    wait = 0.0  # the bucket does the waiting
                elif code >= 500:
                    problem = f"HTTP {code}"
                    if not idempotent:
                        raise OutcomeUnknownError(
                            f"RunComfy {what} answered HTTP {code}: it may or may not have "
                            "happened; list servers before trying again",
                            status=code,
                        )
                    if retry_after is not None:
                        wait = max(
                            policy.delay(failures, self._rng),
                            min(retry_after, policy.max_retry_after),
                        )
                elif code == 404 and self._in_grace(server_id):
                    delay = next(not_found_delays)
                    log.info("RunComfy %s: 404 right after launch; retrying in %.2f s", what, delay)
                    await trio.sleep(delay)
                    continue
                else:
                    self._raise_for(response, what, server_id, launch=not idempotent)
            failures += 1
            if failures >= policy.attempts:
                if response is not None and response.status_code == 429:
                    raise RateLimitedError(
                        f"RunComfy {what}: still rate limited after {failures} attempts; "
                        "fewer concurrent callers or a slower rate will help",
                        status=429,
                    )
                if response is not None:
                    self._raise_for(response, what, server_id, launch=not idempotent)
                raise TransportError(
                    f"RunComfy {what} failed after {failures} attempts: {problem}: "
                    + (
                        "check the network, and RUNCOMFY_API_BASE_URL (runcomfy.base_url)"
                        if problem.startswith("cannot connect")
                        else "RunComfy may be down or slow; try again later"
                    )
                )
            if wait is None:
                wait = policy.delay(failures - 1, self._rng)
            log.info(
                "RunComfy %s: %s; retry %d/%d in %.2f s",
                what,
                problem,
                failures,
                policy.attempts - 1,
                wait,
            )
            if wait > 0:
                await trio.sleep(wait)

    def _measure_clock(self, response: httpx.Response, sent: float, received: float) -> None:
        """A sample of RunComfy's clock from the answer's ``Date`` (none, several or a
        malformed one: no sample); the operator is told of a large offset once."""
        dates = response.headers.get_list("date")
        date = parse_http_date(dates[0]) if len(dates) == 1 else None
        if date is None:
            return
        self.clock.sample(date, sent, received)
        estimate = self.clock.estimate
        if (
            estimate is not None
            and abs(estimate) > CLOCK_NOTE_THRESHOLD
            and self._origin not in _clock_told
        ):
            _clock_told.add(self._origin)
            log.warning("%s", clock_note(estimate))

    def _shown(self, server_id: str) -> None:
        """An answer of RunComfy showed ``server_id``: its launch's 404 grace is over (a
        machine listed, or seen Ready, then answering 404 is gone: retrying that 404 until
        the grace ran out took a machine that vanished for lost up to a minute late)."""
        self._launched_at.pop(server_id, None)

    def _in_grace(self, server_id: str | None) -> bool:
        if server_id is None or server_id not in self._launched_at:
            return False
        return trio.current_time() - self._launched_at[server_id] < self.policy.not_found_grace

    def _raise_for(
        self, response: httpx.Response, what: str, server_id: str | None, *, launch: bool
    ) -> None:
        code = response.status_code
        body = self.scrub(response.text)
        if code in (401, 403):
            raise AuthError(
                f"RunComfy rejected the credentials ({what}: HTTP {code}); check "
                "RUNCOMFY_USER_ID and RUNCOMFY_API_TOKEN",
                status=code,
            )
        if code == 404 and server_id is not None:
            raise ServerNotFoundError(
                f"server {server_id} not found (HTTP 404): it has stopped or never existed",
                status=404,
            )
        if code == 429:
            raise RateLimitedError(f"RunComfy {what}: rate limited (HTTP 429)", status=429)
        if launch:
            raise LaunchError(f"RunComfy refused the {what} (HTTP {code}): {body}", status=code)
        raise RunComfyError(
            f"RunComfy {what} answered HTTP {code}: {self._reason(response)}", status=code
        )

    def _reason(self, response: httpx.Response) -> str:
        """A short reason from an error answer: its JSON ``message`` (or ``detail``,
        ``error``) when it has one, else its text; scrubbed, one line, truncated (a raw JSON
        body on serve's terminal says nothing more, and twice as long)."""
        try:
            data = msgspec.json.decode(response.content)
        except msgspec.DecodeError:
            data = None
        if isinstance(data, dict):
            for key in ("message", "detail", "error"):
                value = data.get(key)
                if isinstance(value, str) and value.strip():
                    return self.scrub(value)
        return self.scrub(response.text)

    def _decode(
        self, decoder: msgspec.json.Decoder[Any], response: httpx.Response, what: str
    ) -> Any:
        try:
            return decoder.decode(response.content)
        except msgspec.DecodeError as exc:  # ValidationError is a DecodeError
            raise RunComfyResponseError(
                f"RunComfy {what}: unexpected answer ({self.scrub(str(exc))}): "
                f"{excerpt(response.content, scrub=self.scrub)}",
                status=response.status_code,
            ) from None

    def _time(self, value: str | int | float | None, what: str) -> float | None:
        """A time of RunComfy's, in the local clock's basis (see the module's docstring)."""
        try:
            when = parse_timestamp(value)
        except (ValueError, OverflowError):
            raise RunComfyResponseError(f"RunComfy {what}: unreadable timestamp") from None
        if when is None:
            return None
        return when - self.clock.correction

    def _server(self, wire: _ServerWire, what: str) -> Server:
        url = None
        if wire.main_service_url:
            try:
                host = urlsplit(wire.main_service_url).hostname
            except ValueError:  # e.g. an unclosed IPv6 bracket: no usable URL
                raise RunComfyResponseError(
                    f"RunComfy {what}: server {wire.server_id} has an unusable service URL"
                ) from None
            if host:
                self._hosts[host] = None
                self._hosts.move_to_end(host)
                while len(self._hosts) > _MAX_HOSTS:
                    self._hosts.popitem(last=False)
            url = SecretURL(wire.main_service_url, f"server {wire.server_id}")
        duration = wire.estimated_duration
        if duration is not None and not math.isfinite(duration):
            raise RunComfyResponseError(
                f"RunComfy {what}: server {wire.server_id} has a non-finite estimated_duration"
            )
        return Server(
            server_id=wire.server_id,
            status=wire.current_status or "",
            server_type=wire.server_type,
            workflow_version_id=wire.workflow_version_id,
            estimated_duration=None if duration is None else int(duration),
            service_ready_at=self._time(wire.service_ready_at, what),
            estimated_stopping_at=self._time(wire.estimated_stopping_at, what),
            url=url,
        )
