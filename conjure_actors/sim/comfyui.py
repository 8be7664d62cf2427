"""A faithful ComfyUI server simulator: HTTP routes, WebSocket events, queue, cache, faults.

It imitates ComfyUI 0.3.64 as ``../shared/protocols/comfyui.md`` describes it and as the
captures show it: the same routes (also under ``/api``), the same JSON shapes, the same
WebSocket message types, fields and order, the same quirks (the history race, deleted
prompts that vanish silently, reused client ids that break reconnects, interrupts that are
only checked between nodes and at progress updates, fully cached runs that re-send old file
names).

Serving: :meth:`ComfyUISim.asgi` is a hand-written ASGI 3 app (HTTP + the ``/ws``
websocket), for hypercorn on loopback or ``httpx.ASGITransport`` in memory;
:meth:`ComfyUISim.connect_ws_in_memory` gives a trio-websocket client connection served by the
same handler. :meth:`ComfyUISim.run` is the worker that executes queued prompts.

All waiting is ``trio.sleep``/``sleep_until``, so ``trio.testing.MockClock`` drives the
simulated time.
Every fault is drawn from random generators seeded by ``seed`` (one stream per fault family
so that turning one knob does not reshuffle the others).

The catalogue is the real server's ``/object_info`` (:mod:`conjure_actors.sim.catalog`), that
of the machine image of the server's workflow version (a core-nodes machine lacks the CONJURE
custom node and model files, and refuses a prompt using them);
model-free nodes compute their images for real and model nodes stand in with outputs of the
right type and size (:mod:`conjure_actors.sim.comfyui_nodes`); nodes take the time of a
per-class cost model (:mod:`conjure_actors.sim.timings`), or longer if computing them here
takes longer. ``/view`` honours ``preview``, ``channel`` and ``Range`` like the real handler.

Known simplifications: files live in memory (``input/example.png`` and ``input/sketch.png``
exist from the start, like a fresh install plus the CONJURE default input); the "classic"
cache is modelled (unchanged nodes are not re-run, entries not used by the current prompt
are dropped); subgraph expansion, lazy inputs and ``ExecutionBlocker`` are not.
"""

from __future__ import annotations

import contextlib
import email.message
import hashlib
import heapq
import io
import itertools
import logging
import math
import mimetypes
import posixpath
import random
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, MutableMapping
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

import attrs
import msgspec
import trio
import trio_websocket
from PIL import Image, UnidentifiedImageError

from conjure_actors.sim import ws as simws
from conjure_actors.sim.catalog import image_for, object_info, output_nodes
from conjure_actors.sim.comfyui_nodes import (
    NodeFailure,
    node_function,
    pixels_of,
    progress_steps,
)
from conjure_actors.sim.comfyui_validate import is_link, validate_prompt
from conjure_actors.sim.media import write_png
from conjure_actors.sim.timings import ComfyTimings

__all__ = ["ComfyFaults", "ComfyTimings", "ComfyUISim"]

log = logging.getLogger("conjure_actors.sim.comfyui")

_JSON = dict[str, Any]
_Message = dict[str, Any]

JSON_TYPE: Final = b"application/json; charset=utf-8"
TEXT_TYPE: Final = b"text/plain; charset=utf-8"
ERROR_500: Final = b"500 Internal Server Error\n\nServer got itself in trouble"
WS_NO_UPGRADE: Final = b'400: No WebSocket UPGRADE hdr: None\n Can "Upgrade" only to "WebSocket".'
MAX_HISTORY: Final = 10_000
MAX_UPLOAD: Final = 104_857_600
VERSION: Final = "0.3.64"
#: How the per-prompt cost is spent: validating the POST, taking the prompt from the
#: queue, and writing history after ``execution_success`` (captured: the worker starts
#: ~0.5 ms after the queue ``status``, history follows success by ~1 ms).
PROMPT_COST_SPLIT: Final = (0.5, 1 / 6, 1 / 3)
_LOOPBACK: Final = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})
_OUTPUT_CLASSES: Final = output_nodes()
_ANNOTATION: Final = re.compile(r"^(.*) \[(output|input|temp)\]$")


@attrs.frozen
class ComfyFaults:
    """Fault knobs; every random decision comes from generators seeded by the sim's seed.

    - ``ws_drop_rate``: chance, per frame, that the server drops the socket instead of
      sending; ``ws_drop_after``: drop every socket after this many frames.
    - ``ws_silence_rate``: chance, per socket, that it goes silent (open, answers pings,
      delivers nothing) after ``ws_silent_after`` frames.
    - ``http_429_rate``: chance, per request, that a burst of ``http_429_burst`` 429s starts
      (each with ``Retry-After: retry_after``); ``http_5xx_rate``: chance of a 503 (for a
      request to one of ``http_5xx_paths`` only, if given: ``"/queue"`` fails the lookups
      while the rest answers).
    - ``node_error_rate`` / ``node_error_classes``: nodes that fail at run time.
    - ``history_race_rate``: chance that history is written ``history_race_delay`` s after
      ``execution_success`` (the prompt stays "running" meanwhile).
    - ``restart_during_prompt``: the server restarts while its N-th prompt (1-based) runs.
    - ``slow_download_rate`` / ``slow_download_seconds``; ``truncated_download_rate``: the
      ``/view`` body is cut short (Content-Length still announces the full size).
    - ``gateway_error_after_accept_rate``: chance, per request to one of
      ``gateway_error_paths``, that a gateway in front of ComfyUI (RunComfy's proxy) answers
      one of ``gateway_error_statuses`` (502 or 504; 503 is Envoy's "disconnect/reset before
      headers") AFTER ComfyUI acted on it (the prompt is queued, the image stored).
    """

    ws_drop_rate: float = 0.0
    ws_drop_after: int | None = None
    ws_silence_rate: float = 0.0
    ws_silent_after: int = 0
    http_429_rate: float = 0.0
    http_429_burst: int = 3
    retry_after: float = 1.0
    http_5xx_rate: float = 0.0
    http_5xx_paths: frozenset[str] | None = None
    node_error_rate: float = 0.0
    node_error_classes: frozenset[str] = frozenset()
    history_race_rate: float = 0.0
    history_race_delay: float = 0.05
    restart_during_prompt: int | None = None
    slow_download_rate: float = 0.0
    slow_download_seconds: float = 5.0
    truncated_download_rate: float = 0.0
    gateway_error_after_accept_rate: float = 0.0
    gateway_error_paths: frozenset[str] = frozenset({"/prompt", "/upload/image"})
    gateway_error_statuses: tuple[int, ...] = (502, 504)


@attrs.define(eq=False)
class _Item:
    number: int | float
    prompt_id: str
    prompt: _JSON
    extra_data: _JSON
    outputs: list[str]
    queued_at: float = 0.0
    counter: int | None = None
    """The server's queue counter this POST took (None when the client chose ``number``)."""

    @property
    def client_id(self) -> str | None:
        cid = self.extra_data.get("client_id")
        return str(cid) if cid is not None else None

    def wire(self) -> list[Any]:
        return [self.number, self.prompt_id, self.prompt, self.extra_data, self.outputs]


