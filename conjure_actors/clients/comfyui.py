"""The ComfyUI client: upload, submit, follow, download, and the small routes around them.

Three ideas shape it (see ``../shared/protocols/comfyui.md`` §4 for the evidence):

- **Polling is the source of truth.** ``/history/{id}`` says a prompt is done; ``/queue``
  tells "not yet" (running or pending) from "unknown" (deleted, evicted, server restarted).
  The WebSocket only makes following faster and more detailed.
- **One long-lived WebSocket for many prompts** (:class:`ComfyUIEvents`). It carries a fresh
  ``clientId`` on every (re)connect, because a reused id breaks the server's socket table
  (P3). After a drop, prompts submitted under the old id get no more per-prompt events, so
  their followers simply continue by polling.
- **Nothing is resubmitted blindly.** A timeout on ``POST /prompt`` raises
  :class:`OutcomeUnknownError`; the caller reconciles with :meth:`ComfyUIClient.find_prompt`
  using the ``prompt_id`` it chose and logged before the POST.

Secrets: with ``redact`` set, every message, log line and repr names the server by that
string; the base URL (a RunComfy machine URL is a capability) never appears. A logging
filter also scrubs it from the ``httpx``/``httpcore``/``trio-websocket`` loggers.
"""

from __future__ import annotations

import contextlib
import hashlib
import heapq
import itertools
import logging
import math
import random
import re
import uuid
import weakref
from collections import OrderedDict, deque
from collections.abc import AsyncGenerator, Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import quote, urlencode, urlsplit

import attrs
import httpx
import msgspec
import trio
import trio_websocket
import wsproto.utilities

from conjure_actors.clients import comfyui_wire as wire
from conjure_actors.clients.bodies import abandon, excerpt, send_capped
from conjure_actors.clients.download import DEFAULT_MAX_DOWNLOAD_BYTES, Committer, FileSink
from conjure_actors.clients.errors import (
    ClientError,
    ComfyUIError,
    ComfyUIResponseError,
    DownloadError,
    DownloadStalledError,
    DownloadTooLargeError,
    ExecutionError,
    NodeError,
    OutcomeUnknownError,
    PromptInterruptedError,
    PromptLostError,
    PromptRejectedError,
)
from conjure_actors.clients.retry import RetryPolicy, parse_retry_after, send_with_retry
from conjure_actors.errgroups import single_error

__all__ = [
    "DEFAULT_MAX_DOWNLOAD_BYTES",
    "DEFAULT_STALL_TIMEOUT",
    "GLB_MAGIC",
    "MAX_ANSWER_BYTES",
    "PNG_SIGNATURE",
    "WS_MAX_MESSAGE_SIZE",
    "ComfyUIClient",
    "ComfyUIEvents",
    "Download",
    "EventsStatistics",
    "FollowUpdate",
    "NodeExecuted",
    "NodeProgress",
    "NodeStarted",
    "NodesCached",
    "OutputFile",
    "PreviewImage",
    "PromptFailed",
    "PromptInterrupted",
    "PromptStarted",
    "PromptSucceeded",
    "QueueItem",
    "QueueSnapshot",
    "Submitted",
    "UploadedImage",
    "check_signature",
    "new_prompt_id",
    "origin_of",
    "signature_problem",
]

log = logging.getLogger("conjure_actors.clients.comfyui")

WS_MAX_MESSAGE_SIZE: Final = 64 * 1024 * 1024
DEFAULT_STALL_TIMEOUT: Final = 60.0
# The largest JSON answer read (``/object_info`` of a server with many custom nodes is a
# few MB, ``/queue`` carries every queued graph): more is refused, not read into memory.
MAX_ANSWER_BYTES: Final = 64 * 1024 * 1024
# POST /prompt is resent only on answers that prove nothing was queued (see submit).
_PROMPT_RETRY_STATUSES: Final = frozenset({429})
# A proxy's 502/503/504 to POST /prompt: the prompt looked up, and sent again (same id) only
# while absent, after these pauses (s); then, as any 5xx, "outcome unknown" (see submit).
_PROMPT_LOOKUP_STATUSES: Final = frozenset({502, 503, 504})
_PROMPT_LOOKUP_PAUSES: Final = (1.0, 2.0, 4.0, 8.0)
# follow: buffered frames taken in a row without a checkpoint (then one blocking receive).
_NOWAIT_STREAK: Final = 16
PNG_SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"
_PNG_IEND: Final = b"IEND\xaeB`\x82"
GLB_MAGIC: Final = b"glTF"
_AS_IS: Final = {"accept-encoding": "identity"}  # /view: the bytes as they are stored
# Routes whose URL never changes: _request keeps them parsed (httpx parses a URL string
# again for every request, a third of building one).
_FIXED_PATHS: Final = frozenset(
    {"/prompt", "/queue", "/interrupt", "/system_stats", "/object_info", "/upload/image"}
)
PromptStatus = Literal["running", "pending", "done", "unknown"]


def origin_of(url: str) -> str:
    """``scheme://host[:port]`` of a user's ComfyUI URL, fit for a message: without the
    credentials, path or query it may carry. (A RunComfy machine's URL is a secret and is
    never shown at all: say ``server <id>``.)"""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    host = parts.hostname or "?"
    return f"{parts.scheme or 'http'}://{host}" + (f":{port}" if port else "")


def base_path(url: str) -> str:
    """The path prefix of a ComfyUI base URL (``""`` at the root; ``/comfy`` for one a
    reverse proxy serves under ``/comfy``): every route is joined under it."""
    return urlsplit(url).path.rstrip("/")


def probe_problem(exc: Exception) -> str:
    """Why a health check (``/system_stats``) failed, in words: the HTTP status it got, or
    what went wrong (never an exception's class name)."""
    if isinstance(exc, ComfyUIResponseError):
        return "an answer that is not a ComfyUI's"
    if isinstance(exc, ClientError) and exc.status is not None:
        return f"HTTP {exc.status}"
    if isinstance(exc, ClientError):
        return "no connection"
    return "an unexpected failure (--debug shows it)"


def new_prompt_id() -> str:
    """A canonical lowercase hyphenated UUID4, the only form newer servers accept."""
    return str(uuid.uuid4())


# ---------------------------------------------------------------------------- results


@attrs.frozen
class OutputFile:
    """One file a node reported (``/history`` outputs or an ``executed`` frame)."""

    node_id: str
    key: str  # the UI key: "images", "3d", "gifs", ...
    filename: str
    subfolder: str
    type: str

    @property
    def path(self) -> str:
        """``type/subfolder/filename`` (the simulator's ``produced`` key)."""
        parts = [self.type, self.subfolder, self.filename]
        return "/".join(p for p in parts if p)

    @property
    def shown(self) -> str:
        """:attr:`path` fit for a one-line message (escaped if it holds control characters)."""
        path = self.path
        return path if path.isprintable() else ascii(path)


@attrs.frozen
class UploadedImage:
    """What ``/upload/image`` stored: use :attr:`reference` in a LoadImage node."""

    name: str
    subfolder: str
    type: str
    sha256: str

    @property
    def reference(self) -> str:
        return f"{self.subfolder}/{self.name}" if self.subfolder else self.name


@attrs.frozen
class Submitted:
    """A queued prompt. ``warnings``: node errors of outputs that will NOT run (200 answer)."""

    prompt_id: str
    number: float
    warnings: tuple[NodeError, ...] = ()


@attrs.frozen
class QueueItem:
    number: float
    prompt_id: str
    client_id: str | None


@attrs.frozen
class QueueSnapshot:
    """``/queue`` without the graphs; ``pending`` in run order (sorted by number)."""

    running: tuple[QueueItem, ...]
    pending: tuple[QueueItem, ...]

    def status_of(self, prompt_id: str) -> PromptStatus:
        if any(i.prompt_id == prompt_id for i in self.running):
            return "running"
        if any(i.prompt_id == prompt_id for i in self.pending):
            return "pending"
        return "unknown"


class _RetryDownload(Exception):
    """One download attempt failed in a way another attempt may fix (internal)."""

    def __init__(
        self, problem: str, *, stalled: bool = False, retry_after: float | None = None
    ) -> None:
        super().__init__(problem)
        self.problem = problem
        self.stalled = stalled
        self.retry_after = retry_after


@attrs.frozen
class Download:
    """Verified bytes of one output file and their sha256 (hex)."""

    output: OutputFile
    data: bytes = attrs.field(repr=lambda d: f"<{len(d)} bytes>")
    sha256: str
    size: int


# Updates yielded by ComfyUIClient.follow (the last one is always a terminal one).


@attrs.frozen
class PromptStarted:
    prompt_id: str


@attrs.frozen
class NodesCached:
    prompt_id: str
    nodes: tuple[str, ...]


@attrs.frozen
class NodeStarted:
    prompt_id: str
    node: str


@attrs.frozen
class NodeProgress:
    prompt_id: str
    node: str
    value: float
    max: float


@attrs.frozen
class NodeExecuted:
    prompt_id: str
    node: str
    outputs: tuple[OutputFile, ...]


@attrs.frozen
class PreviewImage:
    prompt_id: str
    node: str | None
    image_type: str | None
    data: bytes = attrs.field(repr=lambda d: f"<{len(d)} bytes>")


@attrs.frozen
class PromptSucceeded:
    """Terminal: history says success. ``outputs`` (from history) is authoritative."""

    prompt_id: str
    outputs: tuple[OutputFile, ...]
    cached_nodes: tuple[str, ...] = ()


@attrs.frozen
class PromptFailed:
    """Terminal: a node raised (``execution_error`` in history)."""

    prompt_id: str
    node_id: str | None
    node_type: str | None
    exception_type: str
    exception_message: str


@attrs.frozen
class PromptInterrupted:
    """Terminal: the prompt was interrupted before ``node_id`` ran."""

    prompt_id: str
    node_id: str | None
    node_type: str | None


FollowUpdate = (
    PromptStarted
    | NodesCached
    | NodeStarted
    | NodeProgress
    | NodeExecuted
    | PreviewImage
    | PromptSucceeded
    | PromptFailed
    | PromptInterrupted
)
_TERMINAL: Final = (PromptSucceeded, PromptFailed, PromptInterrupted)


# ---------------------------------------------------------------------------- helpers


def check_signature(filename: str, data: bytes) -> str | None:
    """Why ``data`` is not a plausible ``filename`` (PNG / GLB / JPEG / WEBP), or ``None``."""
    return signature_problem(filename, data[:16], data[-16:], len(data))


