"""ComfyUI's wire formats as typed msgspec Structs: WebSocket frames and HTTP answers.

WebSocket frames are decoded through ONE tagged-union decoder.

A text frame is ``{"type": <tag>, "data": {...}}``: the ``type`` field is the msgspec tag, so
:func:`parse_ws_message` decodes any known frame straight into its Struct in a single pass
(no intermediate dicts), which is faster than a bare ``msgspec.json.decode`` into Python
objects. Unknown types (custom nodes send their own) come back as :class:`UnknownMessage`:
a client logs and ignores them.

Binary frames start with a big-endian u32 event number (``protocol.py`` of ComfyUI):
1 = preview image (``[u32 format 1=JPEG 2=PNG][bytes]``), 4 = preview with JSON metadata
(``[u32 len][json][bytes]``), 3 = text (``[u32 len][node id][utf-8 text]``).

HTTP answers (``/upload/image``, ``/prompt``, ``/history/{id}``, ``/queue``) have their own
Structs below; the client decodes each answer into one with a typed decoder, and a body of
another shape is a :class:`~conjure_actors.clients.errors.ComfyUIResponseError`, never a
``KeyError``. Parts that custom nodes fill freely (a node's UI output, history messages) stay
``Any`` and are checked where they are read.
"""

from __future__ import annotations

from typing import Any, Final

import attrs
import msgspec

__all__ = [
    "PROGRESS_STATE_PREFIXES",
    "BinaryFrame",
    "CachedData",
    "ExecutedData",
    "ExecutedMsg",
    "ExecutingData",
    "ExecutingMsg",
    "ExecutionCachedMsg",
    "ExecutionErrorData",
    "ExecutionErrorMsg",
    "ExecutionInterruptedMsg",
    "ExecutionStartMsg",
    "ExecutionSuccessMsg",
    "FeatureFlagsMsg",
    "HistoryEntry",
    "HistoryStatus",
    "InterruptedData",
    "NodeState",
    "OutputEntry",
    "ProgressData",
    "ProgressMsg",
    "ProgressStateData",
    "ProgressStateMsg",
    "PromptAnswer",
    "PromptStamp",
    "QueueAnswer",
    "QueueEntry",
    "StatusMsg",
    "UnknownMessage",
    "UploadAnswer",
    "WsMessage",
    "parse_binary_frame",
    "parse_ws_message",
]


class ExecInfo(msgspec.Struct, frozen=True):
    queue_remaining: int = 0


class QueueStatus(msgspec.Struct, frozen=True):
    exec_info: ExecInfo = ExecInfo()


class StatusData(msgspec.Struct, frozen=True):
    status: QueueStatus = QueueStatus()
    sid: str | None = None


class PromptStamp(msgspec.Struct, frozen=True):
    prompt_id: str
    timestamp: int | None = None


class CachedData(msgspec.Struct, frozen=True):
    nodes: list[str]
    prompt_id: str
    timestamp: int | None = None


class ExecutingData(msgspec.Struct, frozen=True):
    node: str | None = None
    display_node: str | None = None
    prompt_id: str | None = None


class ProgressData(msgspec.Struct, frozen=True):
    value: float
    max: float
    prompt_id: str | None = None
    node: str | None = None


class NodeState(msgspec.Struct, frozen=True):
    value: float
    max: float
    state: str
    node_id: str
    prompt_id: str
    display_node_id: str | None = None
    parent_node_id: str | None = None
    real_node_id: str | None = None


_NODES_DECODER: Final = msgspec.json.Decoder(dict[str, NodeState])


class ProgressStateData(msgspec.Struct, frozen=True):
    """``progress_state``: every node's state, sent on each step of each node (the most
    frequent frame, and the largest: ~20 nodes of 8 fields). The client routes it by prompt
    id and reads nothing else in it, so the nodes stay raw JSON until :attr:`nodes` is read:
    decoding them into structs on every frame cost ~7% of the CPU per WebSocket message of
    the whole pipeline (``bench/ws_trace.py``)."""

    prompt_id: str
    raw_nodes: msgspec.Raw = msgspec.field(name="nodes")

    @property
    def nodes(self) -> dict[str, NodeState]:
        """Every node's state, decoded (typed) at each read; ``msgspec.ValidationError`` if
        the server sent them in another shape."""
        nodes: dict[str, NodeState] = _NODES_DECODER.decode(self.raw_nodes)
        return nodes


