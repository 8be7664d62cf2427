"""Record what the ComfyUI client receives for one job; replay it with no simulator (issue 16).

A *trace* is one job as the ComfyUI client saw it: the WebSocket frames of its prompt in
the order they arrived (text and binary), and the HTTP answers it got (``POST /prompt``,
``/history/{id}``, ``/view`` of each output, ``/upload/image``, ``/system_stats``...). It is
recorded from a real run of the actors against the simulated cloud (:func:`record_trace`),
which also returns that run's final state.

:class:`TraceCloud` (:func:`open_trace_cloud`) stands where a
:class:`~conjure_actors.sim.SimulatedCloud` stands (``http_transport()``, ``ws_connect``,
``user_id``/``token``/``base_url``), so ``open_simulated_conjure`` runs the real actors, the
real clients and a real journal against it. Each machine's ComfyUI is a replayer: a
``POST /prompt`` queues the recorded frames on the submitting client's socket, with the
recorded prompt id replaced by the one submitted (every job has its own), and nothing else
happens: no node runs, no image is made, no timer sleeps. Frames are handed out as fast as
the client's reader asks for them; ``/history/{id}`` answers ``{}`` until the prompt's
outcome frame (``execution_success``...) has been taken (ComfyUI writes the history right
after sending it), then the recorded entry; ``/queue`` lists the prompts not finished yet.

The RunComfy API is :class:`~conjure_actors.sim.runcomfy.RunComfySim` (launch, readiness,
leases, bills: a few requests per machine, none per message) with the replaying ComfyUIs as
its machines; :meth:`TraceCloud.comfyui` gives replayers to attach instead (``mode="comfyui"``,
``attach=``), with no RunComfy at all.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qs, parse_qsl, urlsplit

import attrs
import httpx
import msgspec
import trio
import trio_websocket

import eventlog
from conjure_actors.clients import comfyui_wire as wire
from conjure_actors.clock import TrioWallClock
from conjure_actors.domain import state as st
from conjure_actors.domain.events import Event
from conjure_actors.sim.cloud import API_HOST, CloudTimings, open_simulated_cloud
from conjure_actors.sim.comfyui import ComfyTimings
from conjure_actors.sim.runcomfy import RunComfySim, RunComfyTimings
from conjure_actors.testing.harness import HarnessSettings, seeded_ids
from conjure_actors.testing.runtime import open_simulated_conjure

__all__ = [
    "Answer",
    "Trace",
    "TraceCloud",
    "job_outcome",
    "open_trace_cloud",
    "record_trace",
]

PROMPT_MARK: Final = "{prompt_id}"
"""Stands for the recorded prompt id in the keys of :attr:`Trace.answers`."""
_MACHINE_SUFFIX: Final = "-comfyui.trace.invalid"  # .invalid never resolves
_SYNTHESIZED: Final = ("GET /queue", "POST /queue", "POST /interrupt")


@attrs.frozen
class Answer:
    """One recorded HTTP answer (``content-length`` is recomputed when replayed)."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


@attrs.frozen
class Trace:
    """One job as the ComfyUI client received it (see the module docstring).

    ``answers`` are keyed ``"METHOD /path"`` (``?query`` sorted, for ``/view``), the
    recorded prompt id written :data:`PROMPT_MARK`; ``hello`` are the frames a socket gets
    on connecting (before the prompt was submitted); ``shape`` names the graph's nodes
    (``"id:class"``, sorted) so a cloud holding several traces replays the one of the
    submitted graph.
    """

    prompt_id: str
    frames: tuple[str | bytes, ...]
    answers: Mapping[str, Answer]
    hello: tuple[str | bytes, ...] = ()
    shape: tuple[str, ...] = ()
    done_index: int = -1
    """Index of the outcome frame (``execution_success``...): once the client has taken it,
    the prompt's history exists (ComfyUI writes it right after); -1: the last frame."""

    def count(self, kind: str) -> int:
        """How many text frames of type ``kind`` (``"progress"``...) the trace holds."""
        needle = f'"type":"{kind}"'
        return sum(1 for f in self.frames if isinstance(f, str) and needle in f.replace(" ", ""))

    def frames_for(self, prompt_id: str) -> list[str | bytes]:
        """The frames with the recorded prompt id replaced by ``prompt_id``."""
        old = self.prompt_id
        return [
            f.replace(old, prompt_id) if isinstance(f, str) else _swap_binary(f, old, prompt_id)
            for f in self.frames
        ]

    def answer(self, key: str, prompt_id: str) -> Answer | None:
        """The recorded answer for ``key``, with the recorded prompt id replaced."""
        found = self.answers.get(key)
        if found is None:
            return None
        body = found.body.replace(self.prompt_id.encode(), prompt_id.encode())
        return attrs.evolve(found, body=body)