def signature_problem(filename: str, head: bytes, tail: bytes, size: int) -> str | None:
    """:func:`check_signature` from a body's first and last (up to 16) bytes and its size,
    so that a download streamed to disk is checked without reading it again."""
    if size == 0:
        return "empty body"
    lower = filename.lower()
    if lower.endswith(".png"):
        if not head.startswith(PNG_SIGNATURE):
            return "not a PNG (bad signature)"
        if not tail.endswith(_PNG_IEND):
            return "PNG without its IEND chunk (truncated)"
    elif lower.endswith(".glb"):
        if len(head) < 12 or head[:4] != GLB_MAGIC:
            return "not a binary glTF (bad magic)"
        version = int.from_bytes(head[4:8], "little")
        length = int.from_bytes(head[8:12], "little")
        if version != 2:
            return f"binary glTF version {version}, expected 2"
        if length != size:
            return f"binary glTF declares {length} bytes, got {size} (truncated)"
    elif lower.endswith((".jpg", ".jpeg")):
        if not head.startswith(b"\xff\xd8\xff"):
            return "not a JPEG (bad signature)"
    elif lower.endswith(".webp") and not (head[:4] == b"RIFF" and head[8:12] == b"WEBP"):
        return "not a WEBP (bad signature)"
    return None


def outputs_from_ui(node_id: str, ui: object, *, strict: bool = False) -> tuple[OutputFile, ...]:
    """Every ``{filename, subfolder, type}`` entry in one node's UI output.

    Entries that are not files (texts, flags of custom nodes) are not outputs. A file entry
    of the wrong shape (a filename that is not a string...) raises
    :class:`ComfyUIResponseError` if ``strict`` (``/history``, the source of truth), and is
    skipped otherwise (a WebSocket ``executed`` frame, which only adds detail).
    """
    files: list[OutputFile] = []
    if not isinstance(ui, dict):
        return ()
    for key, entries in ui.items():
        if not isinstance(entries, list):
            continue
        for entry in entries:
            if not isinstance(entry, dict) or "filename" not in entry:
                continue
            try:
                out = msgspec.convert(entry, wire.OutputEntry)
            except msgspec.ValidationError as exc:
                if strict:
                    raise ComfyUIResponseError(
                        f"node {node_id} reported an output of the wrong shape ({exc}): "
                        f"{excerpt(msgspec.json.encode(entry))}"
                    ) from None
                continue
            files.append(
                OutputFile(
                    node_id=node_id,
                    key=str(key),
                    filename=out.filename,
                    subfolder=out.subfolder,
                    type=out.type,
                )
            )
    return tuple(files)


def _text(value: object) -> str | None:
    """``value`` if it is a string, else ``None`` (a field of another type is no text)."""
    return value if isinstance(value, str) else None


_NODE_ID_DETAILS: Final = re.compile(r"Node ID '#([^']+)'")
_MISSING_CLASS: Final = re.compile(r"because node (.+) does not exist")


def _missing_node(error: Mapping[str, Any]) -> NodeError | None:
    """The node a refusal of a class the server lacks names (None: it names none)."""
    extra = error.get("extra_info")
    extra = extra if isinstance(extra, dict) else {}
    message = str(error.get("message", ""))
    details = str(error.get("details", ""))
    node_id = extra.get("node_id")
    if node_id is None and (found := _NODE_ID_DETAILS.search(details)) is not None:
        node_id = found.group(1)
    if node_id is None:
        return None
    class_type = extra.get("class_type")
    if class_type is None and (cls := _MISSING_CLASS.search(message)) is not None:
        class_type = cls.group(1)
    return NodeError(
        node_id=str(node_id),
        class_type=str(class_type or ""),
        type=str(error.get("type", "")),
        message=message,
        details=details,
    )


def _node_errors(raw: object) -> list[NodeError]:
    out: list[NodeError] = []
    if not isinstance(raw, dict):
        return out
    for node_id, entry in raw.items():
        if not isinstance(entry, dict):
            continue
        class_type = str(entry.get("class_type", ""))
        errors = entry.get("errors")
        for err in errors if isinstance(errors, list) else []:
            if not isinstance(err, dict):
                continue
            extra = err.get("extra_info") or {}
            input_name = extra.get("input_name") if isinstance(extra, dict) else None
            out.append(
                NodeError(
                    node_id=str(node_id),
                    class_type=class_type,
                    type=str(err.get("type", "")),
                    message=str(err.get("message", "")),
                    details=str(err.get("details", "")),
                    input_name=str(input_name) if input_name is not None else None,
                )
            )
    return out


class _RedactFilter(logging.Filter):
    """Replaces secret URLs in records of third-party loggers (httpx logs every request URL).

    It holds the secrets of live clients only: a client registers its own, and they leave
    with it (the filter keeps weak references to the clients), so a long run that talks to
    many machines one after another does not accumulate every URL it ever saw.
    """

    def __init__(self) -> None:
        super().__init__()
        self._owners: weakref.WeakKeyDictionary[object, dict[str, str]] = (
            weakref.WeakKeyDictionary()
        )

    def register(self, owner: object, secrets: Mapping[str, str]) -> None:
        """Scrub ``secrets`` (secret -> shown name) for as long as ``owner`` lives."""
        self._owners[owner] = dict(secrets)

    def __len__(self) -> int:
        """How many secrets are held (those of live clients)."""
        return sum(len(secrets) for secrets in list(self._owners.values()))

    def _pairs(self) -> list[tuple[str, str]]:
        merged: dict[str, str] = {}
        for secrets in list(self._owners.values()):
            merged.update(secrets)
        # Longest first, so that a full URL is replaced before its host alone (also across
        # clients: one machine's host may be a prefix of another's).
        return sorted(merged.items(), key=lambda kv: -len(kv[0]))

    def filter(self, record: logging.LogRecord) -> bool:
        pairs = self._pairs()
        if not pairs:
            return True
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            return True
        changed = message
        for secret, name in pairs:
            changed = changed.replace(secret, name)
        if changed != message:
            record.msg, record.args = changed, None
        return True


_ANY_JSON: Final = msgspec.json.Decoder()
_JSON_OBJECT: Final = msgspec.json.Decoder(dict[str, Any])
_REDACT_FILTER: Final = _RedactFilter()
for _name in ("httpx", "httpcore", "trio-websocket", "hypercorn.access"):
    logging.getLogger(_name).addFilter(_REDACT_FILTER)


def _default_ws_connect(
    url: str,
) -> AbstractAsyncContextManager[trio_websocket.WebSocketConnection]:
    return trio_websocket.open_websocket_url(
        url, max_message_size=WS_MAX_MESSAGE_SIZE, connect_timeout=10, disconnect_timeout=5
    )


# ---------------------------------------------------------------------------- events


async def _close_transport(ws: trio_websocket.WebSocketConnection) -> None:
    """Close the socket under ``ws``: trio-websocket 0.12 leaves it open when the peer closed
    first (``aclose`` returns early once a close reason is set), leaking a file descriptor on
    every server-side drop."""
    stream = getattr(ws, "_stream", None)
    if stream is None:
        return
    with trio.CancelScope(shield=True), contextlib.suppress(trio.BrokenResourceError, OSError):
        await stream.aclose()


class _Wake:
    """The item a follower's subscription gets at its next poll time (see
    :meth:`ComfyUIEvents._wake_followers`)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "_WAKE"


_WAKE: Final = _Wake()
# None: "the socket was replaced"; _WAKE: "the follower's poll time came".
_Routed = wire.WsMessage | wire.BinaryFrame | _Wake | None


# What the socket's task does with each frame type (ComfyUIEvents.dispatch): route it to its
# prompt's follower; route it and remember its prompt as the one running (a binary frame
# without metadata comes from it); route it and forget the one running if it is its prompt
# that ended (``executing`` does either: a node starts, or with node null the prompt
# ended); drop it (no prompt: status, feature flags, and progress_state, which repeats
# the progress frames). One dict lookup per frame instead of an isinstance chain (issue
# 16); the wire types are flat (no subclasses), so the exact type is the type. A type not
# listed here (UnknownMessage) is logged and dropped.
_ROUTE: Final = 0
_ROUTE_CURRENT: Final = 1
_DROP: Final = 2
_ROUTE_END: Final = 3
_ROUTE_EXECUTING: Final = 4
_DISPATCH: Final[dict[type, int]] = {
    wire.ProgressMsg: _ROUTE_CURRENT,
    wire.ExecutingMsg: _ROUTE_EXECUTING,
    wire.ExecutionStartMsg: _ROUTE_CURRENT,
    wire.ExecutionCachedMsg: _ROUTE,
    wire.ExecutedMsg: _ROUTE,
    wire.ExecutionSuccessMsg: _ROUTE_END,
    wire.ExecutionErrorMsg: _ROUTE_END,
    wire.ExecutionInterruptedMsg: _ROUTE_END,
    wire.StatusMsg: _DROP,
    wire.FeatureFlagsMsg: _DROP,
    wire.ProgressStateMsg: _DROP,
}


# WS frame -> (follow update or None, "history should be ready / outcome known"), by the
# frame's type (ComfyUIClient._translate).
def _t_binary(pid: str, item: Any) -> tuple[FollowUpdate | None, bool]:
    if item.event in (1, 4):
        return PreviewImage(pid, item.node_id, item.image_type, item.data), False
    return None, False


def _t_start(pid: str, item: Any) -> tuple[FollowUpdate | None, bool]:
    return PromptStarted(pid), False


def _t_cached(pid: str, item: Any) -> tuple[FollowUpdate | None, bool]:
    return NodesCached(pid, tuple(item.data.nodes)), False


def _t_executing(pid: str, item: Any) -> tuple[FollowUpdate | None, bool]:
    node = item.data.node
    return (None, True) if node is None else (NodeStarted(pid, node), False)


def _t_progress(pid: str, item: Any) -> tuple[FollowUpdate | None, bool]:
    data = item.data
    if data.node is None:
        return None, False
    return NodeProgress(pid, data.node, data.value, data.max), False


def _t_executed(pid: str, item: Any) -> tuple[FollowUpdate | None, bool]:
    data = item.data
    return NodeExecuted(pid, data.node, outputs_from_ui(data.node, data.output)), False


def _t_ended(pid: str, item: Any) -> tuple[FollowUpdate | None, bool]:
    return None, True


def _t_error(pid: str, item: Any) -> tuple[FollowUpdate | None, bool]:
    # ExecutionBlocked is not terminal: the prompt keeps running.
    return None, item.data.exception_type != "ExecutionBlocked"


# The frames a follower's ``absorb`` may take in the socket's task (the prompt started,
# its cached nodes, node started / progress / executed: most of a prompt's routed frames),
# with their translation. What ``follow`` keeps of them (the start, the cached nodes) the
# subscription keeps for it (_Subscription.note).
_ABSORBABLE: Final[dict[type, Callable[[str, Any], tuple[FollowUpdate | None, bool]]]] = {
    wire.ProgressMsg: _t_progress,
    wire.ExecutingMsg: _t_executing,
    wire.ExecutionStartMsg: _t_start,
    wire.ExecutionCachedMsg: _t_cached,
    wire.ExecutedMsg: _t_executed,
}

_TRANSLATE: Final[dict[type, Callable[[str, Any], tuple[FollowUpdate | None, bool]]]] = {
    wire.BinaryFrame: _t_binary,
    wire.ExecutionStartMsg: _t_start,
    wire.ExecutionCachedMsg: _t_cached,
    wire.ExecutingMsg: _t_executing,
    wire.ProgressMsg: _t_progress,
    wire.ExecutedMsg: _t_executed,
    wire.ExecutionSuccessMsg: _t_ended,
    wire.ExecutionInterruptedMsg: _t_ended,
    wire.ExecutionErrorMsg: _t_error,
}


@attrs.frozen
class EventsStatistics:
    """``ComfyUIEvents.statistics()``: ``generation`` counts (re)connections; ``wakeups``
    the followers' poll times waiting in the heap (stale ones included)."""

    connected: bool
    client_id: str
    generation: int
    frames: int
    followers: int
    buffered_prompts: int
    wakeups: int = 0


