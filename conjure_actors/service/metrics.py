"""``GET /metrics``: Prometheus text exposition from prometheus-client, on its own registry.

Two kinds of figures:

- **read from the state at scrape time** (a custom collector over the fold of the log, so they
  are never out of step with ``GET /api/v2/jobs``; jobs by status and the queue depth from the
  service's job index, which the same commits update): jobs by status, queue depth, machines by
  state, spend and budget, open event streams, the log's last seq, whether a full disk holds
  the journal (and for how long), the runtime's gate (requests in flight, job work waiting,
  its waits and releases);
- **observed as they happen**: request latency (an ASGI middleware, labelled by the route's
  endpoint name so the label set stays bounded) and journal append latency (from the append
  call, stamped in the record, to its publication, measured by a journal subscriber).

The registry is private (``CollectorRegistry()``), never prometheus-client's global one, so two
services in one process (tests) do not collide.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Final

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.openmetrics.exposition import escape_label_name, escape_metric_name
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString as _untyped_go_float
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from conjure_actors.domain import state as st
from conjure_actors.domain.prices import MICROS_PER_USD
from conjure_actors.domain.service_events import served_status
from conjure_actors.service.errors import CLIENT_GONE

__all__ = ["MetricsMiddleware", "ServiceMetrics", "queue_depth"]

_REQUEST_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_APPEND_BUCKETS: Final = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1)
_WAITING: Final = frozenset({st.PENDING, st.QUEUED, st.RETRYING})
_METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"})
_MACHINE_STATES: Final = (st.M_STARTING, st.M_READY, st.M_STOPPING, st.M_STOPPED, st.M_LOST)


def queue_depth(state: st.State) -> int:
    """Jobs waiting for a machine: pending, queued or retrying (not running)."""
    return sum(1 for job in state.jobs.values() if job.status in _WAITING)


class _StateCollector(Collector):
    """Gauges computed from the live state on each scrape."""

    def __init__(self, metrics: ServiceMetrics) -> None:
        self._m = metrics

    def collect(self) -> Iterator[Metric]:
        state = self._m.get_state()
        now = self._m.now()
        # Every job the log ran, by status: those the state retains plus the tally of
        # those that expired (and left it), so the figures never go down with an expiry.
        jobs = GaugeMetricFamily("conjure_jobs", "Jobs by status.", labels=["status"])
        counts = dict.fromkeys(st.JOB_STATUSES, 0)
        if self._m.job_counts is not None:
            counts.update(self._m.job_counts())
            waiting = sum(counts.get(status, 0) for status in _WAITING)
        else:
            for job in state.jobs.values():
                status = served_status(state, job)
                counts[status] = counts.get(status, 0) + 1
            waiting = queue_depth(state)
        for status, n in state.service.expired_tally.items():
            counts[status] = counts.get(status, 0) + n
        for status, n in counts.items():
            jobs.add_metric([status], n)
        yield jobs
        yield GaugeMetricFamily(
            "conjure_queue_depth",
            "Jobs waiting for a machine (pending, queued, retrying).",
            value=waiting,
        )
        if self._m.max_queued is not None:
            yield GaugeMetricFamily(
                "conjure_queue_limit",
                "Waiting jobs past which submissions get 429.",
                value=self._m.max_queued,
            )
        machines = GaugeMetricFamily(
            "conjure_machines", "Machines by state.", labels=["state", "kind"]
        )
        by_state: dict[tuple[str, str], int] = {}
        for s in _MACHINE_STATES:
            by_state[(s, "runcomfy")] = 0
        spent = 0
        for m in state.machines.values():
            by_state[(m.status, m.kind)] = by_state.get((m.status, m.kind), 0) + 1
            spent += st.machine_cost_at(m, now)
        for (status, kind), n in sorted(by_state.items()):
            machines.add_metric([status, kind], n)
        yield machines
        yield GaugeMetricFamily(
            "conjure_spend_usd",
            "Spent so far: stopped machines' bills plus ready machines billed up to now.",
            value=spent / MICROS_PER_USD,
        )
        yield GaugeMetricFamily(
            "conjure_ledger_usd",
            "The ledger (accrued and final bills as logged).",
            value=state.ledger.total_micros / MICROS_PER_USD,
        )
        limit = state.budget.limit_micros
        yield GaugeMetricFamily(
            "conjure_budget_usd",
            "The budget (NaN: unlimited).",
            value=math.nan if limit is None else limit / MICROS_PER_USD,
        )
        if self._m.open_streams is not None:
            yield GaugeMetricFamily(
                "conjure_sse_streams_open", "Open job event streams.", value=self._m.open_streams()
            )
        last_seq = self._m.last_seq()
        if last_seq is not None:
            yield GaugeMetricFamily(
                "conjure_journal_last_seq", "Seq of the last durable record.", value=last_seq
            )
        if self._m.held_since is not None:
            held = self._m.held_since()
            yield GaugeMetricFamily(
                "conjure_journal_held",
                "1 while the log's full disk holds the journal's appends (new work is 507).",
                value=0 if held is None else 1,
            )
            yield GaugeMetricFamily(
                "conjure_journal_held_seconds",
                "Seconds the log's full disk has held the journal's appends (0: not held).",
                value=0.0 if held is None else max(0.0, now - held),
            )
        if self._m.gate_stats is not None:
            yield from _gate_metrics(self._m.gate_stats())


def _gate_metrics(stats: Any) -> Iterator[Metric]:
    """The runtime's PriorityGate (requests first, job work within a bound)."""
    yield GaugeMetricFamily(
        "conjure_requests_in_flight",
        "HTTP requests holding the gate (from their start to their first body bytes).",
        value=stats.foreground,
    )
    yield GaugeMetricFamily(
        "conjure_background_waiting", "Job tasks waiting at the gate now.", value=stats.waiting
    )
    yield CounterMetricFamily(
        "conjure_background_waits",
        "Times job work waited at the gate for requests in flight.",
        value=stats.waits,
    )
    released = CounterMetricFamily(
        "conjure_background_releases",
        "Groups of waiting job work let go: the gate opened, or their bound passed.",
        labels=["by"],
    )
    released.add_metric(["open"], stats.released_open)
    released.add_metric(["bound"], stats.released_bound)
    yield released
    yield GaugeMetricFamily(
        "conjure_background_longest_wait_seconds",
        "The longest job work waited at the gate (at most its bound).",
        value=stats.longest_wait,
    )