def _swap_binary(frame: bytes, old: str, new: str) -> bytes:
    """A binary frame with the prompt id replaced in its JSON metadata (event 4 only: the
    other events carry no prompt id); the metadata's length prefix follows."""
    if frame[:4] != (4).to_bytes(4, "big") or len(frame) < 8:
        return frame
    size = int.from_bytes(frame[4:8], "big")
    meta = frame[8 : 8 + size].replace(old.encode(), new.encode())
    return frame[:4] + len(meta).to_bytes(4, "big") + meta + frame[8 + size :]


def _key(method: str, path: str, query: bytes | str, prompt_id: str | None = None) -> str:
    if prompt_id:
        path = path.replace(prompt_id, PROMPT_MARK)
    text = query.decode() if isinstance(query, bytes) else query
    if not text:
        return f"{method} {path}"
    pairs = sorted(parse_qsl(text, keep_blank_values=True))
    return f"{method} {path}?" + "&".join(f"{k}={v}" for k, v in pairs)


def _shape(graph: Mapping[str, Any]) -> tuple[str, ...]:
    return tuple(
        sorted(
            f"{node_id}:{node.get('class_type')}"
            for node_id, node in graph.items()
            if isinstance(node, Mapping)
        )
    )


# ---------------------------------------------------------------------------- recording


def _is_feature_flags(frame: str | bytes) -> bool:
    return isinstance(frame, str) and isinstance(wire.parse_ws_message(frame), wire.FeatureFlagsMsg)


def _is_outcome(frame: str) -> bool:
    """Whether a text frame tells the prompt's outcome (success, error, interrupt)."""
    msg = wire.parse_ws_message(frame)
    if isinstance(msg, wire.ExecutionErrorMsg):
        return msg.data.exception_type != "ExecutionBlocked"  # not terminal
    return isinstance(msg, wire.ExecutionSuccessMsg | wire.ExecutionInterruptedMsg)


@attrs.frozen
class _Exchange:
    """One recorded request to a ComfyUI and its answer."""

    method: str
    path: str
    query: bytes
    answer: Answer


class _RecordingSocket:
    """A client's WebSocket whose received frames are written down, in order."""

    def __init__(self, ws: Any, frames: list[str | bytes]) -> None:
        self._ws = ws
        self._frames = frames

    async def get_message(self) -> str | bytes:
        message: str | bytes = await self._ws.get_message()
        self._frames.append(message)
        return message

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ws, name)


class _RecordingTransport(httpx.AsyncBaseTransport):
    def __init__(self, inner: httpx.AsyncBaseTransport, recorder: _Recorder) -> None:
        self._inner = inner
        self._exchanges = recorder.exchanges
        self._sockets = recorder.sockets
        self._submits = recorder.submits

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.host != API_HOST and request.url.path == "/prompt":
            # Where the submitting client's socket stood when the prompt left: the frames
            # after it (queued, execution...) are the prompt's.
            body = msgspec.json.decode(await request.aread())
            client_id = str(body.get("client_id") or "")
            self._submits[str(body.get("prompt_id"))] = len(self._sockets.get(client_id, ()))
        response = await self._inner.handle_async_request(request)
        if request.url.host == API_HOST:
            return response
        body = await response.aread()
        headers = tuple(
            (k, v) for k, v in response.headers.items() if k.lower() != "content-length"
        )
        url = request.url
        answer = Answer(response.status_code, headers, body)
        self._exchanges.append(_Exchange(request.method, url.path, url.query, answer))
        return httpx.Response(response.status_code, headers=headers, content=body)