class _Subscription:
    def __init__(self, events: ComfyUIEvents, prompt_id: str) -> None:
        self.events = events
        self.prompt_id = prompt_id
        self.send, self.receive = trio.open_memory_channel[_Routed](math.inf)
        self.wake: float | None = None  # when it gets _WAKE (None: never)
        # The follower's ``absorb`` (see ComfyUIClient.follow), and whether the socket's task
        # may call it now: only while the follower is parked on an empty channel with
        # nothing handed to it yet (so an absorbed update cannot overtake one in flight).
        self.absorb: Callable[[FollowUpdate], bool] | None = None
        self.absorbing = False
        # What ``follow`` keeps of the updates absorbed: the prompt started; its cached nodes.
        self.seen_start = False
        self.cached: tuple[str, ...] | None = None

    def note(self, update: FollowUpdate) -> None:
        """Keep what ``follow`` needs of an absorbed update (it never sees it)."""
        if type(update) is PromptStarted:
            self.seen_start = True
        elif type(update) is NodesCached:
            self.cached = update.nodes

    def wake_at(self, when: float) -> bool:
        """Have ``_WAKE`` put into this subscription at ``when`` (trio clock), replacing an
        earlier request. False: no task of the socket does that now (the caller bounds its
        wait itself)."""
        events = self.events
        if events._waker is None:
            return False
        if self.wake != when:
            self.wake = when
            heapq.heappush(events._wakeups, (when, next(events._wake_ids), self))
            events._rearm()
        return True

    def close(self, *, finished: bool = False) -> None:
        """Unsubscribe; ``finished``: the prompt's outcome is known, so its late frames
        (``execution_success``, ``executing {node: null}`` after the history answered) are
        dropped instead of buffered as an orphan's."""
        events = self.events
        if events._subs.get(self.prompt_id) is self:
            del events._subs[self.prompt_id]
            if finished:
                events._finished_prompt(self.prompt_id)
        self.send.close()
        if self.wake is not None:
            self.wake = None
            if events._wakeups and events._wakeups[0][2] is self:
                events._rearm()  # no wake-up of the socket's task for a follower gone


_FEATURE_FLAGS: Final = msgspec.json.encode(
    {"type": "feature_flags", "data": {"supports_preview_metadata": True}}
).decode()