class ExecutedData(msgspec.Struct, frozen=True):
    node: str
    prompt_id: str
    output: dict[str, Any] | None = None
    display_node: str | None = None


class ExecutionErrorData(msgspec.Struct, frozen=True):
    prompt_id: str
    node_id: str | None = None
    node_type: str | None = None
    executed: list[str] = []
    exception_message: str = ""
    exception_type: str = ""
    traceback: list[str] = []
    current_inputs: Any = None
    current_outputs: Any = None
    timestamp: int | None = None


class InterruptedData(msgspec.Struct, frozen=True):
    prompt_id: str
    node_id: str | None = None
    node_type: str | None = None
    executed: list[str] = []
    timestamp: int | None = None


class _Msg(msgspec.Struct, frozen=True, tag_field="type"):
    pass


class StatusMsg(_Msg, frozen=True, tag="status"):
    data: StatusData


class ExecutionStartMsg(_Msg, frozen=True, tag="execution_start"):
    data: PromptStamp


class ExecutionCachedMsg(_Msg, frozen=True, tag="execution_cached"):
    data: CachedData


class ExecutingMsg(_Msg, frozen=True, tag="executing"):
    data: ExecutingData


class ProgressMsg(_Msg, frozen=True, tag="progress"):
    data: ProgressData


class ProgressStateMsg(_Msg, frozen=True, tag="progress_state"):
    data: ProgressStateData


class ExecutedMsg(_Msg, frozen=True, tag="executed"):
    data: ExecutedData


class ExecutionSuccessMsg(_Msg, frozen=True, tag="execution_success"):
    data: PromptStamp


class ExecutionErrorMsg(_Msg, frozen=True, tag="execution_error"):
    data: ExecutionErrorData


class ExecutionInterruptedMsg(_Msg, frozen=True, tag="execution_interrupted"):
    data: InterruptedData


class FeatureFlagsMsg(_Msg, frozen=True, tag="feature_flags"):
    data: dict[str, Any]


WsMessage = (
    StatusMsg
    | ExecutionStartMsg
    | ExecutionCachedMsg
    | ExecutingMsg
    | ProgressMsg
    | ProgressStateMsg
    | ExecutedMsg
    | ExecutionSuccessMsg
    | ExecutionErrorMsg
    | ExecutionInterruptedMsg
    | FeatureFlagsMsg
)


class UnknownMessage(msgspec.Struct, frozen=True):
    """A frame with a type this client does not know (or a malformed known one)."""

    type: str
    data: Any = None


PROGRESS_STATE_PREFIXES: Final = ('{"type": "progress_state"', '{"type":"progress_state"')
"""How a ``progress_state`` text frame starts (ComfyUI's ``json.dumps`` writes ``type``
first; the second form is the compact one): a client that drops these frames can skip them
without decoding (a frame that starts so and is malformed is dropped all the same)."""

_DECODER: Final = msgspec.json.Decoder(WsMessage)
_FALLBACK: Final = msgspec.json.Decoder(UnknownMessage)


def parse_ws_message(text: str | bytes) -> WsMessage | UnknownMessage:
    """Decode one text frame; unknown or malformed frames give :class:`UnknownMessage`."""
    try:
        message: WsMessage = _DECODER.decode(text)
    except msgspec.ValidationError:
        try:
            return _FALLBACK.decode(text)
        except msgspec.DecodeError:
            return UnknownMessage(type="<malformed>")
    except msgspec.DecodeError:
        return UnknownMessage(type="<malformed>")
    return message


_IMAGE_FORMATS: Final = {1: "image/jpeg", 2: "image/png"}