class ServiceMetrics:
    """The service's registry and its instruments; ``endpoint`` serves ``GET /metrics``."""

    def __init__(
        self,
        get_state: Callable[[], st.State],
        *,
        now: Callable[[], float] = time.time,
        open_streams: Callable[[], int] | None = None,
        max_queued: int | None = None,
        last_seq: Callable[[], int | None] = lambda: None,
        gate_stats: Callable[[], Any] | None = None,
        job_counts: Callable[[], Mapping[str, int]] | None = None,
        held_since: Callable[[], float | None] | None = None,
    ) -> None:
        """``job_counts``: the jobs by status, kept up to date event by event (the service's
        ``JobIndex.counts``); None: counted from the state at each scrape. ``held_since``:
        since when (``now``'s clock) a full disk holds the journal, or None (the service's
        ``held_since``); not given: no such gauges."""
        self.get_state = get_state
        self.job_counts = job_counts
        self.gate_stats = gate_stats
        self.now = now
        self.open_streams = open_streams
        self.max_queued = max_queued
        self.last_seq = last_seq
        self.held_since = held_since
        self.registry = CollectorRegistry()
        self.request_seconds = Histogram(
            "conjure_http_request_duration_seconds",
            "HTTP request latency, from the request to the end of the response.",
            ["method", "route", "status"],
            buckets=_REQUEST_BUCKETS,
            registry=self.registry,
        )
        self.append_seconds = Histogram(
            "conjure_journal_append_seconds",
            "Journal append latency: from the append call to the record's publication.",
            buckets=_APPEND_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_StateCollector(self))
        self._exposition = Exposition()

    def observe_record(self, record: Any) -> None:
        """Observe one published record's append latency (``now - record.ts``)."""
        self.append_seconds.observe(max(0.0, self.now() - record.ts))

    def observe_records(self, records: list[Any]) -> None:
        """Observe a commit's records (a journal listener: it neither blocks nor raises).
        They are published together: one clock reading for all (the listener runs in the
        commit, before its appenders are answered: a job's ~18 records took 21-23 us, with
        a clock reading each through three calls, now 18-20; prometheus' ``observe`` is
        most of the rest)."""
        now = self.now()
        observe = self.append_seconds.observe
        for record in records:
            observe(max(0.0, now - record.ts))

    async def watch_journal(self, journal: Any) -> None:
        """Observe every record the journal makes durable until cancelled (run it in a
        nursery): a listener, so no task step per commit."""
        with journal.listen(self.observe_records) as listener:
            await listener.wait_raised()  # its failure fails this task, not silently

    def render(self) -> bytes:
        return self._exposition.render(self.registry)

    async def endpoint(self, request: Request) -> Response:
        """``GET /metrics``."""
        return Response(self.render(), media_type=CONTENT_TYPE_LATEST)