class _Recorder:
    """A simulated cloud seen through recording wrappers (what ``open_simulated_conjure``
    needs of a cloud: ``http_transport()``, ``ws_connect``)."""

    def __init__(self, cloud: Any) -> None:
        self._cloud = cloud
        self.exchanges: list[_Exchange] = []
        self.sockets: dict[str, list[str | bytes]] = {}  # client id -> frames received
        self.submits: dict[str, int] = {}  # prompt id -> frames on its socket at POST /prompt

    def http_transport(self) -> httpx.AsyncBaseTransport:
        return _RecordingTransport(self._cloud.http_transport(), self)

    @contextlib.asynccontextmanager
    async def ws_connect(self, url: str) -> AsyncIterator[Any]:
        client_id = parse_qs(urlsplit(url).query).get("clientId", [""])[0]
        frames = self.sockets.setdefault(client_id, [])
        async with self._cloud.ws_connect(url) as ws:
            yield _RecordingSocket(ws, frames)

    def trace(self, job: st.Job, graph: Mapping[str, Any]) -> Trace:
        """The trace of ``job`` (done): its frames and the answers about it."""
        pid = job.prompt_id
        if pid is None or job.client_id is None:
            raise ValueError(f"job {job.job_id} submitted no prompt: nothing to record")
        frames = self.sockets.get(job.client_id, [])
        marks = [
            i
            for i, f in enumerate(frames)
            if pid in (f if isinstance(f, str) else f.decode("latin-1"))
        ]
        if not marks or pid not in self.submits:
            raise ValueError(f"no WebSocket frame of prompt {pid} was received")
        first = min(self.submits[pid], marks[0])
        # The server's feature_flags answer the client's own, sent on connecting: they are
        # the connection's, whenever they arrive.
        flags = [f for f in frames[: marks[-1] + 1] if _is_feature_flags(f)]
        hello = [f for f in frames[:first] if not _is_feature_flags(f)] + flags
        ours = tuple(f for f in frames[first : marks[-1] + 1] if not _is_feature_flags(f))
        ends = [i for i, f in enumerate(ours) if isinstance(f, str) and _is_outcome(f)]
        answers: dict[str, Answer] = {}
        for x in self.exchanges:  # the last answer to each request is the one replayed
            key = _key(x.method, x.path, x.query, pid)
            if key not in _SYNTHESIZED:
                answers[key] = x.answer
        return Trace(
            prompt_id=pid,
            frames=ours,
            answers=answers,
            hello=tuple(hello),
            shape=_shape(graph),
            done_index=ends[0] if ends else -1,
        )


async def record_trace(
    workflow: Mapping[str, Any],
    *,
    out_dir: Path,
    sets: Sequence[str] = (),
    image: bytes | None = None,
    prompt: str | None = None,
    seed: int = 1,
    settings: HarnessSettings | None = None,
    timings: CloudTimings | None = None,
) -> tuple[Trace, st.State]:
    """Run one job of ``workflow`` through the actors against the simulated cloud (in
    memory; call it under a MockClock) and return its trace and the run's final state."""
    # Under autojump, mock time leaps while a worker thread writes an output (every task
    # is blocked, and each leap wakes the next timer: a poll, an accrual, a ping), on a
    # loaded machine far enough for a stall, or a deadline, that is the clock's, not the
    # job's (1 recording in 10 ended "job did not finish within 1200 s"). The live run then
    # differs from any replay: no stalls and no deadlines a leap can reach here.
    day = 86_400.0
    settings = settings or HarnessSettings(
        seed=seed,
        ready_delay=1.0,
        stall_seconds=day,
        ready_timeout=day,
        attempt_timeout=day,
        total_timeout=day,
    )
    timings = timings or CloudTimings(
        runcomfy=RunComfyTimings(ready_delay=settings.ready_delay),
        comfyui=ComfyTimings(scale=0.0),
    )
    wall = TrioWallClock()
    async with open_simulated_cloud(seed=seed, timings=timings, wall=wall.now) as cloud:
        recorder = _Recorder(cloud)
        log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event, sync="none")
        async with open_simulated_conjure(
            recorder,
            log,
            settings.config(cloud),
            wall=wall,
            out_dir=out_dir,
            seed=seed,
            ids=seeded_ids(seed),
        ) as conjure:
            job_id = await conjure.submit(workflow, sets=sets, image=image, prompt=prompt)
            await conjure.wait_until_idle()
            state = conjure.state
            await conjure.shutdown()
    job = state.jobs[job_id]
    if job.status != st.SUCCEEDED:
        raise ValueError(f"the recorded job ended {job.status}: {job.error}")
    graph = msgspec.json.decode(state.workflows[job.workflow_sha256].graph_json)
    return recorder.trace(job, graph), state