@attrs.frozen
class BinaryFrame:
    """A decoded binary frame: a preview image (event 1 or 4) or a text message (event 3)."""

    event: int
    data: bytes = attrs.field(repr=lambda d: f"<{len(d)} bytes>")
    image_type: str | None = None
    prompt_id: str | None = None
    node_id: str | None = None
    text: str | None = None


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


def parse_binary_frame(frame: bytes) -> BinaryFrame:
    """Decode a binary frame; unknown event numbers keep their payload as ``data``."""
    if len(frame) < 4:
        return BinaryFrame(event=-1, data=bytes(frame))
    event = int.from_bytes(frame[:4], "big")
    if event == 1 and len(frame) >= 8:
        fmt = int.from_bytes(frame[4:8], "big")
        return BinaryFrame(event=1, data=bytes(frame[8:]), image_type=_IMAGE_FORMATS.get(fmt))
    if event == 4 and len(frame) >= 8:
        size = int.from_bytes(frame[4:8], "big")
        try:
            meta = msgspec.json.decode(frame[8 : 8 + size])
        except msgspec.DecodeError:
            meta = {}
        if not isinstance(meta, dict):
            meta = {}
        return BinaryFrame(
            event=4,
            data=bytes(frame[8 + size :]),
            image_type=_str_or_none(meta.get("image_type")),
            prompt_id=_str_or_none(meta.get("prompt_id")),
            node_id=_str_or_none(meta.get("node_id")),
        )
    if event == 3 and len(frame) >= 8:
        size = int.from_bytes(frame[4:8], "big")
        node = frame[8 : 8 + size].decode("utf-8", "replace")
        text = frame[8 + size :].decode("utf-8", "replace")
        return BinaryFrame(event=3, data=b"", node_id=node, text=text)
    return BinaryFrame(event=event, data=bytes(frame[4:]))


# ---------------------------------------------------------------------------- HTTP answers


class UploadAnswer(msgspec.Struct, frozen=True):
    """``POST /upload/image``: the name the server stored the file under."""

    name: str
    subfolder: str = ""
    type: str | None = None


class PromptAnswer(msgspec.Struct, frozen=True):
    """``POST /prompt`` (200). ``node_errors`` is read leniently (warnings only)."""

    prompt_id: str | None = None
    number: float | None = None
    node_errors: Any = None


class HistoryStatus(msgspec.Struct, frozen=True):
    status_str: str | None = None
    completed: bool | None = None
    messages: list[Any] = []


class HistoryEntry(msgspec.Struct, frozen=True):
    """One prompt's ``/history/{id}`` entry (the graph and ``meta`` are not decoded)."""

    outputs: dict[str, Any] = {}
    status: HistoryStatus | None = None


class OutputEntry(msgspec.Struct, frozen=True):
    """One file in a node's UI output (``{filename, subfolder, type}``)."""

    filename: str
    subfolder: str = ""
    type: str = "output"


class QueueExtra(msgspec.Struct, frozen=True):
    client_id: str | None = None


class QueueEntry(msgspec.Struct, frozen=True, array_like=True):
    """``[number, prompt_id, prompt, extra_data, outputs_to_execute]``; the graph is not
    decoded (it can be big, P7), and a sixth element (newer servers) is ignored."""

    number: float
    prompt_id: str
    prompt: msgspec.Raw = msgspec.Raw(b"null")
    extra_data: QueueExtra | None = None


class QueueAnswer(msgspec.Struct, frozen=True):
    queue_running: list[QueueEntry] = []
    queue_pending: list[QueueEntry] = []


HISTORY_DECODER: Final = msgspec.json.Decoder(dict[str, msgspec.Raw])
HISTORY_ENTRY_DECODER: Final = msgspec.json.Decoder(HistoryEntry)
UPLOAD_DECODER: Final = msgspec.json.Decoder(UploadAnswer)
PROMPT_DECODER: Final = msgspec.json.Decoder(PromptAnswer)
QUEUE_DECODER: Final = msgspec.json.Decoder(QueueAnswer)