@attrs.define(eq=False)
class _Conn:
    client_id: str
    send: trio.MemorySendChannel[str | bytes]
    scope: trio.CancelScope
    metadata: bool = False
    frames: int = 0
    silent_from: int | None = None
    dropped: bool = False


@attrs.define(eq=False)
class _CacheEntry:
    outputs: tuple[object, ...]
    ui: _JSON | None


class _Interrupted(Exception):
    pass


class _HttpError(Exception):
    def __init__(self, status: int, body: bytes = b"", content_type: bytes | None = None) -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.content_type = content_type


def _file_number(name: str, at: int) -> int:
    """The number ComfyUI reads in a saved file's ``name`` after the prefix ending at ``at``
    (``invert_00012_.png`` -> 12): the text up to the next ``_``, 0 if not a number."""
    try:
        return int(name[at + 1 :].split("_")[0])
    except ValueError:
        return 0


def _json_bytes(value: object) -> bytes:
    return msgspec.json.encode(value)


def _history_json(entries: list[tuple[str, bytes]]) -> bytes:
    """The JSON object of these ``(prompt id, entry JSON)`` pairs, in order: the bytes
    ``_json_bytes({pid: entry, ...})`` gives for the decoded entries."""
    return b"{" + b",".join(_json_bytes(pid) + b":" + entry for pid, entry in entries) + b"}"


def _frame(kind: str, data: object) -> str:
    return msgspec.json.encode({"type": kind, "data": data}).decode()