_VOLATILE: Final = frozenset(
    {
        "job_id",
        "server_id",
        "prompt_id",
        "client_id",
        "image_path",
        "submitted_at",
        "order",
        "updated_at",
        "finished_at",
        "execution_started_at",
        "started_at",
        "workflow_version",  # the RunComfy machine's: none on an attached ComfyUI
    }
)


def job_outcome(state: st.State, job_id: str) -> dict[str, Any]:
    """A job's whole state but its ids, times, paths and machine (a replay's differ from
    the live run's): status, attempts, execution, every node, inputs, outputs (by file
    name), error, stalls, bindings..."""
    job: dict[str, Any] = msgspec.to_builtins(state.jobs[job_id])
    for key in _VOLATILE:
        del job[key]
    for output in job["outputs"]:
        del output["path"]
    job["outputs"].sort(key=lambda o: (o["node_id"], o["filename"]))
    return job


# ---------------------------------------------------------------------------- replaying


@attrs.define(eq=False)
class _Run:
    """One submitted prompt on a replaying machine."""

    prompt_id: str
    client_id: str | None
    number: int
    trace: Trace
    done: bool = False


class _Socket:
    """A replaying ComfyUI's WebSocket, with the calls the client makes of trio-websocket's
    ``WebSocketConnection`` (``get_message``, ``send_message``, ``ping``, ``aclose``)."""

    def __init__(self, cloud: TraceCloud) -> None:
        self._cloud = cloud
        self._queue: deque[tuple[str | bytes, _Run | None]] = deque()
        self._wakeup = trio.Event()
        self.closed: trio_websocket.CloseReason | None = None

    def push(self, frames: Iterable[str | bytes], run: _Run | None) -> None:
        """Queue ``frames``; ``run`` is finished once its outcome frame has been taken."""
        items: list[tuple[str | bytes, _Run | None]] = [(f, None) for f in frames]
        if run is not None:
            if items:
                at = run.trace.done_index
                items[at] = (items[at][0], run)
            else:
                run.done = True
        self._queue.extend(items)
        self._wakeup.set()

    async def get_message(self) -> str | bytes:
        queue = self._queue
        if queue:
            await trio.lowlevel.checkpoint()
        while not queue or self.closed is not None:
            if self.closed is not None:
                raise trio_websocket.ConnectionClosed(self.closed)
            self._wakeup = trio.Event()
            await self._wakeup.wait()
        message, run = queue.popleft()
        self._cloud.delivered += 1
        if run is not None:
            run.done = True
        return message

    async def send_message(self, message: str | bytes) -> None:
        await trio.lowlevel.checkpoint()

    async def ping(self, payload: bytes | None = None) -> None:
        await trio.lowlevel.checkpoint()

    def close_now(self, code: int = 1001, reason: str = "going away") -> None:
        if self.closed is None:
            self.closed = trio_websocket.CloseReason(code, reason)
            for _, run in self._queue:
                if run is not None:
                    run.done = True  # the prompt finished; its frames went nowhere
            self._wakeup.set()

    async def aclose(self, code: int = 1000, reason: str | None = None) -> None:
        self.close_now(code, reason or "closed")
        await trio.lowlevel.checkpoint()