_go_float: Callable[[float], str] = _untyped_go_float  # the library's (untyped) formatting
_OM_SUFFIXES: Final = ("_created", "_gsum", "_gcount")
_TYPES: Final = {"info": "gauge", "stateset": "gauge", "gaugehistogram": "histogram"}


class Exposition:
    """prometheus-client's ``generate_latest`` (the text format 0.0.4, its default escaping),
    byte for byte, with the names and label sets escaped once and remembered.

    ``generate_latest`` validates and escapes every label name and value of every sample on
    every scrape (three regular-expression matches and a character loop per label): ~1.2 ms
    of a ~1.9 ms scrape of our registry, ~180 lines. ``bench/serve.py`` polls ``/metrics``
    every 20 ms while a backlog runs, on the core that runs the jobs. Our label sets are
    bounded (routes, methods, statuses, buckets), so the formatted ones are kept (and
    forgotten past ``MAX_CACHED``, should a collector ever produce unbounded ones)."""

    MAX_CACHED: Final = 4096

    def __init__(self) -> None:
        self._names: dict[str, str] = {}
        self._labels: dict[tuple[tuple[str, str], ...], str] = {}

    def _name(self, name: str) -> str:
        escaped = self._names.get(name)
        if escaped is None:
            if len(self._names) >= self.MAX_CACHED:
                self._names.clear()
            escaped = self._names[name] = escape_metric_name(name)
        return escaped

    def _labelstr(self, labels: dict[str, str]) -> str:
        key = tuple(labels.items())
        text = self._labels.get(key)
        if text is None:
            if len(self._labels) >= self.MAX_CACHED:
                self._labels.clear()
            text = self._labels[key] = (
                "{"
                + ",".join(
                    '{}="{}"'.format(
                        escape_label_name(k),
                        v.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\""),
                    )
                    for k, v in sorted(labels.items())
                )
                + "}"
                if labels
                else ""
            )
        return text

    def _line(self, sample: Any) -> str:
        timestamp = ""
        if sample.timestamp is not None:
            timestamp = f" {int(float(sample.timestamp) * 1000):d}"
        return (
            f"{self._name(sample.name)}{self._labelstr(sample.labels)}"
            f" {_go_float(sample.value)}{timestamp}\n"
        )

    def render(self, registry: Collector) -> bytes:
        """What ``generate_latest(registry)`` answers."""
        output: list[str] = []
        line = self._line
        for metric in registry.collect():
            mname, mtype = metric.name, metric.type
            if mtype == "counter":
                mname += "_total"
            elif mtype == "info":
                mname += "_info"
            mtype = "untyped" if mtype == "unknown" else _TYPES.get(mtype, mtype)
            doc = metric.documentation.replace("\\", r"\\").replace("\n", r"\n")
            escaped = self._name(mname)
            output.append(f"# HELP {escaped} {doc}\n# TYPE {escaped} {mtype}\n")
            om_samples: dict[str, list[str]] = {}
            base = metric.name
            for s in metric.samples:
                name = s.name
                if name.startswith(base) and name[len(base) :] in _OM_SUFFIXES:
                    om_samples.setdefault(name[len(base) :], []).append(line(s))
                else:
                    output.append(line(s))
            for suffix, lines in sorted(om_samples.items()):
                escaped = self._name(base + suffix)
                output.append(f"# HELP {escaped} {doc}\n# TYPE {escaped} gauge\n")
                output.extend(lines)
        return "".join(output).encode("utf-8")


class MetricsMiddleware:
    """Times every HTTP request into ``ServiceMetrics.request_seconds`` (pure ASGI: an SSE
    stream is timed to its end without being buffered)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: ServiceMetrics,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.clock = clock
        self._children: dict[tuple[str, str, int], Callable[[float], None]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = self.clock()
        status = 500
        started = False

        async def watched_send(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status, started = int(message["status"]), True
            await send(message)

        try:
            await self.app(scope, receive, watched_send)
        except ClientDisconnect:
            if not started:  # the client left before its answer: no server error
                status = CLIENT_GONE
            raise
        finally:
            endpoint = scope.get("endpoint")
            route = getattr(endpoint, "__name__", None) or "unmatched"
            method = scope["method"] if scope["method"] in _METHODS else "other"
            self._observe(method, route, status, self.clock() - start)

    def _observe(self, method: str, route: str, status: int, seconds: float) -> None:
        # The labelled child of each (method, route, status) is looked up once: prometheus'
        # ``labels()`` validates and locks on every call (~3 us of a request's ~14 us in
        # the three middlewares). The label set is bounded (routes, methods, statuses).
        key = (method, route, status)
        observe = self._children.get(key)
        if observe is None:
            child = self.metrics.request_seconds.labels(method, route, str(status))
            observe = self._children[key] = child.observe
        observe(seconds)