class ComfyUISim:
    """One simulated ComfyUI server (see the module docstring)."""

    def __init__(
        self,
        *,
        seed: int = 0,
        faults: ComfyFaults | None = None,
        timings: ComfyTimings | None = None,
        wall: Callable[[], float] = time.time,
        name: str = "comfyui",
        workflow_version: str | None = None,
    ) -> None:
        self.name = name
        #: The workflow version this server's machine runs (``None``: not a RunComfy machine).
        self.workflow_version = workflow_version
        #: Its node classes and model files (see :func:`~conjure_actors.sim.catalog.image_for`).
        self.image = image_for(workflow_version)
        self.faults = faults if faults is not None else ComfyFaults()
        self.timings = timings if timings is not None else ComfyTimings()
        self._wall = wall
        self._seed = seed
        self._rng_ws = random.Random(f"{seed}:ws")
        self._rng_http = random.Random(f"{seed}:http")
        self._rng_nodes = random.Random(f"{seed}:nodes")
        self._rng_names = random.Random(f"{seed}:names")
        self._rng_history = random.Random(f"{seed}:history")
        self.produced: dict[str, bytes] = {}
        self.prompts_run: list[str] = []
        #: How many answers the ``gateway_error_after_accept_rate`` fault replaced.
        self.gateway_errors = 0
        self.restarts = 0
        self._files: dict[str, bytes] = {}
        #: For each (folder, prefix) the files could have been saved with, the highest file
        #: number among them: kept by :meth:`_store` as files are written.
        self._highest: dict[tuple[str, str], int] = {}
        self._store("input/example.png", write_png(64, 64, b"example"))
        self._store("input/sketch.png", write_png(64, 64, b"sketch"))
        self._burst_left = 0
        self._taken = 0
        self._wakeup = trio.Event()
        self._reset_state()

    def _reset_state(self) -> None:
        self._pending: list[tuple[float, str, int, _Item]] = []
        self._seq = itertools.count()
        self._running: _Item | None = None
        #: ``/history``: each finished prompt's entry as its JSON bytes, oldest first (see
        #: :meth:`_remember`).
        self._history: dict[str, bytes] = {}
        self._number = 0
        self._cache: dict[bytes, _CacheEntry] = {}
        self._conns: dict[str, _Conn] = {}
        self._interrupt = False
        self._last_node: str | None = None
        self._exec_scope: trio.CancelScope | None = None
        self._idle_since = 0.0
        self._budget = 0.0
        self._changed_counter = itertools.count()

    # ------------------------------------------------------------------ state helpers

    def restart(self) -> None:
        """Fault: the server restarts, forgetting queue, history, cache, temp files, sockets."""
        self.restarts += 1
        if self._exec_scope is not None:
            self._exec_scope.cancel()
        conns = list(self._conns.values())
        for conn in conns:
            conn.scope.cancel()
        kept = {k: v for k, v in self._files.items() if not k.startswith("temp/")}
        self._files, self._highest = {}, {}
        for path, data in kept.items():
            self._store(path, data)
        self._reset_state()

    def add_input(self, name: str, data: bytes, subfolder: str = "") -> None:
        """Put a file in the simulated ``input/`` folder (as if uploaded earlier)."""
        self._store(posixpath.normpath(posixpath.join("input", subfolder, name)), data)

    def add_file(self, path: str, data: bytes) -> None:
        """Put a file at ``path`` (``output/...``, ``temp/...``): left by earlier runs."""
        self._store(posixpath.normpath(path), data)

    def _store(self, path: str, data: bytes) -> None:
        """Write a file (``path`` normalised) and note its number for each prefix it could
        have been saved with (``a_b_00003_.png``: 3 for ``a_b``, 0 for ``a``)."""
        self._files[path] = data
        folder, name = posixpath.split(path)
        for at, char in enumerate(name):
            if char == "_":
                key = (folder, name[:at])
                self._highest[key] = max(self._highest.get(key, 0), _file_number(name, at))

    @property
    def queue_remaining(self) -> int:
        return len(self._pending) + (1 if self._running is not None else 0)

    def _queue_info(self) -> _JSON:
        return {"exec_info": {"queue_remaining": self.queue_remaining}}

    def _now_ms(self) -> int:
        return int(self._wall() * 1000)

    # ------------------------------------------------------------------ event fan-out

    def _deliver(self, conn: _Conn, message: str | bytes) -> None:
        with contextlib.suppress(
            trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError
        ):
            conn.send.send_nowait(message)

    def _send(self, kind: str, data: object, sid: str | None) -> None:
        """Queue one JSON frame for ``sid`` (or every socket when ``sid`` is None).

        ``data`` is encoded here, before this returns, so a caller may keep mutating it; it is
        not encoded at all when no socket would receive it."""
        if sid is None:
            conns = list(self._conns.values())
        else:
            conn = self._conns.get(sid)
            conns = [] if conn is None else [conn]
        if conns:
            text = _frame(kind, data)
            for each in conns:
                self._deliver(each, text)

    def _send_binary(self, data: bytes, sid: str | None) -> None:
        if sid is None:
            for each in list(self._conns.values()):
                self._deliver(each, data)
        else:
            conn = self._conns.get(sid)
            if conn is not None:
                self._deliver(conn, data)

    def _send_client(self, kind: str, data: object, sid: str | None) -> None:
        """Queue a frame meant for the prompt's client only (nobody if it has none)."""
        if sid is not None:
            self._send(kind, data, sid)

    def _queue_updated(self) -> None:
        self._send("status", {"status": self._queue_info()}, None)

    # ------------------------------------------------------------------ the worker

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Execute queued prompts one at a time, lowest ``number`` first, until cancelled."""
        task_status.started()
        while True:
            while not self._pending:
                self._wakeup = trio.Event()
                await self._wakeup.wait()
            _, _, _, item = heapq.heappop(self._pending)
            self._running = item
            self._taken += 1
            ordinal = self._taken
            with trio.CancelScope() as scope:
                self._exec_scope = scope
                await self._execute(item, ordinal)
            if scope.cancelled_caught:
                log.info("%s: prompt %s lost to a restart", self.name, item.prompt_id)
            self._exec_scope = None
            self._idle_since = trio.current_time()
            await trio.lowlevel.checkpoint()

    def _signatures(self, item: _Item) -> dict[str, bytes]:
        """Cache keys: class + literal inputs + the keys of linked ancestors (recursively)."""
        prompt = item.prompt
        sigs: dict[str, bytes] = {}
        visiting: set[str] = set()

        def sig(node_id: str) -> bytes:
            if node_id in sigs:
                return sigs[node_id]
            node = prompt.get(node_id)
            if not isinstance(node, dict) or node_id in visiting:
                return b"missing-or-cycle:" + node_id.encode()
            visiting.add(node_id)
            h = hashlib.sha256(str(node.get("class_type")).encode())
            inputs = node.get("inputs", {})
            for name in sorted(inputs):
                value = inputs[name]
                if is_link(value):
                    h.update(f"|{name}->{value[1]}:".encode() + sig(str(value[0])))
                else:
                    h.update(f"|{name}={value!r}".encode())
            cls = node.get("class_type")
            if cls == "LoadImage":  # IS_CHANGED hashes the file
                data = self._read_input(str(inputs.get("image", ""))) or b""
                h.update(hashlib.sha256(data).digest())
            elif cls == "SaveImageWebsocket":  # IS_CHANGED returns the time: never cached
                h.update(str(next(self._changed_counter)).encode())
            visiting.discard(node_id)
            sigs[node_id] = h.digest()
            return sigs[node_id]

        for node_id in prompt:
            sig(node_id)
        return sigs

    def _plan(
        self, item: _Item, cached: set[str]
    ) -> tuple[dict[str, None], dict[str, int], dict[str, dict[str, None]]]:
        """ComfyUI's ExecutionList: pending nodes, block counts and who-blocks-whom."""
        prompt = item.prompt
        pending: dict[str, None] = {}
        block: dict[str, int] = {}
        blocking: dict[str, dict[str, None]] = {}

        def add_node(root: str) -> None:
            stack = [root]
            links: list[tuple[str, str]] = []
            while stack:
                node_id = stack.pop()
                if node_id in pending:
                    continue
                pending[node_id] = None
                block[node_id] = 0
                blocking[node_id] = {}
                for value in prompt[node_id]["inputs"].values():
                    if is_link(value):
                        src = str(value[0])
                        if src not in cached:
                            stack.append(src)
                        links.append((src, node_id))
            for src, dst in links:
                if src in cached:
                    continue
                if dst not in blocking[src]:
                    blocking[src][dst] = None
                    block[dst] += 1

        for out in item.outputs:
            add_node(out)
        return pending, block, blocking

    def _pick(
        self, prompt: _JSON, available: list[str], blocking: dict[str, dict[str, None]]
    ) -> str:
        """``ux_friendly_pick_node``: outputs first, then nodes one or two steps before one."""

        def is_output(node_id: str) -> bool:
            return prompt[node_id]["class_type"] in _OUTPUT_CLASSES

        for node_id in available:
            if is_output(node_id):
                return node_id
        for node_id in available:
            if any(is_output(b) for b in blocking[node_id]):
                return node_id
        for node_id in available:
            if any(is_output(b1) for b in blocking[node_id] for b1 in blocking[b]):
                return node_id
        return available[0]

    def _node_state(self, item: _Item, node_id: str, value: float, mx: float, state: str) -> _JSON:
        return {
            "value": value,
            "max": mx,
            "state": state,
            "node_id": node_id,
            "prompt_id": item.prompt_id,
            "display_node_id": node_id,
            "parent_node_id": None,
            "real_node_id": node_id,
        }

    async def _execute(self, item: _Item, ordinal: int) -> None:
        """Run one prompt, sending the captured frame sequence; write history at the end."""
        sid = item.client_id
        pid = item.prompt_id
        self.prompts_run.append(pid)
        self._interrupt = False
        self._last_node = None
        self._queue_updated()
        messages: list[list[Any]] = []
        outputs_ui: _JSON = {}
        meta: _JSON = {}

        def record(kind: str, data: _JSON, broadcast_if_no_client: bool = False) -> None:
            messages.append([kind, data])
            if sid is not None or broadcast_if_no_client:
                self._send(kind, data, sid)

        # The prompt's time budget runs from the POST (or the previous prompt's end) and
        # grows by each modelled duration; every wait is "until the budget", so the time this
        # simulator really spends (Python, numpy, encoding, frames) counts towards the model:
        # a prompt takes the model's time, or longer only if the real work is longer.
        self._budget = max(item.queued_at, self._idle_since)
        await self._spend(self.timings.prompt_seconds() * PROMPT_COST_SPLIT[1])
        await self._spend(self.timings.pause_seconds(item.counter))
        record("execution_start", {"prompt_id": pid, "timestamp": self._now_ms()})
        sigs = self._signatures(item)
        used = set(sigs.values())
        dropped = [v for k, v in self._cache.items() if k not in used]
        self._cache = {k: v for k, v in self._cache.items() if k in used}  # clean_unused
        # Freeing big outputs is what delays execution_cached on the real server (9.5 and
        # 7.2 ms after an interrupted 4x1024x1024 blur chain, ws_queue_and_interrupt.jsonl
        # and ws_queue_shape.jsonl); before execution_start, every tenth prompt waits for
        # the worker's pause (ComfyTimings.pause_seconds).
        freed = sum(pixels_of({str(i): v for i, v in enumerate(e.outputs)}) for e in dropped)
        await self._spend(self.timings.free_seconds(freed))
        cached = {n for n, s in sigs.items() if s in self._cache}
        record(
            "execution_cached",
            {
                "nodes": [n for n in item.prompt if n in cached],
                "prompt_id": pid,
                "timestamp": self._now_ms(),
            },
        )
        values: dict[str, tuple[object, ...]] = {n: self._cache[sigs[n]].outputs for n in cached}
        progress: dict[str, _JSON] = {}
        executed: list[str] = []
        pending, block, blocking = self._plan(item, cached)
        status_str, completed = "success", True

        def send_progress_state() -> None:
            # _send encodes the frame at once: the nodes as they are now, no copy needed.
            self._send("progress_state", {"prompt_id": pid, "nodes": progress}, sid)

        try:
            while pending:
                available = [n for n in pending if block[n] == 0]
                if not available:
                    node_id = next(iter(pending))
                    raise NodeFailure(
                        "comfy_execution.graph.DependencyCycleError", "Dependency cycle detected"
                    ) from _CycleMarker(node_id)
                node_id = self._pick(item.prompt, available, blocking)
                node = item.prompt[node_id]
                if node_id in cached:
                    entry = self._cache[sigs[node_id]]
                    if entry.ui is not None:
                        if sid is not None:
                            self._send(
                                "executed",
                                {
                                    "node": node_id,
                                    "display_node": node_id,
                                    "output": entry.ui,
                                    "prompt_id": pid,
                                },
                                sid,
                            )
                        outputs_ui[node_id] = entry.ui
                        meta[node_id] = self._meta(node_id)
                    progress[node_id] = self._node_state(item, node_id, 1, 1, "finished")
                    send_progress_state()
                else:
                    await self._run_node(
                        item,
                        node_id,
                        node,
                        values,
                        progress,
                        send_progress_state,
                        outputs_ui,
                        meta,
                        sigs,
                    )
                executed.append(node_id)
                del pending[node_id]
                for blocked in blocking[node_id]:
                    block[blocked] -= 1
                if self.faults.restart_during_prompt == ordinal:
                    self.restart()
                    await trio.lowlevel.checkpoint()
            record("execution_success", {"prompt_id": pid, "timestamp": self._now_ms()})
        except _Interrupted:
            status_str, completed = "error", False
            node_id = self._last_node or ""
            record(
                "execution_interrupted",
                {
                    "prompt_id": pid,
                    "node_id": node_id,
                    "node_type": item.prompt.get(node_id, {}).get("class_type", ""),
                    "executed": [n for n in executed if n not in cached],
                    "timestamp": self._now_ms(),
                },
                broadcast_if_no_client=True,
            )
        except NodeFailure as failure:
            status_str, completed = "error", False
            node_id = self._last_node or ""
            if isinstance(failure.__cause__, _CycleMarker):
                node_id = failure.__cause__.node_id
            node = item.prompt.get(node_id, {})
            record(
                "execution_error",
                {
                    "prompt_id": pid,
                    "node_id": node_id,
                    "node_type": node.get("class_type", ""),
                    "executed": [n for n in executed if n not in cached],
                    "exception_message": failure.message,
                    "exception_type": failure.exception_type,
                    "traceback": [
                        '  File "/srv/comfyui/execution.py", line 496, in execute\n'
                        "    output_data, output_ui, has_subgraph, has_pending_tasks = "
                        "await get_output_data(...)\n"
                    ],
                    "current_inputs": {
                        k: [v] for k, v in node.get("inputs", {}).items() if not is_link(v)
                    },
                    "current_outputs": list(item.prompt),
                    "timestamp": self._now_ms(),
                },
            )
        if (
            status_str == "success"
            and self.faults.history_race_rate > 0
            and self._rng_history.random() < self.faults.history_race_rate
        ):
            # The real race: execution_success is out, the worker has not written history yet.
            await trio.sleep(self.faults.history_race_delay)
        # task_done: the gap between execution_success and the history write (about 1 ms
        # on the captured server, captures/history_race_stats_idle.json).
        await self._spend(self.timings.prompt_seconds() * PROMPT_COST_SPLIT[2])
        self._task_done(item, outputs_ui, meta, status_str, completed, messages)
        self._queue_updated()
        self._send_client("executing", {"node": None, "prompt_id": pid}, sid)
        self._last_node = None

    async def _spend(self, seconds: float) -> None:
        """Wait until the running prompt's time budget, grown by ``seconds``."""
        self._budget += seconds
        await trio.sleep_until(self._budget)

    def _meta(self, node_id: str) -> _JSON:
        return {
            "node_id": node_id,
            "display_node": node_id,
            "parent_node": None,
            "real_node_id": node_id,
        }

    def _task_done(
        self,
        item: _Item,
        outputs_ui: _JSON,
        meta: _JSON,
        status_str: str,
        completed: bool,
        messages: list[list[Any]],
    ) -> None:
        self._running = None
        self._remember(
            item.prompt_id,
            {
                "prompt": item.wire(),
                "outputs": outputs_ui,
                "status": {"status_str": status_str, "completed": completed, "messages": messages},
                "meta": meta,
            },
        )

    def _remember(self, prompt_id: str, entry: _JSON) -> None:
        """Write ``prompt_id``'s ``/history`` entry, forgetting the oldest beyond MAX_HISTORY.

        The entry is kept as its JSON bytes, not as the dicts and lists it is made of: the
        garbage collector neither tracks nor walks bytes, so the 10,000 entries a long run
        keeps cost a full collection nothing (a dict entry is ~22 tracked objects, and every
        full collection scanned them all). A ``GET /history`` splices the stored bytes into
        its answer, which is byte for byte what encoding the entries would give."""
        if len(self._history) >= MAX_HISTORY:
            self._history.pop(next(iter(self._history)))
        self._history.pop(prompt_id, None)
        self._history[prompt_id] = _json_bytes(entry)

    async def _run_node(
        self,
        item: _Item,
        node_id: str,
        node: _JSON,
        values: dict[str, tuple[object, ...]],
        progress: dict[str, _JSON],
        send_progress_state: Callable[[], None],
        outputs_ui: _JSON,
        meta: _JSON,
        sigs: dict[str, bytes],
    ) -> None:
        sid = item.client_id
        pid = item.prompt_id
        class_type = node["class_type"]
        progress[node_id] = self._node_state(item, node_id, 0.0, 1.0, "running")
        send_progress_state()
        self._last_node = node_id
        self._send_client(
            "executing", {"node": node_id, "display_node": node_id, "prompt_id": pid}, sid
        )
        if self._interrupt:  # before_node_execution
            raise _Interrupted
        resolved: dict[str, Any] = {}
        for name, value in node["inputs"].items():
            if is_link(value):
                resolved[name] = values[str(value[0])][int(value[1])]
            else:
                resolved[name] = value
        info = self.image.object_info[class_type]
        own = self.timings.node_seconds(class_type, pixels_of(resolved), info["category"])
        if class_type in self.faults.node_error_classes or (
            self.faults.node_error_rate > 0
            and self._rng_nodes.random() < self.faults.node_error_rate
        ):
            await self._spend(own / 2)
            raise NodeFailure(
                "torch.OutOfMemoryError",
                f"Allocation on device 0 would exceed allowed memory (simulated, {class_type})",
            )
        steps = self.timings.progress_steps.get(class_type) or progress_steps(class_type, resolved)
        ctx = _Context(self, item, steps)
        fn = node_function(class_type, info["output"])
        outputs, ui = fn(node_id, resolved, ctx, sigs[node_id])
        await self._spend(own)
        if steps and class_type != "SaveImageWebsocket":
            for step in range(1, steps + 1):
                await self._spend(self.timings.step_seconds(class_type))
                self._progress(item, node_id, step, steps, progress, send_progress_state)
        for step, png in ctx.images:
            await self._spend(self.timings.step_seconds(class_type))
            self._progress(item, node_id, step, steps, progress, send_progress_state, png)
        values[node_id] = outputs
        self._cache[sigs[node_id]] = _CacheEntry(outputs, ui)
        if ui is not None:
            outputs_ui[node_id] = ui
            meta[node_id] = self._meta(node_id)
            if sid is not None:
                self._send(
                    "executed",
                    {"node": node_id, "display_node": node_id, "output": ui, "prompt_id": pid},
                    sid,
                )
        mx = float(steps) if steps else 1.0
        progress[node_id] = self._node_state(item, node_id, steps or 1.0, mx, "finished")
        if steps:
            progress[node_id]["value"] = steps
            progress[node_id]["max"] = steps
        send_progress_state()

    def _progress(
        self,
        item: _Item,
        node_id: str,
        value: int,
        mx: int,
        progress: dict[str, _JSON],
        send_progress_state: Callable[[], None],
        png: bytes | None = None,
    ) -> None:
        """One progress step: progress_state, progress, preview (order as captured)."""
        sid = item.client_id
        progress[node_id] = self._node_state(item, node_id, value, mx, "running")
        send_progress_state()
        if self._interrupt:
            raise _Interrupted
        progress_frame = {"value": value, "max": mx, "prompt_id": item.prompt_id, "node": node_id}
        conn = self._conns.get(sid) if sid is not None else None
        if png is not None and conn is not None and conn.metadata:
            meta = msgspec.json.encode(
                {
                    "node_id": node_id,
                    "prompt_id": item.prompt_id,
                    "display_node_id": node_id,
                    "parent_node_id": None,
                    "real_node_id": node_id,
                    "image_type": "image/png",
                }
            )
            self._send_binary(
                (4).to_bytes(4, "big") + len(meta).to_bytes(4, "big") + meta + png, sid
            )
            self._send("progress", progress_frame, sid)
        else:
            self._send("progress", progress_frame, sid)
            if png is not None:
                self._send_binary((1).to_bytes(4, "big") + (2).to_bytes(4, "big") + png, sid)

    # ------------------------------------------------------------------ files

    def _read_input(self, name: str) -> bytes | None:
        kind = "input"
        m = _ANNOTATION.match(name)
        if m:
            name, kind = m.group(1), m.group(2)
        path = posixpath.normpath(posixpath.join(kind, name))
        if not path.startswith(kind + "/"):
            return None
        return self._files.get(path)

    def _counter(self, kind: str, subfolder: str, prefix: str) -> int:
        """The number of the next file ``prefix`` saves in ``kind/subfolder``.

        ComfyUI's ``get_save_image_path`` lists the folder at each save: one more than the
        highest number among the files named ``<prefix>_<number>...`` (1 if none). Here that
        figure is kept as files are written (:meth:`_store`), so a save costs the same however
        many files the folder holds."""
        folder = posixpath.normpath(posixpath.join(kind, subfolder))  # "output/" -> "output"
        return self._highest.get((folder, prefix), 0) + 1

    # ------------------------------------------------------------------ ASGI entry point

    async def asgi(
        self,
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[MutableMapping[str, Any]]],
        send: Callable[[MutableMapping[str, Any]], Awaitable[None]],
    ) -> None:
        """ASGI 3 application: every HTTP route (also under ``/api``) and ``/ws``."""
        kind = scope["type"]
        if kind == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        path = self._strip_api(scope["path"])
        if kind == "websocket":
            sock = simws.AsgiServerSocket(receive, send)
            if path != "/ws":
                await receive()
                await send({"type": "websocket.close", "code": 1008})
                return
            if await sock.accept():
                query = scope.get("query_string", b"").decode("latin-1")
                await self._serve_ws(sock, "/ws?" + query if query else "/ws")
            return
        if kind != "http":
            return
        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        headers = {
            k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])
        }
        query = {
            k: v[-1]
            for k, v in parse_qs(
                scope.get("query_string", b"").decode(), keep_blank_values=True
            ).items()
        }
        try:
            status, payload, content_type, extra = await self._http(
                scope["method"], path, query, headers, body
            )
        except _HttpError as err:
            status, payload, content_type, extra = err.status, err.body, err.content_type, []
        response_headers: list[tuple[bytes, bytes]] = []
        if content_type is not None:
            response_headers.append((b"content-type", content_type))
        declared = len(payload)
        for name, value in extra:
            if name == b"x-sim-declared-length":
                declared = int(value)
            else:
                response_headers.append((name, value))
        response_headers.append((b"content-length", str(declared).encode()))
        await send({"type": "http.response.start", "status": status, "headers": response_headers})
        await send({"type": "http.response.body", "body": payload, "more_body": False})

    @staticmethod
    def _strip_api(path: str) -> str:
        if path == "/api" or path.startswith("/api/"):
            return path[4:] or "/"
        return path

    # ------------------------------------------------------------------ HTTP

    def _http_faults(self, path: str) -> None:
        f = self.faults
        if self._burst_left > 0:
            self._burst_left -= 1
            raise _HttpError(429, b"429: Too Many Requests", TEXT_TYPE)
        if f.http_429_rate > 0 and self._rng_http.random() < f.http_429_rate:
            self._burst_left = max(0, f.http_429_burst - 1)
            raise _HttpError(429, b"429: Too Many Requests", TEXT_TYPE)
        if (
            f.http_5xx_rate > 0
            and (f.http_5xx_paths is None or path in f.http_5xx_paths)
            and self._rng_http.random() < f.http_5xx_rate
        ):
            raise _HttpError(503, b"503: Service Unavailable", TEXT_TYPE)

    async def _http(
        self, method: str, path: str, query: dict[str, str], headers: dict[str, str], body: bytes
    ) -> tuple[int, bytes, bytes | None, list[tuple[bytes, bytes]]]:
        origin = headers.get("origin")
        host = headers.get("host")
        if origin and host:
            host_name = (
                host.rsplit(":", 1)[0] if not host.startswith("[") else host.split("]")[0] + "]"
            )
            origin_name = urlsplit(origin).hostname or ""
            if host_name in _LOOPBACK and origin_name != host_name.strip("[]"):
                return 403, b"", None, []
        try:
            self._http_faults(path)
        except _HttpError as err:
            extra = (
                [(b"retry-after", f"{self.faults.retry_after:g}".encode())]
                if err.status == 429
                else []
            )
            return err.status, err.body, err.content_type, extra
        route = (method, path)
        if route == ("GET", "/prompt"):
            return self._ok(self._queue_info())
        if route == ("POST", "/prompt"):
            # Validation takes its share of the per-prompt cost before the answer.
            await trio.sleep(self.timings.prompt_seconds() * PROMPT_COST_SPLIT[0])
            return self._gateway_after(path, self._post_prompt(body))
        if route == ("GET", "/queue"):
            return self._ok(
                {
                    "queue_running": [self._running.wire()] if self._running else [],
                    "queue_pending": [entry[3].wire() for entry in self._pending],
                }
            )
        if route == ("POST", "/queue"):
            return self._post_queue(body)
        if route == ("POST", "/interrupt"):
            return self._post_interrupt(body)
        if route == ("GET", "/history"):
            return 200, self._get_history(query), JSON_TYPE, []
        if method == "GET" and path.startswith("/history/"):
            pid = path[len("/history/") :]
            entry = self._history.get(pid)
            return 200, _history_json([(pid, entry)] if entry is not None else []), JSON_TYPE, []
        if route == ("POST", "/history"):
            return self._post_history(body)
        if route == ("GET", "/view"):
            return await self._view(query, headers)
        if route == ("POST", "/upload/image"):
            return self._gateway_after(path, self._upload(headers, body))
        if route == ("GET", "/system_stats"):
            return self._ok(self._system_stats())
        if route == ("GET", "/object_info"):
            return self._ok(object_info(self._input_files(), catalog=self.image.object_info))
        if method == "GET" and path.startswith("/object_info/"):
            only = path[len("/object_info/") :]
            return self._ok(object_info(self._input_files(), only, catalog=self.image.object_info))
        if route == ("GET", "/features"):
            return self._ok({"supports_preview_metadata": True, "max_upload_size": MAX_UPLOAD})
        if route == ("POST", "/free"):
            return 200, b"", None, []
        if route == ("GET", "/embeddings"):
            return self._ok([])
        if route == ("GET", "/extensions"):
            return self._ok([])
        if route == ("GET", "/models"):
            return self._ok(sorted(self.image.model_files))
        if method == "GET" and path.startswith("/models/"):
            files = self.image.model_files.get(path[len("/models/") :])
            if files is None:
                return 404, b"404: Not Found", TEXT_TYPE, []
            return self._ok(sorted(files))
        if route == ("GET", "/ws"):
            # aiohttp's WebSocketResponse.prepare on a plain GET (no Upgrade header).
            return 400, WS_NO_UPGRADE, TEXT_TYPE, []
        known = {"/prompt", "/queue", "/interrupt", "/history", "/view", "/upload/image"}
        if path in known:
            return 405, b"405: Method Not Allowed", TEXT_TYPE, []
        return 404, b"404: Not Found", TEXT_TYPE, []

    def _gateway_after(
        self, path: str, answer: tuple[int, bytes, bytes | None, list[tuple[bytes, bytes]]]
    ) -> tuple[int, bytes, bytes | None, list[tuple[bytes, bytes]]]:
        """ComfyUI's ``answer``, or (fault) the gateway's 5xx that replaced it: ComfyUI has
        acted all the same."""
        f = self.faults
        if (
            f.gateway_error_after_accept_rate > 0
            and path in f.gateway_error_paths
            and self._rng_http.random() < f.gateway_error_after_accept_rate
        ):
            status = self._rng_http.choice(f.gateway_error_statuses)
            self.gateway_errors += 1
            page = f"<html><body><h1>{status} Gateway Error</h1></body></html>".encode()
            return status, page, b"text/html", []
        return answer

    @staticmethod
    def _ok(value: object) -> tuple[int, bytes, bytes | None, list[tuple[bytes, bytes]]]:
        return 200, _json_bytes(value), JSON_TYPE, []

    def _input_files(self) -> list[str]:
        return [k[len("input/") :] for k in self._files if k.startswith("input/")]

    def _system_stats(self) -> _JSON:
        ram = 25_276_510_208
        return {
            "system": {
                "os": "posix",
                "ram_total": ram,
                "ram_free": ram - 1_087_430_656,
                "comfyui_version": VERSION,
                "required_frontend_version": "1.27.10",
                "installed_templates_version": "0.1.95",
                "required_templates_version": "0.1.95",
                "python_version": "3.11.7 (main, May  9 2026, 07:35:25) [GCC 12.2.0]",
                "pytorch_version": "2.13.0+cpu",
                "embedded_python": False,
                "argv": [
                    "main.py",
                    "--cpu",
                    "--listen",
                    "127.0.0.1",
                    "--port",
                    "8188",
                    "--disable-auto-launch",
                ],
            },
            "devices": [
                {
                    "name": "cpu",
                    "type": "cpu",
                    "index": None,
                    "vram_total": ram,
                    "vram_free": ram - 1_087_430_656,
                    "torch_vram_total": ram,
                    "torch_vram_free": ram - 1_087_430_656,
                }
            ],
        }

    def _post_prompt(
        self, body: bytes
    ) -> tuple[int, bytes, bytes | None, list[tuple[bytes, bytes]]]:
        try:
            data = msgspec.json.decode(body)
        except msgspec.DecodeError:
            return 500, ERROR_500, TEXT_TYPE, []
        if not isinstance(data, dict):
            return 500, ERROR_500, TEXT_TYPE, []
        counter: int | None = None
        if "number" in data:
            try:
                number: int | float = float(data["number"])
            except (TypeError, ValueError):
                return 500, ERROR_500, TEXT_TYPE, []
        else:
            number = counter = self._number
            if data.get("front"):
                number = -number
            self._number += 1
        if "prompt" not in data:
            return self._bad_prompt("no_prompt", "No prompt provided", "No prompt provided")
        prompt = data["prompt"]
        partial = data.get("partial_execution_targets")
        try:
            outcome = validate_prompt(
                prompt,
                catalog=self.image.object_info,
                output_classes=_OUTPUT_CLASSES,
                custom={"LoadImage": self._validate_load_image},
                partial_targets=[str(p) for p in partial] if isinstance(partial, list) else None,
            )
        except (AttributeError, TypeError):
            return 500, ERROR_500, TEXT_TYPE, []
        if not outcome.ok:
            return (
                400,
                _json_bytes({"error": outcome.error, "node_errors": outcome.node_errors}),
                JSON_TYPE,
                [],
            )
        prompt_id = str(data["prompt_id"]) if "prompt_id" in data else str(uuid.uuid4())
        extra_data = data.get("extra_data") or {}
        if not isinstance(extra_data, dict):
            extra_data = {}
        extra_data = {
            k: v
            for k, v in extra_data.items()
            if k not in ("auth_token_comfy_org", "api_key_comfy_org")
        }
        if "client_id" in data:
            extra_data["client_id"] = data["client_id"]
        item = _Item(
            number,
            prompt_id,
            prompt,
            extra_data,
            outcome.good_outputs,
            trio.current_time(),
            counter,
        )
        heapq.heappush(self._pending, (number, prompt_id, next(self._seq), item))
        self._wakeup.set()
        self._queue_updated()
        return self._ok(
            {"prompt_id": prompt_id, "number": number, "node_errors": outcome.node_errors}
        )

    def _validate_load_image(self, name: str, value: object) -> str | bool:
        if name != "image":
            return True
        if self._read_input(str(value)) is None:
            return f"Invalid image file: {value}"
        return True

    @staticmethod
    def _bad_prompt(
        kind: str, message: str, details: str
    ) -> tuple[int, bytes, bytes | None, list[tuple[bytes, bytes]]]:
        body = {
            "error": {"type": kind, "message": message, "details": details, "extra_info": {}},
            "node_errors": {},
        }
        return 400, _json_bytes(body), JSON_TYPE, []

    def _json_body(self, body: bytes) -> Any:
        if not body:
            return {}
        try:
            return msgspec.json.decode(body)
        except msgspec.DecodeError as exc:
            raise _HttpError(500, ERROR_500, TEXT_TYPE) from exc

    def _post_queue(
        self, body: bytes
    ) -> tuple[int, bytes, bytes | None, list[tuple[bytes, bytes]]]:
        data = self._json_body(body)
        if not isinstance(data, dict):
            return 500, ERROR_500, TEXT_TYPE, []
        if data.get("clear"):
            self._pending.clear()
            self._queue_updated()
        for pid in data.get("delete", []) or []:
            before = len(self._pending)
            self._pending = [e for e in self._pending if e[1] != pid]
            if len(self._pending) != before:
                heapq.heapify(self._pending)
                self._queue_updated()
        return 200, b"", None, []

    def _post_interrupt(
        self, body: bytes
    ) -> tuple[int, bytes, bytes | None, list[tuple[bytes, bytes]]]:
        # The real handler reads a body that is not JSON as ``{}``: a global interrupt.
        try:
            data = msgspec.json.decode(body) if body else {}
        except msgspec.DecodeError:
            data = {}
        pid = data.get("prompt_id") if isinstance(data, dict) else None
        if pid is None or (self._running is not None and self._running.prompt_id == pid):
            self._interrupt = True
        else:
            log.info("%s: prompt %s is not currently running", self.name, pid)
        return 200, b"", None, []

    def _get_history(self, query: dict[str, str]) -> bytes:
        """``GET /history``'s JSON: the entries from ``offset`` (the last ``max_items``
        when no offset is given), at most ``max_items`` of them, oldest first."""
        max_items = int(query["max_items"]) if query.get("max_items") else None
        offset = int(query["offset"]) if query.get("offset") else -1
        if offset < 0 and max_items is not None:
            offset = len(self._history) - max_items
        out: list[tuple[str, bytes]] = []
        for i, (k, v) in enumerate(self._history.items()):
            if i >= offset:
                out.append((k, v))
                if max_items is not None and len(out) >= max_items:
                    break
        return _history_json(out)

    def _post_history(
        self, body: bytes
    ) -> tuple[int, bytes, bytes | None, list[tuple[bytes, bytes]]]:
        data = self._json_body(body)
        if isinstance(data, dict):
            if data.get("clear"):
                self._history.clear()
            for pid in data.get("delete", []) or []:
                self._history.pop(pid, None)
        return 200, b"", None, []

    async def _view(
        self, query: dict[str, str], headers: Mapping[str, str]
    ) -> tuple[int, bytes, bytes | None, list[tuple[bytes, bytes]]]:
        filename = query.get("filename")
        if filename is None:
            return 404, b"", None, []
        kind: str | None = None
        m = _ANNOTATION.match(filename)
        if m:
            filename, kind = m.group(1), m.group(2)
        if not filename or filename.startswith("/") or ".." in filename:
            return 400, b"", None, []
        if kind is None:
            kind = query.get("type", "output")
        if kind not in ("output", "input", "temp"):
            return 400, b"", None, []
        folder = kind
        if "subfolder" in query:
            folder = posixpath.normpath(posixpath.join(kind, query["subfolder"]))
            if folder != kind and not folder.startswith(kind + "/"):
                return 403, b"", None, []
        name = posixpath.basename(filename)
        data = self._files.get(posixpath.join(folder, name))
        if data is None:
            return 404, b"", None, []
        f = self.faults
        if f.slow_download_rate > 0 and self._rng_http.random() < f.slow_download_rate:
            await trio.sleep(f.slow_download_seconds)
        extra = [(b"content-disposition", f'filename="{name}"'.encode())]
        channel = query.get("channel", "")
        if "preview" in query or channel in ("rgb", "a"):
            try:
                body, content_type = view_image(data, query.get("preview"), channel)
            except (UnidentifiedImageError, OSError, ValueError):
                return 500, ERROR_500, TEXT_TYPE, []  # Image.open raised in the handler
            return 200, body, content_type.encode(), extra
        # web.FileResponse: the file as it is, with byte ranges.
        status = 200
        extra.append((b"accept-ranges", b"bytes"))
        wanted = headers.get("range")
        if wanted is not None:
            span = _byte_range(wanted, len(data))
            if span is None:
                extra.append((b"content-range", f"bytes */{len(data)}".encode()))
                return 416, b"", None, extra
            start, end = span
            extra.append((b"content-range", f"bytes {start}-{end - 1}/{len(data)}".encode()))
            data, status = data[start:end], 206
        if f.truncated_download_rate > 0 and self._rng_http.random() < f.truncated_download_rate:
            extra.append((b"x-sim-declared-length", str(len(data)).encode()))
            data = data[: len(data) // 2]
        content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        if content_type in _FORCED_DOWNLOAD:
            content_type = "application/octet-stream"
        return status, data, content_type.encode(), extra

    def _upload(
        self, headers: dict[str, str], body: bytes
    ) -> tuple[int, bytes, bytes | None, list[tuple[bytes, bytes]]]:
        if len(body) > MAX_UPLOAD:
            return 413, b"413: Request Entity Too Large", TEXT_TYPE, []
        fields = _parse_multipart(headers.get("content-type", ""), body)
        image = fields.get("image")
        kind_field = fields.get("type")
        kind = kind_field[1].decode() if kind_field else "input"
        if kind not in ("input", "temp", "output"):
            return 500, ERROR_500, TEXT_TYPE, []
        if image is None or image[0] is None:
            return 400, b"", None, []
        filename = image[0]
        if not filename:
            return 400, b"", None, []
        data = image[1]
        sub_field = fields.get("subfolder")
        subfolder = sub_field[1].decode() if sub_field else ""
        folder = posixpath.normpath(posixpath.join(kind, subfolder))
        path = posixpath.normpath(posixpath.join(folder, filename))
        if not path.startswith(kind + "/"):
            return 400, b"", None, []
        overwrite_field = fields.get("overwrite")
        overwrite = overwrite_field is not None and overwrite_field[1].decode() in ("true", "1")
        duplicate = False
        if not overwrite:
            stem, ext = posixpath.splitext(filename)
            i = 1
            while path in self._files:
                if hashlib.sha256(self._files[path]).digest() == hashlib.sha256(data).digest():
                    duplicate = True
                    break
                filename = f"{stem} ({i}){ext}"
                path = posixpath.join(folder, filename)
                i += 1
        if not duplicate:
            self._store(path, data)
        return self._ok({"name": filename, "subfolder": subfolder, "type": kind})

    # ------------------------------------------------------------------ WebSocket

    async def _serve_ws(self, sock: simws.ServerSocket, resource: str) -> None:
        """One socket: first ``status`` with ``sid``, then events until either side closes."""
        query = parse_qs(urlsplit(resource).query)
        client_id = (query.get("clientId") or [""])[0] or uuid.uuid4().hex
        send, receive = trio.open_memory_channel[str | bytes](math.inf)
        conn = _Conn(client_id, send, trio.CancelScope())
        f = self.faults
        if f.ws_silence_rate > 0 and self._rng_ws.random() < f.ws_silence_rate:
            conn.silent_from = f.ws_silent_after
        # P3: a reused client id replaces the old socket; the old handler's exit below
        # removes the entry unconditionally, silencing the new socket too.
        self._conns[client_id] = conn
        self._deliver(conn, _frame("status", {"status": self._queue_info(), "sid": client_id}))
        running = self._running
        if running is not None and running.client_id == client_id and self._last_node is not None:
            self._deliver(conn, _frame("executing", {"node": self._last_node}))
        code = 1000
        try:
            with conn.scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._ws_reader, sock, conn, nursery.cancel_scope)
                    code = await self._ws_writer(sock, conn, receive)
                    nursery.cancel_scope.cancel()
        finally:
            self._conns.pop(client_id, None)
            send.close()
            await sock.close(code)

    async def _ws_reader(
        self, sock: simws.ServerSocket, conn: _Conn, done: trio.CancelScope
    ) -> None:
        first = True
        while True:
            message = await sock.receive()
            if message is None:
                conn.scope.cancel()
                return
            if first and isinstance(message, str):
                with contextlib.suppress(msgspec.DecodeError):
                    data = msgspec.json.decode(message)
                    if isinstance(data, dict) and data.get("type") == "feature_flags":
                        flags = data.get("data") or {}
                        conn.metadata = bool(flags.get("supports_preview_metadata"))
                        self._deliver(
                            conn,
                            _frame(
                                "feature_flags",
                                {"supports_preview_metadata": True, "max_upload_size": MAX_UPLOAD},
                            ),
                        )
            first = False

    async def _ws_writer(
        self, sock: simws.ServerSocket, conn: _Conn, receive: trio.MemoryReceiveChannel[str | bytes]
    ) -> int:
        f = self.faults
        async for message in receive:
            if f.ws_drop_after is not None and conn.frames >= f.ws_drop_after:
                return 1011
            if f.ws_drop_rate > 0 and self._rng_ws.random() < f.ws_drop_rate:
                return 1011
            conn.frames += 1
            if conn.silent_from is not None and conn.frames > conn.silent_from:
                continue
            try:
                if isinstance(message, str):
                    await sock.send_text(message)
                else:
                    await sock.send_bytes(message)
            except simws.SocketClosedError:
                return 1000
        return 1000

    async def connect_ws_in_memory(
        self,
        nursery: trio.Nursery,
        resource: str,
        *,
        max_message_size: int = simws.CLIENT_MAX_MESSAGE_SIZE,
    ) -> trio_websocket.WebSocketConnection:
        """A client WebSocket to ``resource`` (``/ws?clientId=...``) over memory streams."""
        return await simws.connect_in_memory(
            nursery, resource, self._serve_ws, max_message_size=max_message_size
        )

    @contextlib.asynccontextmanager
    async def open_ws_in_memory(
        self, url: str
    ) -> AsyncIterator[trio_websocket.WebSocketConnection]:
        """``ws_connect`` for :class:`ComfyUIClient`: ``url`` is any ``ws://host/ws?...``."""
        parts = urlsplit(url)
        resource = parts.path + ("?" + parts.query if parts.query else "")
        async with trio.open_nursery() as nursery:
            conn = await self.connect_ws_in_memory(nursery, resource)
            try:
                yield conn
            finally:
                with trio.move_on_after(1.0) as scope:
                    scope.shield = True
                    await conn.aclose()
                nursery.cancel_scope.cancel()