_EMPTY: Final = Answer(200, (("content-type", "application/json"),), b"{}")
_NOT_FOUND: Final = Answer(404, (("content-type", "application/json"),), b'{"error":"not found"}')


class _Machine:
    """A machine's ComfyUI, replayed from traces: answers HTTP, feeds WebSockets."""

    def __init__(self, cloud: TraceCloud) -> None:
        self._cloud = cloud
        self.sockets: dict[str, _Socket] = {}
        self.runs: dict[str, _Run] = {}
        self._numbers = 0

    def answer(self, method: str, path: str, query: bytes, body: bytes) -> Answer:
        if method == "POST" and path == "/prompt":
            return self._submit(body)
        if method == "GET" and path.startswith("/history/"):
            run = self.runs.get(path[len("/history/") :])
            if run is None or not run.done:
                return _EMPTY
            found = run.trace.answer(f"GET /history/{PROMPT_MARK}", run.prompt_id)
            return found or _EMPTY
        if method == "GET" and path == "/queue":
            return self._queue()
        if path in ("/interrupt", "/queue"):
            return _EMPTY
        key = _key(method, path, query)
        for trace in self._cloud.traces:
            found = trace.answers.get(key)
            if found is not None:
                return found
        return _NOT_FOUND

    def _submit(self, body: bytes) -> Answer:
        data = msgspec.json.decode(body)
        prompt_id = str(data["prompt_id"])
        client_id = data.get("client_id")
        trace = self._cloud.trace_for(data.get("prompt") or {})
        self._numbers += 1
        run = _Run(prompt_id, client_id, self._numbers, trace)
        self.runs[prompt_id] = run
        socket = self.sockets.get(client_id) if client_id else None
        if socket is None:
            run.done = True  # nobody listens: the prompt runs unseen, its history is there
        else:
            socket.push(self._cloud.frames_for(trace, prompt_id), run)
        return trace.answer("POST /prompt", prompt_id) or _EMPTY

    def _queue(self) -> Answer:
        entries = [
            [r.number, r.prompt_id, {}, {"client_id": r.client_id}, []]
            for r in self.runs.values()
            if not r.done
        ]
        body = {"queue_running": entries[:1], "queue_pending": entries[1:]}
        return Answer(200, (("content-type", "application/json"),), msgspec.json.encode(body))

    def stop(self) -> None:
        for socket in self.sockets.values():
            socket.close_now()
        self.sockets.clear()


class _Transport(httpx.AsyncBaseTransport):
    """Routes the RunComfy API to its simulator, a machine's host to its replayer."""

    def __init__(self, cloud: TraceCloud) -> None:
        self._cloud = cloud
        self._api = httpx.ASGITransport(app=cloud.runcomfy.asgi)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.host == API_HOST:
            return await self._api.handle_async_request(request)
        machine = self._cloud.machine_at(url.host)
        if machine is None:
            raise httpx.ConnectError("replayed host is not reachable", request=request)
        body = await request.aread()
        answer = machine.answer(request.method, url.path, url.query, body)
        await trio.lowlevel.checkpoint()
        return httpx.Response(answer.status, headers=answer.headers, content=answer.body)