class ComfyUIEvents:
    """One long-lived WebSocket shared by every follower; reconnects with a fresh client id.

    Run :meth:`run` in a nursery (``await nursery.start(events.run)``; it returns once the
    first connection attempt is over, connected or not). Submit prompts with
    :attr:`client_id`; :meth:`ComfyUIClient.follow` subscribes by prompt id. Frames for a
    prompt nobody follows yet are kept (a bounded number of prompts) because ComfyUI may
    send ``execution_start`` before the ``POST /prompt`` answer arrives.
    """

    # Frames of prompts nobody follows (yet): a short window in practice, but broadcast
    # progress of other clients' prompts lands here too, so keep it small. The newest
    # frames are kept: polling recovers anything older.
    MAX_BUFFERED_PROMPTS: Final = 64
    MAX_BUFFERED_FRAMES: Final = 256
    # Prompts whose follower saw the outcome: their trailing frames are dropped, not kept
    # as orphans (every finished job otherwise left one in the buffer until 64 newer ones
    # pushed it out). Late frames follow the outcome within moments and ComfyUI runs one
    # prompt at a time: 256 ids (~80 bytes each, ~20 KiB per machine) cover that window.
    MAX_FINISHED_PROMPTS: Final = 256

    def __init__(
        self,
        client: ComfyUIClient,
        *,
        keepalive: float = 20.0,
        ping_timeout: float = 10.0,
        feature_flags: bool = True,
        hello_timeout: float = 5.0,
        client_id: str | None = None,
        reconnect: bool = True,
    ) -> None:
        self._client = client
        self._hello_timeout = hello_timeout
        self._keepalive = keepalive
        self._ping_timeout = ping_timeout
        self._feature_flags = feature_flags
        # ``client_id``: the id of the first connection (an id prompts were submitted with
        # earlier; see ComfyUIClient.open_prompt_events), whose ``status`` must then come
        # within ``hello_timeout`` (P3: a socket under a reused id may be silenced).
        # ``reconnect=False``: one connection only (under that id: never again).
        self._reused = client_id is not None
        self._reconnect = reconnect
        self.client_id = client_id if client_id is not None else client.ids().hex
        self.connected = False
        # Under a reused id, P3 may also silence the socket AFTER it connected (the dead
        # process's handler ends on the server, and its cleanup drops ours): ComfyUI then
        # sends it nothing more, yet it answers pings. ComfyUI broadcasts ``status`` to every
        # socket at each change of its queue, so a ``status`` another socket of this client
        # brings (a witness: ``_witness``) must come here too within ``hello_timeout``, as
        # the first one must: else it is taken for silenced (``silenced``; not connected
        # any more: its followers poll at their fast interval).
        self.silenced = False
        self._status_at = -math.inf  # trio time of the last ``status`` frame on this socket
        self._witnessed_at: float | None = None  # a witnessed broadcast not seen here yet
        self._silence_wait: trio.CancelScope | None = None  # _watch_silence's sleep
        self._up = trio.Event()  # set while connected; a fresh one after each drop
        self.generation = 0
        self.frames = 0
        self._subs: dict[str, _Subscription] = {}
        self._orphans: OrderedDict[str, deque[_Routed]] = OrderedDict()
        self._finished: OrderedDict[str, None] = OrderedDict()
        self._current_prompt: str | None = None
        # The followers' poll times: (when, order, subscription), stale ones included (a
        # subscription whose ``wake`` is no longer ``when``). One task, ``_wake_followers``,
        # sleeps until the earliest and puts ``_WAKE`` into that subscription: a follower
        # blocks on its frames without a cancel scope of its own per wait (issue 16).
        self._wakeups: list[tuple[float, int, _Subscription]] = []
        self._wake_ids = itertools.count()
        self._waker: trio.CancelScope | None = None  # the waker's sleep, while it runs

    def __repr__(self) -> str:
        return f"ComfyUIEvents(server={self._client.name!r}, connected={self.connected})"

    def _rearm(self) -> None:
        """Drop stale wake-ups at the top of the heap; the waker sleeps until the next."""
        heap = self._wakeups
        while heap and heap[0][2].wake != heap[0][0]:
            heapq.heappop(heap)
        waker = self._waker
        if waker is not None:
            deadline = heap[0][0] if heap else math.inf
            if waker.deadline != deadline:
                waker.deadline = deadline

    async def _wake_followers(self) -> None:
        """Put ``_WAKE`` into each subscription at the time it asked for (``wake_at``), for
        as long as :meth:`run` runs. When it stops, every follower is woken (it then bounds
        its waits itself)."""
        heap = self._wakeups
        try:
            while True:
                with trio.CancelScope(deadline=heap[0][0] if heap else math.inf) as sleep:
                    self._waker = sleep
                    await trio.sleep_forever()
                self._waker = None
                now = trio.current_time()
                while heap and heap[0][0] <= now:
                    when, _, sub = heapq.heappop(heap)
                    if sub.wake == when:
                        sub.wake = None
                        self._wake(sub)
                self._rearm()
        finally:
            self._waker = None
            # Every follower waiting for a wake-up, displaced subscriptions included (a
            # second follower of the same prompt replaced it in _subs).
            waiting = {id(sub): sub for _, _, sub in heap if sub.wake is not None}
            waiting.update((id(sub), sub) for sub in self._subs.values())
            heap.clear()
            for sub in waiting.values():
                sub.wake = None
                self._wake(sub)

    @staticmethod
    def _wake(sub: _Subscription) -> None:
        try:
            sub.send.send_nowait(_WAKE)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            return  # the follower left meanwhile

    def statistics(self) -> EventsStatistics:
        """A snapshot of the socket's state (for monitors and tests)."""
        return EventsStatistics(
            connected=self.connected,
            client_id=self.client_id,
            generation=self.generation,
            frames=self.frames,
            followers=len(self._subs),
            buffered_prompts=len(self._orphans),
            wakeups=len(self._wakeups),
        )

    async def wait_connected(self) -> None:
        """Return once the socket is connected (at once if it is). ComfyUI sends a prompt's
        events and SaveImageWebsocket's images only to the socket of the prompt's
        ``client_id``, when it sends them, and keeps nothing: submit once this returned,
        with the :attr:`client_id` it leaves."""
        while not self.connected:
            await self._up.wait()

    def subscribe(self, prompt_id: str) -> _Subscription:
        sub = _Subscription(self, prompt_id)
        self._subs[prompt_id] = sub
        self._finished.pop(prompt_id, None)
        for item in self._orphans.pop(prompt_id, ()):
            sub.send.send_nowait(item)
        return sub

    def _route(self, prompt_id: str | None, item: _Routed) -> None:
        if prompt_id is None:
            return
        sub = self._subs.get(prompt_id)
        if sub is not None:
            if sub.absorbing:
                absorb = _ABSORBABLE.get(type(item))
                if absorb is not None:
                    update, hint = absorb(prompt_id, item)
                    if update is not None and not hint and sub.absorb(update):  # type: ignore[misc]
                        sub.note(update)
                        return  # taken in this task: no wake-up of the follower (issue 16)
                sub.absorbing = False  # the follower gets this item: nothing overtakes it
            # try/except, not contextlib.suppress: no context manager object per frame.
            try:
                sub.send.send_nowait(item)
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                return  # the follower left between two frames
            return
        if prompt_id in self._finished:
            return
        buffered = self._orphans.get(prompt_id)
        if buffered is None:
            if len(self._orphans) >= self.MAX_BUFFERED_PROMPTS:
                self._orphans.popitem(last=False)
            buffered = self._orphans[prompt_id] = deque(maxlen=self.MAX_BUFFERED_FRAMES)
        buffered.append(item)

    def _finished_prompt(self, prompt_id: str) -> None:
        self._orphans.pop(prompt_id, None)
        self._finished[prompt_id] = None
        if len(self._finished) > self.MAX_FINISHED_PROMPTS:
            self._finished.popitem(last=False)

    def dispatch(self, message: str | bytes) -> None:
        """Parse one frame and hand it to the follower of its prompt."""
        self.frames += 1
        if isinstance(message, str):
            # progress_state (half of a sampler's frames) repeats what the progress frames
            # say and follow reads nothing from it: dropped here, it wakes no follower. It is
            # known by its first bytes (ComfyUI writes the type first), before any decoding.
            if message.startswith(wire.PROGRESS_STATE_PREFIXES):
                return
            msg = wire.parse_ws_message(message)
            action = _DISPATCH.get(type(msg))
            if action is None:  # UnknownMessage
                kind = getattr(msg, "type", type(msg).__name__)
                log.debug("%s: ignoring WebSocket frame of type %r", self._client.name, kind)
                return
            if action == _DROP:
                if type(msg) is wire.StatusMsg:
                    self._on_status(msg)
                return
            prompt_id = msg.data.prompt_id  # type: ignore[union-attr]
            # A binary frame without metadata (legacy type 1) names no prompt: it belongs
            # to the prompt running now. ComfyUI runs one at a time, and a prompt queued by
            # another client without a client_id sends its previews and its
            # SaveImageWebsocket images to every socket (comfyui.md 2.5) with nothing but
            # its `progress` frames to name it. So the running prompt is the last one seen
            # starting or progressing, and none from the end of that prompt (executing
            # null, execution_success/error/interrupted) or from a new socket on.
            if action == _ROUTE:
                pass
            elif action == _ROUTE_CURRENT:
                if prompt_id:
                    self._current_prompt = prompt_id
            elif action == _ROUTE_EXECUTING:  # a node starts, or (node null) the prompt ends
                if msg.data.node is not None:  # type: ignore[union-attr]
                    if prompt_id:
                        self._current_prompt = prompt_id
                elif prompt_id == self._current_prompt:
                    self._current_prompt = None
            elif prompt_id == self._current_prompt:  # _ROUTE_END
                self._current_prompt = None
            self._route(prompt_id, msg)  # type: ignore[arg-type]
            return
        frame = wire.parse_binary_frame(message)
        target = frame.prompt_id or self._current_prompt
        self._route(target, frame)

    def _on_status(self, msg: wire.StatusMsg) -> None:
        """A ``status`` frame came on this socket: ComfyUI's own to it (with its ``sid``, on
        connecting) or a broadcast (no ``sid``: its queue changed), which every socket of the
        server gets: the client's re-attach sockets are told (``_witness``). Only a socket
        under a reused id, or one whose client has re-attach sockets, needs the time: the
        machine's own socket, alone, reads no clock (nor needs a run: a frame's decoding is
        tested outside one)."""
        if not self._reused and not self._client._reattached:
            return
        now = trio.current_time()
        self._status_at = now
        if msg.data.sid is None:
            self._client._status_broadcast(self, now)

    def _witness(self, at: float) -> None:
        """Another socket of this server brought a broadcast ``status`` at ``at``: under a
        reused id, this socket must bring it too within ``hello_timeout`` (else it is taken
        for silenced: ``_watch_silence``). One that came here moments before counts."""
        if (
            not self._reused
            or not self.connected
            or self.silenced
            or self._witnessed_at is not None
            or self._status_at >= at - self._hello_timeout
        ):
            return
        self._witnessed_at = at
        if self._silence_wait is not None:
            self._silence_wait.deadline = at + self._hello_timeout

    async def _watch_silence(self) -> None:
        """Under a reused id: take the socket for silenced once a broadcast ``status``
        witnessed on another socket (``_witness``) has not come here within
        ``hello_timeout``. Its followers are woken to look at once, then poll at their fast
        interval (it counts as not connected); frames that may still come are routed."""
        while True:
            with trio.CancelScope() as wait:
                self._silence_wait = wait
                if self._witnessed_at is not None:
                    wait.deadline = self._witnessed_at + self._hello_timeout
                await trio.sleep_forever()
            self._silence_wait = None
            at, self._witnessed_at = self._witnessed_at, None
            if at is None or self._status_at >= at - self._hello_timeout or not self.connected:
                continue
            log.info(
                "%s: the WebSocket under a reused client id missed a status the server sent"
                " to its other sockets %g s ago: taken for silenced (its prompts are followed"
                " by polling)",
                self._client.name,
                self._hello_timeout,
            )
            self.silenced = True
            self.connected = False
            if self._up.is_set():
                self._up = trio.Event()
            for sub in list(self._subs.values()):
                try:
                    sub.send.send_nowait(None)  # as for a socket replaced: look now
                except (trio.ClosedResourceError, trio.BrokenResourceError):
                    continue  # the follower left meanwhile
            return

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep a socket open until cancelled; report started after the first attempt.
        The followers' wake-ups (their poll times) run alongside, across reconnections;
        under a reused client id, so does the watch for its silencing (``_watch_silence``)."""
        with single_error():  # what the socket's loop raises, as itself
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._wake_followers)
                if self._reused:
                    nursery.start_soon(self._watch_silence)
                await self._run(task_status)
                nursery.cancel_scope.cancel()  # one connection only, over: wake followers

    async def _run(self, task_status: trio.TaskStatus[None]) -> None:
        started = False
        delays = self._client.policy.delays(self._client.rng)
        reused = self._reused
        while True:
            client_id = self.client_id if reused else self._client.ids().hex
            self._client._own_id(client_id)
            url = f"{self._client.ws_base}/ws?clientId={client_id}"
            try:
                async with self._client.ws_connect(url) as ws:
                    try:
                        # The handshake is done before the server files the socket under
                        # its client id (ComfyUI's handler registers it, then sends
                        # ``status`` with the ``sid``): a prompt posted in between sends its
                        # frames to nobody. Connected means the server spoke on this socket.
                        if await self._hello(ws, reused=reused):
                            self.client_id = client_id
                            self.connected = True
                            self._up.set()
                            self.generation += 1
                            # A prompt seen running on the old socket may have ended
                            # unseen: a legacy frame is nobody's until one starts.
                            self._current_prompt = None
                            delays = self._client.policy.delays(self._client.rng)
                            if self.generation > 1:
                                for sub in list(self._subs.values()):
                                    sub.send.send_nowait(None)
                            if not started:
                                started = True
                                task_status.started()
                            await self._serve(ws)
                    finally:
                        await _close_transport(ws)
            except (
                OSError,
                trio_websocket.HandshakeError,
                trio_websocket.ConnectionClosed,
                trio.BrokenResourceError,
                # trio-websocket #184: a ping from the server while we close is answered
                # on the closing socket and wsproto refuses it; the socket is gone anyway.
                wsproto.utilities.LocalProtocolError,
            ) as exc:
                log.info(
                    "%s: WebSocket unavailable (%s: %s); following by polling",
                    self._client.name,
                    type(exc).__name__,
                    self._client.scrub(str(exc)),
                )
            finally:
                self.connected = False
                if self._up.is_set():
                    self._up = trio.Event()
            if not started:
                started = True
                task_status.started()
            if not self._reconnect:
                return
            reused = False  # every later connection under a fresh id (P3)
            await trio.sleep(next(delays))

    async def _hello(self, ws: trio_websocket.WebSocketConnection, *, reused: bool = False) -> bool:
        """Send our feature flags, then wait for the server's first frame (its ``status``
        with our ``sid``, sent once the socket is registered) and route it. A server that
        says nothing within ``hello_timeout`` (a silent proxy) is used anyway: following
        polls what the socket does not bring. False: the socket closed first; or, under a
        ``reused`` client id, its first frame was no ``status`` naming that id within
        ``hello_timeout``: taken for silenced (P3), it is not used."""
        try:
            if self._feature_flags:
                await ws.send_message(_FEATURE_FLAGS)
            with trio.move_on_after(self._hello_timeout) as waited:
                message = await ws.get_message()
        except trio_websocket.ConnectionClosed:
            log.info("%s: WebSocket closed before its first frame; reconnecting", self._client.name)
            return False
        if reused:
            sid = None
            if not waited.cancelled_caught and isinstance(message, str):
                parsed = wire.parse_ws_message(message)
                if isinstance(parsed, wire.StatusMsg):
                    sid = parsed.data.sid
            if sid != self.client_id:
                log.info(
                    "%s: no status within %g s on the WebSocket under a reused client id:"
                    " taken for silenced (its prompt is followed by polling)",
                    self._client.name,
                    self._hello_timeout,
                )
                return False
        if waited.cancelled_caught:
            log.info(
                "%s: the WebSocket said nothing for %g s after connecting; using it anyway",
                self._client.name,
                self._hello_timeout,
            )
            return True
        self.dispatch(message)
        return True

    async def _serve(self, ws: trio_websocket.WebSocketConnection) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._keep_alive, ws, nursery.cancel_scope)
            while True:
                try:
                    message = await ws.get_message()
                except trio_websocket.ConnectionClosed:
                    log.info("%s: WebSocket closed; reconnecting", self._client.name)
                    nursery.cancel_scope.cancel()
                    return
                self.dispatch(message)

    async def _keep_alive(
        self, ws: trio_websocket.WebSocketConnection, scope: trio.CancelScope
    ) -> None:
        """ComfyUI sends no heartbeat: ping ourselves and drop a socket that stopped answering.

        Each ping carries its own counter as payload: without one, trio-websocket draws it
        from the global ``random`` module, which the runtime does not touch (a hypothesis
        test drawing in another thread takes that for randomness in its strategy)."""
        for n in itertools.count():
            await trio.sleep(self._keepalive)
            with trio.move_on_after(self._ping_timeout) as ping:
                try:
                    await ws.ping(n.to_bytes(8, "big"))
                except (trio_websocket.ConnectionClosed, ValueError):
                    scope.cancel()
                    return
            if ping.cancelled_caught:
                log.info("%s: WebSocket ping unanswered; reconnecting", self._client.name)
                scope.cancel()
                return


# ---------------------------------------------------------------------------- the client


@attrs.define(eq=False)
class _SharedEvents:
    """A re-attach socket (:meth:`ComfyUIClient.open_prompt_events`) and its followers:
    ``ready`` once its first connection attempt is over; ``scope`` closes it; ``closed``
    once its task ended."""

    events: ComfyUIEvents
    users: int = 0
    ready: trio.Event = attrs.Factory(trio.Event)
    scope: trio.CancelScope = attrs.Factory(trio.CancelScope)
    closed: trio.Event = attrs.Factory(trio.Event)


class ComfyUIClient:
    """A ComfyUI server's HTTP API (+ WebSocket through :class:`ComfyUIEvents`)."""

    def __init__(
        self,
        base_url: str,
        *,
        http: httpx.AsyncClient,
        ws_connect: Callable[[str], AbstractAsyncContextManager[trio_websocket.WebSocketConnection]]
        | None = None,
        policy: RetryPolicy | None = None,
        redact: str | None = None,
        rng: random.Random | None = None,
        concurrency: int = 32,
        ids: Callable[[], uuid.UUID] = uuid.uuid4,
    ) -> None:
        self._base = base_url.rstrip("/")
        # httpcore's pool rescans every waiting request on each release (quadratic with
        # hundreds of concurrent followers): queue them here instead, cheaply.
        self._limiter = trio.CapacityLimiter(concurrency)
        self._http = http
        self.ws_connect = ws_connect if ws_connect is not None else _default_ws_connect
        self.policy = policy if policy is not None else RetryPolicy()
        self.rng = rng if rng is not None else random.Random()
        self.ids = ids  # WebSocket client ids (the test harness passes a seeded factory)
        self.name = redact if redact is not None else self._base
        parts = urlsplit(self._base)
        scheme = "wss" if parts.scheme == "https" else "ws"
        self.ws_base = f"{scheme}://{parts.netloc}{parts.path}"
        self._view_url = self._base + "/view?"
        self._urls: dict[str, httpx.URL] = {}  # the parsed URLs of _FIXED_PATHS
        self._secrets: dict[str, str] = {}
        self._queue_cache: tuple[float, QueueSnapshot] | None = None
        # The client ids this process's sockets connected under, newest last (at most
        # MAX_OWN_IDS): open_prompt_events uses none of them again (P3).
        self._ws_ids: OrderedDict[str, None] = OrderedDict()
        # The sockets re-attached prompts are followed over, by client id, while one of
        # their followers uses them (open_prompt_events).
        self._reattached: dict[str, _SharedEvents] = {}
        self._queue_inflight: trio.Event | None = None
        if redact is not None:
            for secret in {self._base, self.ws_base, parts.netloc, parts.hostname or ""}:
                if secret:
                    self._secrets[secret] = redact
            # Longest first, so that a full URL is replaced before its host alone.
            self._secrets = dict(sorted(self._secrets.items(), key=lambda kv: -len(kv[0])))
            _REDACT_FILTER.register(self, self._secrets)

    def __repr__(self) -> str:
        return f"ComfyUIClient(server={self.name!r})"

    def scrub(self, text: str) -> str:
        """``text`` with the server's URL and host replaced by its redacted name."""
        for secret, name in self._secrets.items():
            text = text.replace(secret, name)
        return text

    def events(self, **kwargs: Any) -> ComfyUIEvents:
        """A :class:`ComfyUIEvents` for this server (start its ``run`` in a nursery)."""
        return ComfyUIEvents(self, **kwargs)

    # Client ids of this process's sockets kept (open_prompt_events refuses them): a
    # socket's id is needed only while the server may still hold a handler of it (P3: a
    # proxy keeping it open), minutes at most; reconnections are spaced by the retry
    # delays, so the last 1024 (~100 KiB) cover that, however long a serve runs.
    MAX_OWN_IDS: Final = 1024

    def _status_broadcast(self, source: ComfyUIEvents, at: float) -> None:
        """A socket of this client brought a broadcast ``status`` at ``at``: every socket
        of the server got one; the re-attach sockets must have it too (P3: see
        ``ComfyUIEvents._witness``)."""
        for shared in self._reattached.values():
            if shared.events is not source:
                shared.events._witness(at)

    def _own_id(self, client_id: str) -> None:
        """A socket of this process connects under ``client_id``: remember it (bounded)."""
        ids = self._ws_ids
        ids[client_id] = None
        ids.move_to_end(client_id)
        if len(ids) > self.MAX_OWN_IDS:
            ids.popitem(last=False)

    @contextlib.asynccontextmanager
    async def open_prompt_events(
        self, client_id: str, *, hello_timeout: float = 5.0
    ) -> AsyncGenerator[ComfyUIEvents | None, None]:
        """A WebSocket under ``client_id``, the id prompts were submitted with by a process
        that has since died (their frames, SaveImageWebsocket images included, go only to a
        socket of that id), for following those prompts: one connection, no reconnect.
        ``None``: not usable, follow by polling (and the machine's socket).

        Every prompt the dead process sent to this server went under its one socket's id:
        their followers share one socket (each subscribes by prompt id), opened by the
        first, closed when the last leaves. It must outlive whichever follower opened it,
        and this client has no nursery (a machine's re-attached jobs may be leased before
        its own socket runs): it runs as a trio system task, which ends when its last
        follower leaves (or the run ends).

        P3 (``comfyui.md``): while the dead process's socket handler still lives on the
        server (a proxy may hold it open), connecting under its id works until that handler
        ends, and then the new socket receives nothing more. So this socket carries nothing
        but those old prompts (new prompts go over a socket of a fresh id); an id is
        connected under once per client, never one a socket of this process has had (a
        second socket under it would be silenced when the first closes: ``None`` once its
        socket closed); and a socket whose ``status`` does not come within
        ``hello_timeout`` of connecting is taken for silenced (``None``), and so is one that
        later misses, by ``hello_timeout``, a ``status`` the server broadcast to this
        client's other sockets (``ComfyUIEvents.silenced``: no longer ``connected``, its
        followers look at once, then poll at their fast interval). A silenced or
        dropped socket costs the old prompts their progress, and SaveImageWebsocket images
        sent meanwhile (a result: ComfyUI keeps no copy), which their follower must then
        find short (the count each node announced) and have again by running the prompt
        again; their outcome is decided by polling ``/history`` all the same."""
        shared = self._reattached.get(client_id)
        if shared is not None:
            async with self._share(client_id, shared) as events:
                yield events
            return
        if client_id in self._ws_ids:  # ours already (this process's, or used once)
            yield None
            return
        events = ComfyUIEvents(
            self, client_id=client_id, reconnect=False, hello_timeout=hello_timeout
        )
        shared = self._reattached[client_id] = _SharedEvents(events)
        trio.lowlevel.spawn_system_task(
            self._run_shared, shared, hello_timeout, name="comfyui re-attach socket"
        )
        async with self._share(client_id, shared) as ready:
            yield ready

    @contextlib.asynccontextmanager
    async def _share(
        self, client_id: str, shared: _SharedEvents
    ) -> AsyncGenerator[ComfyUIEvents | None, None]:
        """One follower's use of a re-attach socket: it waits for the first connection
        attempt's end; the last one out closes the socket."""
        shared.users += 1
        try:
            await shared.ready.wait()
            yield shared.events if shared.events.connected else None
        finally:
            shared.users -= 1
            if shared.users == 0:
                shared.scope.cancel()
                if self._reattached.get(client_id) is shared:
                    del self._reattached[client_id]

    async def _run_shared(self, shared: _SharedEvents, hello_timeout: float) -> None:
        """A re-attach socket's task (a system task): one connection, its first attempt
        bounded whatever ``ws_connect`` does (the default has its own 10 s timeout). What it
        raises beyond the socket's own errors is logged (a system task's error would end
        the whole run): its followers then poll."""
        try:
            with shared.scope:
                async with trio.open_nursery() as nursery:
                    with trio.move_on_after(hello_timeout + 30.0):
                        await nursery.start(shared.events.run)
                    shared.ready.set()
                    if not shared.events.connected:
                        nursery.cancel_scope.cancel()
        except Exception as exc:  # a system task's error would end the whole run
            log.warning(
                "%s: the WebSocket of re-attached prompts failed (%s: %s); they are followed"
                " by polling",
                self.name,
                type(exc).__name__,
                self.scrub(str(exc)),
            )
        finally:
            shared.ready.set()
            shared.closed.set()

    # ------------------------------------------------------------------ plumbing

    async def _request(
        self,
        method: str,
        path: str,
        *,
        idempotent: bool = True,
        retry_statuses: frozenset[int] | None = None,
        max_body: int = MAX_ANSWER_BYTES,
        **kwargs: Any,
    ) -> httpx.Response:
        url: httpx.URL | str | None = self._urls.get(path)
        if url is None:
            url = self._base + path
            if path in _FIXED_PATHS:  # parsed once per client, not once per request
                url = self._urls[path] = httpx.URL(url)

        def too_large() -> ComfyUIResponseError:
            return ComfyUIResponseError(
                f"{method} {path} on {self.name} answered more than {max_body} bytes; not read"
            )

        async def attempt() -> httpx.Response:
            return await send_capped(
                self._http, method, url, limit=max_body, too_large=too_large, **kwargs
            )

        extra = {} if retry_statuses is None else {"retry_statuses": retry_statuses}
        response = await send_with_retry(
            attempt,
            policy=self.policy,
            rng=self.rng,
            what=f"{method} {path} on {self.name}",
            idempotent=idempotent,
            scrub=self.scrub,
            limiter=self._limiter,
            **extra,
        )
        return response

    def _fail(self, what: str, response: httpx.Response) -> ComfyUIError:
        hint = " (rate limited: slow down)" if response.status_code == 429 else ""
        return ComfyUIError(
            f"{what} on {self.name} answered HTTP {response.status_code}{hint}",
            status=response.status_code,
        )

    def _decode(self, what: str, response: httpx.Response, decoder: Any) -> Any:
        """The answer decoded by ``decoder`` (typed), or :class:`ComfyUIResponseError` with
        a short excerpt of what came instead (scrubbed of the server's URL)."""
        try:
            return decoder.decode(response.content)
        except msgspec.DecodeError as exc:  # ValidationError is a DecodeError
            raise ComfyUIResponseError(
                f"{what} on {self.name} answered something unexpected ({exc}): "
                f"{excerpt(response.content, scrub=self.scrub)}",
                status=response.status_code,
            ) from None

    async def _get_json(self, path: str, *, decoder: Any = None, **kwargs: Any) -> Any:
        response = await self._request("GET", path, **kwargs)
        if response.status_code != 200:
            raise self._fail(f"GET {path}", response)
        return self._decode(f"GET {path}", response, decoder or _ANY_JSON)

    # ------------------------------------------------------------------ routes

    async def upload_image(
        self,
        data: bytes,
        filename: str,
        *,
        subfolder: str = "",
        type: str = "input",
        overwrite: bool = False,
    ) -> UploadedImage:
        """``POST /upload/image``; the server may rename (``name (1).png``): use the result."""
        fields = {"type": type, "subfolder": subfolder}
        if overwrite:
            fields["overwrite"] = "true"
        response = await self._request(
            "POST",
            "/upload/image",
            files={"image": (filename, data, "application/octet-stream")},
            data=fields,
        )
        if response.status_code != 200:
            raise self._fail("POST /upload/image", response)
        answer: wire.UploadAnswer = self._decode(
            "POST /upload/image", response, wire.UPLOAD_DECODER
        )
        return UploadedImage(
            name=answer.name,
            subfolder=answer.subfolder,
            type=answer.type if answer.type is not None else type,
            sha256=hashlib.sha256(data).hexdigest(),
        )

    async def submit(
        self,
        graph: Mapping[str, Any],
        prompt_id: str,
        client_id: str | None,
        number: float | None = None,
        *,
        extra_data: Mapping[str, Any] | None = None,
        front: bool = False,
    ) -> Submitted:
        """``POST /prompt`` under our own ``prompt_id``.

        Raises :class:`PromptRejectedError` (400, with every ``node_errors`` entry) and
        :class:`OutcomeUnknownError` on a timeout, a lost connection, or an answer that does
        not say whether ComfyUI queued it (any 5xx, a gateway's 502/503/504 among them, a 200
        we cannot read): reconcile with :meth:`find_prompt` instead of submitting again.
        """
        body: dict[str, Any] = {"prompt": graph, "prompt_id": prompt_id}
        if client_id is not None:
            body["client_id"] = client_id
        if number is not None:
            body["number"] = number
        if front:
            body["front"] = True
        if extra_data:
            body["extra_data"] = dict(extra_data)
        # Only an answer that proves ComfyUI did not take the prompt is resent or reported
        # as a plain failure: a 429 (come back later) and a 4xx (refused). ComfyUI's own
        # POST /prompt answers 200 or 400 only (an exception in it, 500): any other status
        # is from a proxy in front of it (RunComfy's). A 5xx from that proxy may come after
        # it forwarded the request and ComfyUI queued the prompt: 502/504, and 503 too
        # (Envoy's "upstream connect error or disconnect/reset before headers" is a 503,
        # whether the connection failed or was reset after the request went through).
        # Resent, the prompt would run twice on the paid machine (P9). That is "outcome
        # unknown": the caller looks ``prompt_id`` up (find_prompt) instead of sending it
        # again. A 429 is a rate limiter's, which answers before routing the request on:
        # nothing was forwarded, so it is resent after Retry-After.
        # A 503 is also what a proxy answers while ComfyUI restarts (connection refused):
        # then nothing was forwarded. And a 502/504 may hide ComfyUI's own answer, a 400
        # among them (a prompt it refused, never queued). So a gateway's 5xx is not given
        # up at once (each give-up costs the job an attempt, and a refusal it hides is
        # never learnt): the prompt is looked up, and sent again only while the lookup
        # shows it absent (neither queued, running nor done: ComfyUI did not take it);
        # found, it is the caller's to follow (outcome unknown).
        pauses = iter(_PROMPT_LOOKUP_PAUSES)
        while True:
            try:
                response = await self._request(
                    "POST",
                    "/prompt",
                    idempotent=False,
                    retry_statuses=_PROMPT_RETRY_STATUSES,
                    content=msgspec.json.encode(body),
                    headers={"content-type": "application/json"},
                )
            except ComfyUIResponseError as exc:  # an answer too large to read: answered
                raise self._unknown(prompt_id, str(exc), exc.status) from None
            except ClientError as exc:
                exc.add_note(f"prompt id {prompt_id}: use find_prompt() before submitting again")
                raise
            status = response.status_code
            pause = next(pauses, None) if status in _PROMPT_LOOKUP_STATUSES else None
            if pause is None or not await self._absent(prompt_id):
                break
            await trio.sleep(pause)
        if status == 400:
            raise self._rejected(prompt_id, response)
        if status >= 500:
            what = f"POST /prompt on {self.name} answered HTTP {status}"
            raise self._unknown(prompt_id, what, status)
        if status != 200:
            raise self._fail("POST /prompt", response)
        try:
            answer: wire.PromptAnswer = self._decode("POST /prompt", response, wire.PROMPT_DECODER)
        except ComfyUIResponseError as exc:
            raise self._unknown(prompt_id, str(exc), status) from None
        warnings = tuple(_node_errors(answer.node_errors))
        if warnings:
            log.warning(
                "%s: prompt %s queued, but %d node error(s) drop some outputs: %s",
                self.name,
                prompt_id,
                len(warnings),
                "; ".join(f"node {w.node_id} ({w.class_type}): {w.message}" for w in warnings),
            )
        return Submitted(
            prompt_id=answer.prompt_id if answer.prompt_id is not None else prompt_id,
            number=answer.number if answer.number is not None else 0.0,
            warnings=warnings,
        )

    async def _absent(self, prompt_id: str) -> bool:
        """Whether a lookup proves ``prompt_id`` is neither queued nor done (a failed lookup
        proves nothing: False)."""
        try:
            return await self.find_prompt(prompt_id) == "unknown"
        except ClientError:
            return False

    def _unknown(self, prompt_id: str, what: str, status: int | None) -> OutcomeUnknownError:
        """A ``POST /prompt`` answer that does not say whether ComfyUI queued the prompt."""
        return OutcomeUnknownError(
            f"{what}; prompt {prompt_id} may be queued: use find_prompt() before submitting again",
            status=status,
        )

    def _rejected(self, prompt_id: str, response: httpx.Response) -> PromptRejectedError:
        try:
            body = _ANY_JSON.decode(response.content)
        except msgspec.DecodeError:
            body = {}
        error = body.get("error") if isinstance(body, dict) else None
        error = error if isinstance(error, dict) else {}
        errors = _node_errors(body.get("node_errors") if isinstance(body, dict) else None)
        summary = "; ".join(
            f"node {e.node_id} ({e.class_type}) {e.input_name or ''}: {e.message}".replace(
                " :", ":"
            )
            + (f": {e.details}" if e.details and e.details not in e.message else "")
            for e in errors[:5]
        )
        if not summary:
            summary = f"{error.get('message', 'rejected')} {error.get('details', '')}".strip()
        more = f" (+{len(errors) - 5} more)" if len(errors) > 5 else ""
        # ComfyUI's refusal of a class it has not ("Cannot execute because node X does not
        # exist."; newer ones: type missing_node_type): no input fixes it; the machine's
        # image lacks the node.
        missing = not errors and (
            "does not exist" in str(error.get("message", ""))
            or error.get("type") == "missing_node_type"
        )
        if missing:
            # Its node_errors are empty: the node it names (in ``details``, "Node ID '#17'",
            # or ``extra_info``) becomes the one entry, so the job's error names it too.
            named = _missing_node(error)
            if named is not None:
                errors = [named]
        fix = (
            "run it on a workflow version whose machines have that node, or drop it"
            if missing
            else "fix the workflow inputs"
        )
        return PromptRejectedError(
            f"{self.name} rejected prompt {prompt_id}: {summary}{more}; {fix}",
            error_type=str(error.get("type", "")),
            node_errors=errors,
        )

    async def history(self, prompt_id: str) -> wire.HistoryEntry | None:
        """``/history/{id}``: the entry, or ``None`` for ``{}`` (not done, or unknown).

        Only our prompt's entry is decoded (typed); anything else of another shape raises
        :class:`ComfyUIResponseError`."""
        what = f"GET /history/{prompt_id}"
        response = await self._request("GET", f"/history/{prompt_id}")
        if response.status_code != 200:
            raise self._fail(what, response)
        entries: dict[str, msgspec.Raw] = self._decode(what, response, wire.HISTORY_DECODER)
        raw = entries.get(prompt_id)
        if raw is None:
            return None
        try:
            entry: wire.HistoryEntry = wire.HISTORY_ENTRY_DECODER.decode(raw)
        except msgspec.DecodeError as exc:
            raise ComfyUIResponseError(
                f"{what} on {self.name}: an entry of the wrong shape ({exc}): "
                f"{excerpt(bytes(raw), scrub=self.scrub)}",
                status=response.status_code,
            ) from None
        return entry

    async def queue(self, *, max_age: float = 0.0) -> QueueSnapshot:
        """``/queue`` reduced to numbers and ids, pending sorted into run order.

        ``/queue`` carries every queued graph (P7), so many followers share one snapshot:
        with ``max_age > 0`` a snapshot fetched at most that many seconds ago is reused, and
        concurrent callers wait for the one request in flight instead of sending their own.
        """
        if max_age > 0:
            cached = self._queue_cache
            if cached is not None and trio.current_time() - cached[0] <= max_age:
                return cached[1]
            if self._queue_inflight is not None:
                await self._queue_inflight.wait()
                cached = self._queue_cache
                if cached is not None and trio.current_time() - cached[0] <= max_age:
                    return cached[1]
        started = trio.current_time()
        inflight = trio.Event()
        self._queue_inflight = inflight
        try:
            snapshot = await self._fetch_queue()
        finally:
            inflight.set()
            if self._queue_inflight is inflight:
                self._queue_inflight = None
        if self._queue_cache is None or self._queue_cache[0] <= started:
            self._queue_cache = (started, snapshot)
        return snapshot

    async def _fetch_queue(self) -> QueueSnapshot:
        response = await self._request("GET", "/queue")
        if response.status_code != 200:
            raise self._fail("GET /queue", response)
        body: wire.QueueAnswer = self._decode("GET /queue", response, wire.QUEUE_DECODER)

        def items(entries: Iterable[wire.QueueEntry]) -> list[QueueItem]:
            return [
                QueueItem(
                    e.number,
                    e.prompt_id,
                    e.extra_data.client_id if e.extra_data and e.extra_data.client_id else None,
                )
                for e in entries
            ]

        pending = sorted(items(body.queue_pending), key=lambda i: i.number)
        return QueueSnapshot(running=tuple(items(body.queue_running)), pending=tuple(pending))

    async def find_prompt(self, prompt_id: str, *, max_age: float = 0.0) -> PromptStatus:
        """Where a prompt is: queue first, then history (a finish in between shows as done).

        A shared snapshot up to ``max_age`` old may say running/pending; "unknown" is only
        ever concluded from a fresh one (the prompt may have been queued after the snapshot).
        """
        snapshot = await self.queue(max_age=max_age)
        status = snapshot.status_of(prompt_id)
        if status == "unknown" and max_age > 0:
            status = (await self.queue()).status_of(prompt_id)
        if status != "unknown":
            return status
        return "done" if await self.history(prompt_id) is not None else "unknown"

    async def delete_from_queue(self, *prompt_ids: str) -> None:
        """Remove pending prompts (silently, as ComfyUI does; running ones are unaffected)."""
        response = await self._request("POST", "/queue", json={"delete": list(prompt_ids)})
        if response.status_code != 200:
            raise self._fail("POST /queue", response)

    async def interrupt(self, prompt_id: str | None = None) -> None:
        """Interrupt ``prompt_id`` if it is the one running (or whatever runs, if None)."""
        body = {"prompt_id": prompt_id} if prompt_id is not None else None
        response = await self._request("POST", "/interrupt", json=body)
        if response.status_code != 200:
            raise self._fail("POST /interrupt", response)

    async def system_stats(self) -> dict[str, Any]:
        """``/system_stats`` (the health check): a JSON object, else ComfyUIResponseError
        (a proxy's HTML page answered with 200 is not a healthy ComfyUI)."""
        body: dict[str, Any] = await self._get_json("/system_stats", decoder=_JSON_OBJECT)
        return body

    async def object_info(self, class_type: str | None = None) -> dict[str, Any]:
        """``/object_info[/{class}]``: the node catalogue, a JSON object."""
        path = "/object_info" if class_type is None else f"/object_info/{class_type}"
        body: dict[str, Any] = await self._get_json(path, decoder=_JSON_OBJECT)
        return body

    async def download(self, output: OutputFile) -> Download:
        """``/view`` into memory with checks: status, Content-Length, non-empty, signature;
        retried. The body is capped at ``DEFAULT_MAX_DOWNLOAD_BYTES`` but held whole: to save
        an output, use :meth:`download_to` (streamed to disk, stall-bounded)."""
        params = {"filename": output.filename, "subfolder": output.subfolder, "type": output.type}
        problem = "no attempt made"
        for attempt in range(self.policy.attempts):
            response = await self._request(
                "GET", "/view", params=params, max_body=DEFAULT_MAX_DOWNLOAD_BYTES
            )
            if response.status_code == 404:
                raise DownloadError(
                    f"{output.shown} is missing on {self.name} (404); the server may have "
                    "restarted or the file was removed",
                    status=404,
                )
            if response.status_code != 200:
                raise DownloadError(
                    f"downloading {output.shown} from {self.name} answered HTTP "
                    f"{response.status_code}",
                    status=response.status_code,
                )
            data = response.content
            declared = response.headers.get("content-length")
            encoded = response.headers.get("content-encoding", "identity") != "identity"
            # A compressed answer's Content-Length counts the compressed bytes (a proxy may
            # gzip): then only the signature check below can tell a truncated file.
            if (
                declared is not None
                and not encoded
                and declared.isdigit()
                and int(declared) != len(data)
            ):
                problem = f"got {len(data)} of {declared} bytes"
            else:
                problem = check_signature(output.filename, data) or ""
            if not problem:
                return Download(
                    output=output,
                    data=data,
                    sha256=hashlib.sha256(data).hexdigest(),
                    size=len(data),
                )
            log.info("%s: %s: %s; retrying", self.name, output.shown, problem)
            if attempt < self.policy.attempts - 1:
                await trio.sleep(self.policy.delay(attempt, self.rng))
        raise DownloadError(
            f"{output.shown} from {self.name} stayed broken after {self.policy.attempts} "
            f"attempts ({problem})"
        )

    async def download_to(
        self,
        output: OutputFile,
        path: Path,
        *,
        max_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES,
        stall_timeout: float = DEFAULT_STALL_TIMEOUT,
        disk: Committer | None = None,
    ) -> tuple[int, str]:
        """Stream ``/view`` of ``output`` into ``path`` durably: ``(size, sha256 hex)``.

        The body goes to a temporary file beside ``path`` (see :class:`FileSink`) while it
        is hashed; it must match its Content-Length and its format's signature, then it is
        fsynced and renamed into place. Nothing is held in memory but one chunk, or a small
        body whole (up to ``download.MEMORY_BYTES``: written, fsynced and renamed in one
        worker thread call). ``disk``: a group committer that does that file work, shared
        with other files (the run's); None: one ``trio.to_thread.run_sync`` of its own.

        Bounded against a hostile or broken server: more than ``max_bytes`` raises
        :class:`DownloadTooLargeError` at once (declared or streamed; not retried); no byte
        for ``stall_timeout`` seconds (headers included), a body shorter or longer than its
        Content-Length, a bad signature or a 5xx is retried per the policy, then raises
        :class:`DownloadStalledError` (if the last attempt stalled) or
        :class:`DownloadError`. A 404 or another 4xx raises :class:`DownloadError` at once.
        """
        params = {"filename": output.filename, "subfolder": output.subfolder, "type": output.type}
        problem, stalled = "no attempt made", False
        for attempt in range(self.policy.attempts):
            try:
                return await self._download_once(
                    output, path, params, max_bytes, stall_timeout, disk
                )
            except _RetryDownload as retry:
                problem, stalled, wait = retry.problem, retry.stalled, retry.retry_after
            log.info("%s: %s: %s; retrying", self.name, output.shown, problem)
            if attempt < self.policy.attempts - 1:
                delay = self.policy.delay(attempt, self.rng)
                if wait is not None:
                    delay = max(delay, min(wait, self.policy.max_retry_after))
                await trio.sleep(delay)
        error = DownloadStalledError if stalled else DownloadError
        raise error(
            f"{output.shown} from {self.name} stayed broken after {self.policy.attempts} "
            f"attempts ({problem})"
        )

    async def _download_once(
        self,
        output: OutputFile,
        path: Path,
        params: dict[str, str],
        max_bytes: int,
        stall_timeout: float,
        disk: Committer | None,
    ) -> tuple[int, str]:
        """One streamed attempt; a problem worth another attempt raises _RetryDownload."""
        # Ask for the bytes as they are: a compressed body would be inflated in memory a
        # whole network chunk at a time, beyond the cap's reach. The query is encoded here
        # (httpx's params merge parses the URL a second time).
        request = self._http.build_request(
            "GET", self._view_url + urlencode(params, quote_via=quote), headers=_AS_IS
        )
        sink = FileSink(path, max_bytes=max_bytes, what=f"{output.shown} from {self.name}")
        try:
            try:  # a free token needs no trip through the scheduler (the request yields)
                self._limiter.acquire_nowait()
            except trio.WouldBlock:
                await self._limiter.acquire()
            try:
                response = await self._receive(output, request, sink, max_bytes, stall_timeout)
            finally:
                self._limiter.release()
            # Content-Length counts the bytes on the wire: the compressed ones if encoded.
            declared_text = response.headers.get("content-length", "").strip()
            if declared_text.isdecimal():
                encoded = response.headers.get("content-encoding", "identity") != "identity"
                received = response.num_bytes_downloaded if encoded else sink.size
                if received != (declared := int(declared_text)):
                    raise _RetryDownload(f"got {received} of {declared} bytes")
            problem = signature_problem(output.filename, sink.head, sink.tail, sink.size)
            if problem:
                raise _RetryDownload(problem)
            if disk is not None:
                await disk.commit(sink)  # fsyncs: off the event loop, in a shared batch
            else:
                await trio.to_thread.run_sync(sink.commit)  # fsyncs: off the event loop
        finally:
            sink.abort()
        return sink.size, sink.sha256

    async def _receive(
        self,
        output: OutputFile,
        request: httpx.Request,
        sink: FileSink,
        max_bytes: int,
        stall_timeout: float,
    ) -> httpx.Response:
        """Send ``request`` and stream its body into ``sink``: the (closed) response.

        ONE cancel scope bounds the exchange: its deadline moves ``stall_timeout`` seconds
        ahead after every chunk, so it fires only once that long passed without a byte (the
        answer's headers included), at the cost of one scope per attempt, not one per chunk.
        """
        response: httpx.Response | None = None
        with trio.move_on_after(stall_timeout) as scope:
            try:
                response = await self._http.send(request, stream=True)
            except httpx.RequestError as exc:
                raise _RetryDownload(f"{type(exc).__name__}: {self.scrub(str(exc))}") from None
            try:
                self._check_answer(output, response, max_bytes)
                chunks = response.aiter_bytes()
                while True:
                    try:
                        chunk = await anext(chunks)
                    except StopAsyncIteration:
                        break
                    except httpx.RequestError as exc:
                        raise _RetryDownload(
                            f"after {sink.size} bytes: {type(exc).__name__}: {self.scrub(str(exc))}"
                        ) from None
                    try:
                        sink.write(chunk)
                    except BaseException:
                        await abandon(chunks)
                        raise
                    scope.deadline = trio.current_time() + stall_timeout
            finally:
                # A body read to its end is closed already (httpx closes it).
                if not response.is_closed:
                    with trio.CancelScope(shield=True), trio.move_on_after(5):
                        await response.aclose()
        if response is None:
            raise _RetryDownload(f"no answer within {stall_timeout:g} s", stalled=True)
        if scope.cancelled_caught:
            raise _RetryDownload(
                f"no byte for {stall_timeout:g} s after {sink.size} bytes", stalled=True
            )
        return response

    def _check_answer(self, output: OutputFile, response: httpx.Response, max_bytes: int) -> None:
        """Raise unless ``response`` is a 200 whose declared size fits ``max_bytes``."""
        code = response.status_code
        if code == 404:
            raise DownloadError(
                f"{output.shown} is missing on {self.name} (404); the server may have "
                "restarted or the file was removed",
                status=404,
            )
        if code == 429 or code >= 500:
            raise _RetryDownload(
                f"HTTP {code}", retry_after=parse_retry_after(response.headers.get("retry-after"))
            )
        if code != 200:
            raise DownloadError(
                f"downloading {output.shown} from {self.name} answered HTTP {code}", status=code
            )
        declared_text = response.headers.get("content-length", "").strip()
        if declared_text.isdecimal() and (declared := int(declared_text)) > max_bytes:
            raise DownloadTooLargeError(
                f"{output.shown} on {self.name} declares {declared} bytes, more than the "
                f"download cap of {max_bytes} (raise downloads.max_bytes if it is expected)"
            )

    # ------------------------------------------------------------------ following

    async def follow(
        self,
        prompt_id: str,
        *,
        events: ComfyUIEvents | None = None,
        poll_interval: float = 1.0,
        ws_poll_interval: float = 10.0,
        lost_after: int = 3,
        history_grace: float = 2.0,
        queue_max_age: float = 0.5,
        absorb: Callable[[FollowUpdate], bool] | None = None,
    ) -> AsyncGenerator[FollowUpdate, None]:
        """Updates for ``prompt_id`` until a terminal one (succeeded / failed / interrupted).

        Polling (``/history/{id}``, then ``/queue``) decides; WebSocket frames from
        ``events`` add detail and tell when to poll (``executing {node: null}`` means history
        is ready, but even then an empty answer is retried for ``history_grace`` seconds).
        A prompt in neither queue nor history for ``lost_after`` polls in a row raises
        :class:`PromptLostError` (deleted, evicted, or the server restarted). Followers share
        ``/queue`` snapshots up to ``queue_max_age`` seconds old.
        The caller bounds the total time (``trio.fail_after``).

        ``absorb``: while this generator waits for the socket's next frame, a
        ``PromptStarted``, ``NodesCached``, ``NodeStarted``, ``NodeProgress`` or
        ``NodeExecuted`` from it is first offered to ``absorb(update)``, called in the
        socket's task: True means the caller took it as if it had been yielded (it is not
        yielded), False that it is yielded as usual. It saves the follower a wake-up per
        frame (issue 16); the order of the updates is kept (an update is offered only when
        none is queued or being handed to this generator). ``absorb`` must not raise and
        must not block.
        """
        sub = events.subscribe(prompt_id) if events is not None else None
        if sub is not None and absorb is not None:
            sub.absorb = absorb
        seen_start = False
        cached: tuple[str, ...] = ()
        seen_cached = False
        done_hint_at: float | None = None
        unknown = 0
        # With a live socket the frames usually say when to look; poll first after a short
        # while anyway (a re-attached prompt may have finished long ago). Without one, now.
        live = events is not None and events.connected
        next_poll = trio.current_time() + (poll_interval if live else 0.0)
        fast = self.policy.base_delay
        status: PromptStatus = "unknown"
        # A frame already buffered is taken without a cancel scope (opening one per frame
        # was ~15% of the event loop's time under a flood of progress frames), but
        # receive_nowait is no checkpoint: after _NOWAIT_STREAK takes in a row the blocking
        # path (a full checkpoint) runs, so a flood neither starves other tasks nor
        # outlives a cancellation.
        streak = 0
        finished = False
        try:
            while True:
                item: _Routed | Literal[False] = False
                if sub is not None and trio.current_time() < next_poll:
                    empty = False
                    if streak < _NOWAIT_STREAK:
                        try:
                            item = sub.receive.receive_nowait()
                            streak += 1
                        except trio.WouldBlock:
                            empty = True
                    if item is False:
                        streak = 0
                        # Parked on an empty channel: the socket's task may hand frames
                        # to ``absorb`` meanwhile (until it puts one in the channel).
                        sub.absorbing = empty and sub.absorb is not None
                        # The socket's task puts _WAKE in at next_poll: no cancel scope
                        # per wait (issue 16). Without that task, a deadline of our own:
                        # a deadline, not a duration (the clock moves on between two
                        # readings, and a duration from a second one can come out < 0).
                        try:
                            if sub.wake_at(next_poll):
                                item = await sub.receive.receive()
                            else:
                                with trio.move_on_at(next_poll):
                                    item = await sub.receive.receive()
                        finally:
                            sub.absorbing = False
                if isinstance(item, _Wake):  # the poll time came (or the socket's task ended)
                    continue
                if item is None:  # the socket was replaced: reconcile now
                    next_poll = trio.current_time()
                    continue
                if item is not False:
                    update, hint = self._translate(prompt_id, item)
                    if hint and done_hint_at is None:
                        done_hint_at = trio.current_time()
                        next_poll = trio.current_time()
                    if update is None:
                        continue
                    if type(update) is PromptStarted:
                        seen_start = True
                    elif type(update) is NodesCached:
                        seen_cached, cached = True, update.nodes
                    yield update
                    continue
                if sub is None:
                    await trio.sleep_until(next_poll)
                entry = await self.history(prompt_id)
                if entry is None:
                    status = await self.find_prompt(prompt_id, max_age=queue_max_age)
                    if status == "done":
                        entry = await self.history(prompt_id)
                if entry is not None:
                    # Frames sent before the outcome (SaveImageWebsocket images among them)
                    # go out first: the buffered ones, and, on a live socket that has not
                    # said the prompt ended, those still on their way (history_grace at most).
                    wait = events is not None and events.connected and done_hint_at is None
                    until = trio.current_time() + history_grace
                    while sub is not None:
                        pending: _Routed = None
                        try:
                            pending = sub.receive.receive_nowait()
                        except trio.EndOfChannel:
                            break
                        except trio.WouldBlock:
                            if not wait:
                                break
                            with trio.move_on_at(until) as waited:
                                try:
                                    pending = await sub.receive.receive()
                                except trio.EndOfChannel:
                                    wait = False
                            if waited.cancelled_caught:
                                break
                        if pending is None or isinstance(pending, _Wake):
                            continue
                        update, hint = self._translate(prompt_id, pending)
                        wait = wait and not hint
                        if isinstance(update, PromptStarted):
                            seen_start = True
                        elif isinstance(update, NodesCached):
                            seen_cached, cached = True, update.nodes
                        if update is not None:
                            yield update
                    # The outcome is known: a consumer may close us at the last yield.
                    finished = True
                    if sub is not None:  # what was absorbed counts as seen
                        seen_start = seen_start or sub.seen_start
                        if sub.cached is not None and not seen_cached:
                            seen_cached, cached = True, sub.cached
                    for update in self._from_history(prompt_id, entry, seen_start, seen_cached):
                        if isinstance(update, NodesCached):
                            cached = update.nodes
                        if isinstance(update, PromptSucceeded) and cached:
                            update = attrs.evolve(update, cached_nodes=cached)
                        yield update
                    return
                now = trio.current_time()
                if status in ("running", "pending"):
                    unknown = 0
                else:
                    unknown += 1
                    grace = done_hint_at is not None and now - done_hint_at < history_grace
                    if unknown >= lost_after and not grace:
                        raise PromptLostError(
                            f"prompt {prompt_id} is in neither the queue nor the history of "
                            f"{self.name}: it was deleted, evicted, or the server restarted; "
                            "submit it again"
                        )
                connected = events is not None and events.connected
                if done_hint_at is not None or unknown:
                    interval = fast
                elif connected:
                    interval = ws_poll_interval
                else:
                    interval = poll_interval
                next_poll = now + interval
        finally:
            if sub is not None:
                sub.close(finished=finished)

    def _translate(self, prompt_id: str, item: object) -> tuple[FollowUpdate | None, bool]:
        """WS frame -> (update or None, "history should be ready / outcome known").

        One pair per frame, looked up by the frame's type (no generator or isinstance
        chain per frame: this runs for every frame a follower takes, issue 16)."""
        translate = _TRANSLATE.get(type(item))
        return (None, False) if translate is None else translate(prompt_id, item)

    def _from_history(
        self, prompt_id: str, entry: wire.HistoryEntry, seen_start: bool, seen_cached: bool
    ) -> list[FollowUpdate]:
        """Updates the socket may have missed, then the terminal update, from a history entry.

        ``status.messages`` holds ``[kind, data]`` pairs; a pair of another shape is not a
        message and is skipped. The outputs are read strictly (they are what we download).
        """
        updates: list[FollowUpdate] = []
        status = entry.status or wire.HistoryStatus()
        error: dict[str, Any] | None = None
        interrupted: dict[str, Any] | None = None
        for pair in status.messages:
            if not isinstance(pair, list) or len(pair) != 2 or not isinstance(pair[1], dict):
                continue
            kind, data = pair
            if kind == "execution_start" and not seen_start:
                updates.append(PromptStarted(prompt_id))
            elif kind == "execution_cached" and not seen_cached:
                nodes = data.get("nodes")
                cached = tuple(str(n) for n in nodes) if isinstance(nodes, list) else ()
                updates.append(NodesCached(prompt_id, cached))
            elif kind == "execution_error":
                error = data
            elif kind == "execution_interrupted":
                interrupted = data
        outputs: list[OutputFile] = []
        for node_id, ui in entry.outputs.items():
            outputs.extend(outputs_from_ui(node_id, ui, strict=True))
        if interrupted is not None:
            updates.append(
                PromptInterrupted(
                    prompt_id,
                    _text(interrupted.get("node_id")),
                    _text(interrupted.get("node_type")),
                )
            )
        elif error is not None or status.status_str == "error":
            error = error or {}
            updates.append(
                PromptFailed(
                    prompt_id,
                    _text(error.get("node_id")),
                    _text(error.get("node_type")),
                    _text(error.get("exception_type")) or "unknown",
                    (
                        _text(error.get("exception_message")) or "the server reported an error"
                    ).strip(),
                )
            )
        else:
            updates.append(PromptSucceeded(prompt_id, tuple(outputs)))
        return updates

    async def wait(self, prompt_id: str, **follow_kwargs: Any) -> PromptSucceeded:
        """Follow to the end; raise :class:`ExecutionError` / :class:`PromptInterruptedError`."""
        async with contextlib.aclosing(self.follow(prompt_id, **follow_kwargs)) as updates:
            async for update in updates:
                if isinstance(update, PromptSucceeded):
                    return update
                if isinstance(update, PromptFailed):
                    first_line = (update.exception_message.splitlines() or [""])[0]
                    raise ExecutionError(
                        f"prompt {prompt_id} failed on {self.name} in node {update.node_id} "
                        f"({update.node_type}): {update.exception_type}: {first_line}",
                        node_id=update.node_id,
                        node_type=update.node_type,
                        exception_type=update.exception_type,
                    )
                if isinstance(update, PromptInterrupted):
                    raise PromptInterruptedError(
                        f"prompt {prompt_id} was interrupted on {self.name} before node "
                        f"{update.node_id} ({update.node_type})"
                    )
        raise PromptLostError(f"following prompt {prompt_id} on {self.name} ended without outcome")