class _CycleMarker(Exception):
    def __init__(self, node_id: str) -> None:
        super().__init__(node_id)
        self.node_id = node_id


class _Context:
    """The :class:`~conjure_actors.sim.comfyui_nodes.NodeContext` of one running node."""

    def __init__(self, sim: ComfyUISim, item: _Item, steps: int) -> None:
        self._sim = sim
        self._item = item
        self.images: list[tuple[int, bytes]] = []
        self._steps = steps

    @property
    def prompt(self) -> Mapping[str, Any]:
        return self._item.prompt

    @property
    def extra_pnginfo(self) -> Mapping[str, Any] | None:
        info = self._item.extra_data.get("extra_pnginfo")
        return info if isinstance(info, dict) else None

    def read_input(self, name: str) -> bytes | None:
        return self._sim._read_input(name)

    def save_file(self, kind: str, subfolder: str, prefix: str, ext: str, data: bytes) -> str:
        counter = self._sim._counter(kind, subfolder, prefix)
        filename = f"{prefix}_{counter:05}_.{ext}"
        key = posixpath.normpath(posixpath.join(kind, subfolder, filename))
        self._sim._store(key, data)
        self._sim.produced[key] = data
        return filename

    def temp_prefix(self) -> str:
        letters = "".join(
            self._sim._rng_names.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(5)
        )
        return "ComfyUI_temp_" + letters

    def send_text(self, node_id: str, text: str) -> None:
        nid = node_id.encode()
        frame = (3).to_bytes(4, "big") + len(nid).to_bytes(4, "big") + nid + text.encode()
        self._sim._send_binary(frame, None)

    def send_image(self, node_id: str, png: bytes, step: int, steps: int) -> None:
        self.images.append((step, png))