class TraceCloud:
    """A RunComfy account whose machines replay :class:`Trace` s (see the module docstring).
    Make it with :func:`open_trace_cloud`; ``delivered`` counts the frames handed out."""

    def __init__(
        self,
        nursery: trio.Nursery,
        traces: Sequence[Trace],
        *,
        seed: int = 0,
        wall: Callable[[], float],
        timings: RunComfyTimings | None = None,
        user_id: str = "trace-user",
        token: str = "trace-token",
    ) -> None:
        if not traces:
            raise ValueError("a TraceCloud needs at least one trace")
        self.traces = tuple(traces)
        self._by_shape = {t.shape: t for t in self.traces}
        # Each text frame split at the recorded prompt id, once: a job's frames are then
        # one join per frame (the replayer's own cost is not the pipeline's).
        self._templates: dict[int, list[list[str] | bytes]] = {
            id(t): [f.split(t.prompt_id) if isinstance(f, str) else f for f in t.frames]
            for t in self.traces
        }
        self._nursery = nursery
        self.user_id = user_id
        self.token = token
        self.base_url = f"https://{API_HOST}"
        self.delivered = 0
        self.runcomfy = RunComfySim(
            user_id=user_id,
            tokens=[token],
            seed=seed,
            timings=timings or RunComfyTimings(ready_delay=0.0, rate_per_second=1000, burst=1000),
            wall=wall,
            host=self,
        )
        self._machines: dict[str, _Machine] = {}

    def __repr__(self) -> str:
        return f"TraceCloud(traces={len(self.traces)}, machines={len(self._machines)})"

    def frames_for(self, trace: Trace, prompt_id: str) -> list[str | bytes]:
        """``trace.frames_for(prompt_id)``, from the split frames."""
        old = trace.prompt_id
        return [
            prompt_id.join(f) if isinstance(f, list) else _swap_binary(f, old, prompt_id)
            for f in self._templates[id(trace)]
        ]

    def trace_for(self, graph: Mapping[str, Any]) -> Trace:
        """The trace of the submitted graph's shape (the only one, if there is one)."""
        if len(self.traces) == 1:
            return self.traces[0]
        return self._by_shape.get(_shape(graph), self.traces[0])

    # ------------------------------------------------------------------ the cloud's face

    def http_transport(self) -> httpx.AsyncBaseTransport:
        return _Transport(self)

    @contextlib.asynccontextmanager
    async def ws_connect(self, url: str) -> AsyncIterator[_Socket]:
        parts = urlsplit(url)
        machine = self.machine_at(parts.hostname or "")
        if machine is None:
            raise ConnectionRefusedError("replayed host is not reachable")
        client_id = parse_qs(parts.query).get("clientId", [""])[0]
        socket = _Socket(self)
        machine.sockets[client_id] = socket
        socket.push(self.traces[0].hello, None)
        try:
            yield socket
        finally:
            socket.close_now()
            if machine.sockets.get(client_id) is socket:
                del machine.sockets[client_id]

    def machine_at(self, host: str) -> _Machine | None:
        if not host.endswith(_MACHINE_SUFFIX):
            return None
        return self._machines.get(host[: -len(_MACHINE_SUFFIX)])

    def comfyui(self, name: str) -> str:
        """The URL of a replaying ComfyUI not behind RunComfy (made on first use), to attach:
        ``open_conjure(..., mode="comfyui", attach={name: url})``."""
        if name not in self._machines:
            self._machines[name] = _Machine(self)
        return f"https://{name}{_MACHINE_SUFFIX}"

    # ------------------------------------------------------------------ MachineHost

    async def start_machine(self, server_id: str, workflow_version: str) -> str:
        self._machines[server_id] = _Machine(self)
        await trio.lowlevel.checkpoint()
        return f"https://{server_id}{_MACHINE_SUFFIX}"

    async def stop_machine(self, server_id: str) -> None:
        machine = self._machines.pop(server_id, None)
        if machine is not None:
            machine.stop()
        await trio.lowlevel.checkpoint()


@contextlib.asynccontextmanager
async def open_trace_cloud(
    traces: Sequence[Trace],
    *,
    seed: int = 0,
    wall: Callable[[], float] | None = None,
    timings: RunComfyTimings | None = None,
) -> AsyncIterator[TraceCloud]:
    """A running :class:`TraceCloud` replaying ``traces``; it stops when the block exits.
    ``wall``: the RunComfy API's clock (pass the runtime's, e.g. ``TrioWallClock().now``)."""
    async with trio.open_nursery() as nursery:
        cloud = TraceCloud(
            nursery, traces, seed=seed, wall=wall or TrioWallClock().now, timings=timings
        )
        await nursery.start(cloud.runcomfy.run)
        try:
            yield cloud
        finally:
            nursery.cancel_scope.cancel()