_FORCED_DOWNLOAD: Final = frozenset(
    {"text/html", "text/html-sandboxed", "application/xhtml+xml", "text/javascript", "text/css"}
)
_RANGE: Final = re.compile(r"^bytes=(\d*)-(\d*)$")


def _byte_range(header: str, size: int) -> tuple[int, int] | None:
    """aiohttp's single ``Range: bytes=a-b`` (or ``a-``, ``-n``) as ``[start, end)``; None
    when it cannot be served (416)."""
    m = _RANGE.match(header.strip())
    if m is None or (not m.group(1) and not m.group(2)):
        return None
    if not m.group(1):
        start, end = max(0, size - int(m.group(2))), size
    else:
        start = int(m.group(1))
        end = min(size, int(m.group(2)) + 1) if m.group(2) else size
    if start >= size or end <= start:
        return None
    return start, end


def view_image(data: bytes, preview: str | None, channel: str) -> tuple[bytes, str]:
    """``/view``'s conversions of a stored image: ``preview=webp;Q`` or ``jpeg;Q`` re-encodes
    (webp for any other format or when the alpha channel is asked for); ``channel=rgb``
    drops alpha, ``channel=a`` keeps only alpha (an RGBA PNG, opaque if the file has none)."""
    with Image.open(io.BytesIO(data)) as img:
        if preview is not None:
            parts = preview.split(";")
            fmt = parts[0]
            if fmt not in ("webp", "jpeg") or "a" in channel:
                fmt = "webp"
            quality = int(parts[-1]) if parts[-1].isdigit() else 90
            out = img.convert("RGB") if fmt == "jpeg" or channel == "rgb" else img
            buffer = io.BytesIO()
            out.save(buffer, format=fmt, quality=quality)
            return buffer.getvalue(), f"image/{fmt}"
        buffer = io.BytesIO()
        if channel == "rgb":
            if img.mode == "RGBA":
                r, g, b, _ = img.split()
                Image.merge("RGB", (r, g, b)).save(buffer, format="PNG")
            else:
                img.convert("RGB").save(buffer, format="PNG")
        else:
            alpha = img.split()[3] if img.mode == "RGBA" else Image.new("L", img.size, 255)
            alpha_img = Image.new("RGBA", alpha.size)
            alpha_img.putalpha(alpha)
            alpha_img.save(buffer, format="PNG")
        return buffer.getvalue(), "image/png"


def _parse_multipart(content_type: str, body: bytes) -> dict[str, tuple[str | None, bytes]]:
    """A small multipart/form-data parser: ``{field: (filename or None, bytes)}``."""
    header = email.message.Message()
    header["content-type"] = content_type
    boundary = header.get_param("boundary")
    if not isinstance(boundary, str) or not boundary:
        return {}
    fields: dict[str, tuple[str | None, bytes]] = {}
    for part in body.split(b"--" + boundary.encode())[1:]:
        if part.startswith(b"--"):
            break
        part = part.removeprefix(b"\r\n")
        part = part.removesuffix(b"\r\n")
        head, sep, data = part.partition(b"\r\n\r\n")
        if not sep:
            continue
        disposition = email.message.Message()
        for line in head.decode("utf-8", "replace").split("\r\n"):
            key, _, value = line.partition(":")
            if key.strip():
                disposition[key.strip()] = value.strip()
        name = disposition.get_param("name", header="content-disposition")
        filename = disposition.get_param("filename", header="content-disposition")
        if isinstance(name, str):
            fields[name] = (filename if isinstance(filename, str) else None, data)
    return fields
