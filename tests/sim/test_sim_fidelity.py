"""Fidelity: every capture of the real server, replayed against the simulator.

The WebSocket logs (``ws_*.jsonl``) are replayed *in time*: under MockClock, with the
simulator at real speed (``ComfyTimings.real()``) and in the state the real server was in
(the files earlier captures saved, its queue counter), each socket opens, each request is
sent and each socket closes as long after the last worker frame the client had received as
in the capture (the client acted on them: a ``/history`` read follows ``executing null``, a
queue clear follows ``execution_start``), and not before the frames it had received by then
have arrived. Then, per socket, the frames must come in the captured order with the
captured key fields (``norm``), and every HTTP answer must have the captured status and the
captured body's shape (keys and value types). Because the requests keep their captured
timing, the interleavings that depend on how long nodes and the worker take (an interrupt
landing mid-blur, a queue cleared while a prompt frees the last one's outputs, two POSTs
answered before the worker's pause ends) are checked too.

The other captures (single answers, summaries, statistics) each have a check below, and
:func:`test_every_capture_is_replayed` fails when a capture has none.
"""

from __future__ import annotations

import copy
import gzip
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio_websocket
from sim_support import norm, run_prompt

from conjure_actors.clock import TrioWallClock
from conjure_actors.sim.catalog import OBJECT_INFO
from conjure_actors.sim.comfyui import ComfyUISim
from conjure_actors.sim.comfyui_nodes import EXECUTABLE_CLASSES
from conjure_actors.sim.media import write_png
from conjure_actors.sim.timings import ComfyTimings

CAPTURES = Path(__file__).parent.parent / "data" / "captures"
_JSON = dict[str, Any]


def lines_of(name: str) -> list[_JSON]:
    return [json.loads(line) for line in (CAPTURES / name).read_text().splitlines() if line]


def load(name: str) -> Any:
    return json.loads((CAPTURES / name).read_text())


def shape(value: Any) -> Any:
    """Keys and value types, recursively (list lengths kept)."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items() if k != "traceback"}
    if isinstance(value, list):
        return [shape(v) for v in value]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return "number"
    return type(value).__name__


class Socket:
    """A replayed client socket and the frames it received."""

    def __init__(self, conn: trio_websocket.WebSocketConnection) -> None:
        self.conn = conn
        self.frames: list[_JSON] = []
        self.times: list[float] = []  # when each frame came
        self.closed = trio.Event()
        self._changed = trio.Event()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def read(self) -> None:
        try:
            while True:
                message = await self.conn.get_message()
                if isinstance(message, bytes):
                    event = int.from_bytes(message[:4], "big")
                    self.frames.append({"kind": "binary", "event": event})
                else:
                    self.frames.append({"kind": "json", **json.loads(message)})
                self.times.append(trio.current_time())
                self._notify()
        except trio_websocket.ConnectionClosed:
            self.closed.set()
            self._notify()

    async def received(self, count: int) -> None:
        """Wait until ``count`` frames have come (or the socket closed)."""
        while len(self.frames) < count and not self.closed.is_set():
            await self._changed.wait()

    async def arrival(self, first: int, key: tuple[Any, ...], nth: int) -> float | None:
        """When the ``nth`` frame (from 0) like ``key`` (``norm``) at or after index
        ``first`` came; None if the socket closed first."""
        checked, found = first, -1
        while True:
            for index in range(checked, len(self.frames)):
                if norm(self.frames[index]) == key:
                    found += 1
                    if found == nth:
                        return self.times[index]
            checked = len(self.frames)
            if self.closed.is_set():
                return None
            await self._changed.wait()


_SETUP: dict[str, Callable[[ComfyUISim], None]] = {
    "ws_execution_error.jsonl": lambda sim: sim.add_input(
        "heldout_broken.png", b"this is not a png"
    ),
    "ws_loadimage_run.jsonl": lambda sim: (
        sim.add_input("heldout_input.png", write_png(40, 30, b"input")),
        sim.add_input("sub.png", write_png(40, 30, b"sub"), "heldout"),
    ),
}
#: Captures that continue another one on the same server.
_BEFORE: dict[str, str] = {
    "ws_cached_run.jsonl": "ws_normal_run.jsonl",
    "ws_ws_preview_metadata.jsonl": "ws_ws_preview_legacy.jsonl",
    "ws_queue_shape.jsonl": "ws_queue_and_interrupt.jsonl",
}


def first_number(name: str) -> float:
    """The queue number of the capture's first accepted prompt: the server's order."""
    numbers = [
        line["response"]["number"]
        for line in lines_of(name)
        if line.get("path") == "/prompt" and line["method"] == "POST" and line["status"] == 200
    ]
    return abs(min(numbers, key=abs)) if numbers else float("inf")


def counter_at_start(name: str) -> int:
    """The server's queue counter when ``name`` began: its first accepted prompt's number,
    less the POSTs before it that took a number too (rejected ones do)."""
    lines = lines_of(name)
    first = next(
        i
        for i, line in enumerate(lines)
        if line.get("path") == "/prompt" and line["method"] == "POST" and line["status"] == 200
    )
    taken = sum(
        1
        for line in lines[:first]
        if line.get("path") == "/prompt"
        and line["method"] == "POST"
        and isinstance(line.get("request_json"), dict)
        and "number" not in line["request_json"]
    )
    return int(first_number(name)) - taken


def outputs_before(name: str) -> list[str]:
    """The files in ``output/`` that the captures taken earlier on the same server saved.

    All the captures come from one server process (their queue numbers run on), so a
    SaveImage numbers its file after those (``invert_00003_`` in ws_queue_shape)."""
    here = first_number(name)
    paths: list[str] = []
    for path in sorted(CAPTURES.glob("ws_*.jsonl")):
        if first_number(path.name) >= here:
            continue
        for line in lines_of(path.name):
            frame = line.get("frame", {})
            if line.get("dir") != "in" or frame.get("type") != "executed":
                continue
            images = frame["data"]["output"].get("images", [])
            paths.extend(
                f"output/{i['subfolder']}/{i['filename']}" for i in images if i["type"] == "output"
            )
    return paths


def prepare(sim: ComfyUISim, name: str) -> None:
    """The server as it was when ``name`` (or the capture it continues) was taken."""
    for path in outputs_before(_BEFORE.get(name, name)):
        sim.add_file(path, write_png(8, 8, path.encode()))
    _SETUP.get(name, lambda s: None)(sim)


def _server_records() -> dict[str, _JSON]:
    """Each prompt's graph as the server recorded it (history and queue captures), by id."""
    graphs: dict[str, _JSON] = {}

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for each in value.values():
                walk(each)
        elif isinstance(value, list):
            if len(value) >= 3 and isinstance(value[1], str) and isinstance(value[2], dict):
                graphs[value[1]] = value[2]  # [number, prompt_id, prompt, extra, outputs]
            for each in value:
                walk(each)

    for path in [*CAPTURES.glob("history_*.json"), *CAPTURES.glob("queue_*.json")]:
        walk(load(path.name))
    return graphs


#: The client's log can be wrong about what it sent: ws_reconnect_same_client_id logged
#: its first prompt with color 4243, but the server recorded 4242 (history_max_items_2):
#: the capture tool logged the body after changing it for the second POST. That is why
#: the real server ran the "identical" second prompt again. The replay sends what the
#: server received.
SERVER_RECORDS: dict[str, _JSON] = _server_records()
#: Requests whose parameters the log does not record (covered by their own captures:
#: upload_image_responses.json, view_responses.json).
_UNRECORDED: frozenset[str] = frozenset({"/upload/image", "/view"})


def trigger(lines: list[_JSON], at: int) -> int | None:
    """The last frame the client of ``lines`` had surely received before taking the action
    of ``lines[at]``: a request is logged when its answer came, so the frames it caused may
    come before it in the log (a ``status``; the worker's frames of the prompt it posts)."""
    own = lines[at].get("response") if lines[at].get("path") == "/prompt" else None
    pid = own.get("prompt_id") if isinstance(own, dict) else None
    for before in range(at - 1, -1, -1):
        frame = lines[before].get("frame", {})
        if lines[before].get("dir") != "in" or frame.get("type") == "status":
            continue
        if pid is not None and frame.get("data", {}).get("prompt_id") == pid:
            continue
        return before
    return None


async def replay(
    sim: ComfyUISim,
    http: httpx.AsyncClient,
    nursery: trio.Nursery,
    name: str,
    sockets: dict[str, Socket] | None = None,
) -> tuple[dict[str, Socket], list[tuple[_JSON, httpx.Response]]]:
    """Replay ``name`` in time; the sockets (by capture name) and the HTTP exchanges.

    The capture's client acted on the frames it received (queue_and_interrupt.json:
    ``started_after_A``), so each action comes as long after the frame that preceded it
    (:func:`trigger`) as in the capture, once the frames received by then have come here:
    it follows the simulator's timeline, as the client followed the real server's. Actions
    before any such frame come at the captured millisecond.

    ``sockets`` are those still open from the capture this one continues."""
    lines = lines_of(name)
    # The captures come from one server: its queue counter stood where the capture shows
    # (the worker's periodic pause depends on it, ComfyTimings.pause_every).
    sim._number = max(sim._number, counter_at_start(name))
    sockets = sockets if sockets is not None else {}
    already = {src: len(socket.frames) for src, socket in sockets.items()}
    answers: list[tuple[_JSON, httpx.Response]] = []
    start = trio.current_time()

    def received_by(at: int) -> dict[str, int]:
        """Frames each socket had received in the capture up to ``lines[at]``."""
        counts: dict[str, int] = {}
        for line in lines[: at + 1]:
            if line.get("dir") == "in":
                counts[line["src"]] = counts.get(line["src"], 0) + 1
        return counts

    async def when(at: int) -> float:
        cause = trigger(lines, at)
        if cause is None:
            return start + lines[at]["t_ms"] / 1000
        line = lines[cause]
        src, key = line["src"], norm(line["frame"])
        nth = sum(
            1
            for ln in lines[:cause]
            if ln.get("src") == src and ln.get("dir") == "in" and norm(ln["frame"]) == key
        )
        with trio.move_on_after(60):
            came = await sockets[src].arrival(already.get(src, 0), key, nth)
            if came is not None:
                return came + (lines[at]["t_ms"] - line["t_ms"]) / 1000
        return trio.current_time()

    async def caught_up(counts: dict[str, int]) -> None:
        """The client acted on what it had received: wait for the same frames here."""
        with trio.move_on_after(60):
            for src, count in counts.items():
                await sockets[src].received(already.get(src, 0) + count)

    for at, line in enumerate(lines):
        src = line.get("src", "")
        direction = line.get("dir")
        if direction in ("in", "closed") or src == "note":
            continue
        if src == "http" and line["path"] in _UNRECORDED:
            continue
        await trio.sleep_until(await when(at))
        if src.startswith("ws:"):
            if direction == "open":
                already[src] = 0  # a new socket under a name the earlier capture used
                # ws_big_frame names its sockets by the client's message size limit.
                limit = 2**20 if "1MiB" in src else 64 * 2**20
                conn = await sim.connect_ws_in_memory(nursery, line["url"], max_message_size=limit)
                sockets[src] = Socket(conn)
                nursery.start_soon(sockets[src].read)
            elif direction == "out":
                await sockets[src].conn.send_message(json.dumps(line["frame"]))
            elif direction == "close-by-client":
                await caught_up(received_by(at))
                await sockets[src].conn.aclose()
        elif src == "http":
            cause = trigger(lines, at)
            await caught_up(received_by(cause) if cause is not None else {})
            body = copy.deepcopy(line.get("request_json"))
            if line["path"] == "/prompt" and line["method"] == "POST" and line["status"] == 200:
                body["prompt_id"] = line["response"]["prompt_id"]  # the captured id
                body["prompt"] = SERVER_RECORDS.get(body["prompt_id"], body["prompt"])
            response = await http.request(
                line["method"], line["path"], json=body if body is not None else None
            )
            answers.append((line, response))
    return sockets, answers


def captured_frames(lines: list[_JSON], src: str) -> list[_JSON]:
    return [ln["frame"] for ln in lines if ln.get("src") == src and ln.get("dir") == "in"]


@pytest.fixture
async def served(nursery: trio.Nursery) -> AsyncIterator[tuple[ComfyUISim, httpx.AsyncClient]]:
    sim = ComfyUISim(wall=TrioWallClock().now, timings=ComfyTimings.real())
    await nursery.start(sim.run)
    transport = httpx.ASGITransport(app=sim.asgi)
    async with httpx.AsyncClient(transport=transport, base_url="http://sim.invalid") as http:
        yield sim, http


WS_CAPTURES = sorted(p.name for p in CAPTURES.glob("ws_*.jsonl") if "history_race" not in p.name)


@pytest.mark.slow  # ~0.3 s or more: the inner loop runs without it, CI with it
@pytest.mark.parametrize("name", WS_CAPTURES)
async def test_ws_capture_replays_with_the_same_frames_statuses_and_shapes(
    served: tuple[ComfyUISim, httpx.AsyncClient],
    nursery: trio.Nursery,
    autojump_clock: trio.abc.Clock,
    name: str,
) -> None:
    """Replayed in time at real speed: each socket's frames, each answer's status and shape."""
    sim, http = served
    prepare(sim, name)
    sockets: dict[str, Socket] = {}
    if name in _BEFORE:
        sockets, _ = await replay(sim, http, nursery, _BEFORE[name])
        await trio.sleep(1.0)
    already = {id(socket): len(socket.frames) for socket in sockets.values()}
    sockets, answers = await replay(sim, http, nursery, name, sockets)
    await trio.sleep(5.0)  # simulated: let the last prompt finish
    lines = lines_of(name)
    for src, socket in sockets.items():
        want = [norm(f) for f in captured_frames(lines, src)]
        got = [norm(f) for f in socket.frames[already.get(id(socket), 0) :]]
        assert got == want, src
    for line, response in answers:
        where = f"{line['method']} {line['path']} at {line['t_ms']} ms"
        assert response.status_code == line["status"], where
        if "response" in line:
            assert shape(response.json()) == shape(line["response"]), where


async def test_a_prompt_differing_in_one_input_runs_again_like_on_the_real_server(
    served: tuple[ComfyUISim, httpx.AsyncClient],
    nursery: trio.Nursery,
    autojump_clock: trio.abc.Clock,
) -> None:
    """history_max_items_2: color 4242 then 4243, nothing cached, the second saves anew."""
    sim, http = served
    captured = load("history_max_items_2.json")["body"]
    got = {
        pid: await run_prompt(sim, http, nursery, {"prompt": entry["prompt"][2], "prompt_id": pid})
        for pid, entry in captured.items()
    }
    for pid, entry in captured.items():
        cached = [m[1]["nodes"] for m in got[pid]["status"]["messages"] if "nodes" in m[1]]
        assert cached == [m[1]["nodes"] for m in entry["status"]["messages"] if "nodes" in m[1]]
    (first, second) = (got[pid]["outputs"]["3"]["images"][0]["filename"] for pid in captured)
    assert (first, second) == ("invert_00001_.png", "invert_00002_.png")


def test_every_capture_is_replayed() -> None:
    """Each capture copied from the real server has a replay here or in test_sim_*."""
    covered = set(WS_CAPTURES) | set(OTHER_CHECKS)
    present = {p.name for p in CAPTURES.iterdir() if p.is_file()}
    assert present - covered == set()


# ---------------------------------------------------------------------- single answers


async def _history_after(
    sim: ComfyUISim, http: httpx.AsyncClient, nursery: trio.Nursery, name: str
) -> _JSON:
    prepare(sim, name)
    sockets: dict[str, Socket] = {}
    if name in _BEFORE:
        sockets, _ = await replay(sim, http, nursery, _BEFORE[name])
        await trio.sleep(1.0)
    _, answers = await replay(sim, http, nursery, name, sockets)
    await trio.sleep(5.0)
    pid = next(line["response"]["prompt_id"] for line, _ in answers if line["path"] == "/prompt")
    history: _JSON = (await http.get(f"/history/{pid}")).json()
    return history


@pytest.mark.parametrize(
    ("capture", "log"),
    [
        ("history_normal_run.json", "ws_normal_run.jsonl"),
        ("history_cached_run.json", "ws_cached_run.jsonl"),
        ("history_execution_error.json", "ws_execution_error.jsonl"),
        ("history_ws_preview_legacy.json", "ws_ws_preview_legacy.jsonl"),
        ("history_ws_preview_metadata.json", "ws_ws_preview_metadata.jsonl"),
    ],
)
async def test_history_entry_has_the_captured_shape(
    served: tuple[ComfyUISim, httpx.AsyncClient],
    nursery: trio.Nursery,
    autojump_clock: trio.abc.Clock,
    capture: str,
    log: str,
) -> None:
    """/history/{id} after the replayed run has the captured entry's shape and messages."""
    sim, http = served
    got = await _history_after(sim, http, nursery, log)
    want = load(capture)
    (got_entry,), (want_entry,) = got.values(), want.values()
    assert shape(got_entry) == shape(want_entry)
    kinds = [m[0] for m in got_entry["status"]["messages"]]
    assert kinds == [m[0] for m in want_entry["status"]["messages"]]


async def test_loadimage_history_lists_outputs_in_the_captured_order(
    served: tuple[ComfyUISim, httpx.AsyncClient],
    nursery: trio.Nursery,
    autojump_clock: trio.abc.Clock,
) -> None:
    """history_loadimage_run: the same outputs (Save and Preview) and output order."""
    sim, http = served
    (got,) = (await _history_after(sim, http, nursery, "ws_loadimage_run.jsonl")).values()
    (want,) = load("history_loadimage_run.json").values()
    assert got["prompt"][4] == want["prompt"][4]
    assert sorted(got["outputs"]) == sorted(want["outputs"])
    assert got["status"]["status_str"] == want["status"]["status_str"]


async def test_queue_answers_have_the_captured_shapes(
    served: tuple[ComfyUISim, httpx.AsyncClient], autojump_clock: trio.abc.Clock
) -> None:
    """/queue idle, then with one running and pending items (queue_running_and_pending)."""
    _, http = served
    assert (await http.get("/queue")).json() == load("queue_idle.json")["body"]
    assert (await http.get("/queue")).json() == load("queue_empty.json")
    want = load("queue_running_and_pending.json")
    for item in [*want["queue_running"], *want["queue_pending"]]:
        body = {"prompt": item[2], "number": item[0], "prompt_id": item[1], **item[3]}
        assert (await http.post("/prompt", json=body)).status_code == 200
    await trio.sleep(0.001)
    got = (await http.get("/queue")).json()
    assert len(got["queue_running"]) == len(want["queue_running"])
    assert sorted(i[0] for i in got["queue_pending"]) == sorted(i[0] for i in want["queue_pending"])
    assert shape(got["queue_running"]) == shape(want["queue_running"])


@pytest.mark.parametrize(
    ("capture", "path"),
    [
        ("get_prompt.json", "/prompt"),
        ("api_prefix_get_prompt.json", "/api/prompt"),
        ("features.json", "/features"),
        ("object_info_unknown.json", "/object_info/NoSuchNode"),
        ("system_stats.json", "/system_stats"),
    ],
)
async def test_json_route_has_the_captured_status_and_shape(
    served: tuple[ComfyUISim, httpx.AsyncClient],
    autojump_clock: trio.abc.Clock,
    capture: str,
    path: str,
) -> None:
    """A JSON route: the captured status, content type and body shape."""
    _, http = served
    want = load(capture)
    response = await http.get(path)
    assert response.status_code == want.get("status", 200)
    assert shape(response.json()) == shape(want.get("body", want))


@pytest.mark.parametrize(
    "capture",
    [
        "object_info_EmptyImage.json",
        "object_info_ImageBlur_v3_node.json",
        "object_info_LoadImage.json",
        "object_info_SaveImage.json",
    ],
)
async def test_object_info_class_equals_the_capture(
    served: tuple[ComfyUISim, httpx.AsyncClient], autojump_clock: trio.abc.Clock, capture: str
) -> None:
    """/object_info/{class} is the captured answer (LoadImage's file list aside)."""
    _, http = served
    want = load(capture)["body"]
    (cls,) = want
    got = (await http.get(f"/object_info/{cls}")).json()
    if cls == "LoadImage":
        got[cls]["input"]["required"]["image"][0] = want[cls]["input"]["required"]["image"][0]
    assert got == want


def test_object_info_summary_matches() -> None:
    """478 real classes (plus the CONJURE custom node); the model-free ones all run."""
    want = load("object_info_summary.json")
    assert len(OBJECT_INFO) == want["node_count"] + 1
    present = set(want["model_free_image_nodes_present"])
    assert present <= set(OBJECT_INFO)
    assert present - {"SaveImageWebsocket"} <= EXECUTABLE_CLASSES | {"SaveImageWebsocket"}
    assert present <= EXECUTABLE_CLASSES


def test_full_object_info_copy_is_the_catalogue() -> None:
    """object_info_full.json.gz (the real /object_info) is what the catalogue ships."""
    real = json.loads(gzip.decompress((CAPTURES / "object_info_full.json.gz").read_bytes()))
    assert set(OBJECT_INFO) - set(real) == {"DepthAnythingV2Preprocessor"}
    assert OBJECT_INFO["ImageFlip"] == real["ImageFlip"]


def _captured_request(body: _JSON) -> _JSON:
    """The request of ws_validation_errors.jsonl that got ``body`` (prompt_400_bodies.json
    holds the answers, the log the requests)."""
    for line in lines_of("ws_validation_errors.jsonl"):
        if line.get("path") == "/prompt" and _same_answer(line.get("response"), body):
            request: _JSON = line["request_json"]
            return request
    raise LookupError("no captured request got this answer")


def _same_answer(got: Any, want: _JSON) -> bool:
    if not isinstance(got, dict):
        return False
    if "prompt_id" in want:  # a 200: ids differ between the two captures
        return got.get("node_errors") == want["node_errors"]
    return shape(got) == shape(want) and got.get("error") == want.get("error")


@pytest.mark.parametrize("key", list(load("prompt_400_bodies.json")))
async def test_prompt_answer_has_the_captured_status_and_body(
    served: tuple[ComfyUISim, httpx.AsyncClient], autojump_clock: trio.abc.Clock, key: str
) -> None:
    """Each captured POST /prompt answer: status, and the body's shape or text."""
    _, http = served
    case = load("prompt_400_bodies.json")[key]
    if "body" in case:
        response = await http.post("/prompt", json=_captured_request(case["body"]))
        assert response.status_code == case["status"]
        assert shape(response.json()) == shape(case["body"])
    else:
        content = b"{not json" if key == "body_not_json" else b'{"prompt": [1, 2]}'
        response = await http.post("/prompt", content=content)
        assert response.status_code == case["status"]
        assert response.headers["content-type"] == case["content_type"]
        assert response.text == case["text"]


async def _loadimage_outputs(
    served: tuple[ComfyUISim, httpx.AsyncClient], nursery: trio.Nursery
) -> tuple[httpx.AsyncClient, _JSON]:
    sim, http = served
    (entry,) = (await _history_after(sim, http, nursery, "ws_loadimage_run.jsonl")).values()
    return http, entry["outputs"]


_VIEW_QUERIES = {
    "plain": {},
    "preview_webp_50": {"preview": "webp;50"},
    "preview_jpeg_90": {"preview": "jpeg;90"},
    "channel_rgb": {"channel": "rgb"},
    "channel_a": {"channel": "a"},
}


async def test_view_answers_have_the_captured_status_and_type(
    served: tuple[ComfyUISim, httpx.AsyncClient],
    nursery: trio.Nursery,
    autojump_clock: trio.abc.Clock,
) -> None:
    """view_responses.json: status, content type and disposition of each /view variant."""
    http, outputs = await _loadimage_outputs(served, nursery)
    want = load("view_responses.json")
    (saved,) = outputs["13"]["images"]
    (preview,) = outputs["16"]["images"]
    for key, case in want.items():
        if key in _VIEW_QUERIES:
            params = {**saved, **_VIEW_QUERIES[key]}
        elif key == "preview_image_temp":
            params = preview
        else:
            params = case["params"]
        response = await http.get("/view", params=params)
        assert response.status_code == case["status"], key
        got_type = response.headers.get("content-type") if response.content else None
        assert (got_type or None) == case["content_type"], key
        if "content_disposition" in case:
            name = params["filename"]
            assert response.headers["content-disposition"] == f'filename="{name}"', key


async def test_upload_answers_match_the_capture(
    served: tuple[ComfyUISim, httpx.AsyncClient], autojump_clock: trio.abc.Clock
) -> None:
    """upload_image_responses.json: the stored names, in the captured sequence."""
    _, http = served
    want = load("upload_image_responses.json")
    png, other = write_png(8, 8, b"a"), write_png(8, 8, b"b")
    steps = {
        "first_upload_overwrite_true": ("heldout_input.png", png, {"overwrite": "true"}),
        "same_bytes_again_no_overwrite": ("heldout_input.png", png, {}),
        "different_bytes_same_name_no_overwrite": ("heldout_input.png", other, {}),
        "into_subfolder": ("sub.png", png, {"subfolder": "heldout"}),
    }
    for key, (name, data, fields) in steps.items():
        response = await http.post("/upload/image", files={"image": (name, data)}, data=fields)
        assert response.status_code == want[key]["status"], key
        assert response.json() == want[key]["body"], key


@pytest.mark.slow  # ~0.3 s or more: the inner loop runs without it, CI with it
async def test_big_frame_closes_a_default_client_and_reaches_a_raised_one(
    served: tuple[ComfyUISim, httpx.AsyncClient],
    nursery: trio.Nursery,
    autojump_clock: trio.abc.Clock,
) -> None:
    """big_frame_result.json: a 1 MiB client gets 1009, the prompt still succeeds."""
    sim, http = served
    sockets, answers = await replay(sim, http, nursery, "ws_big_frame.jsonl")
    await trio.sleep(5.0)
    want = load("big_frame_result.json")
    first = sockets["ws:default_1MiB"]
    assert first.closed.is_set()
    assert first.conn.closed is not None
    assert first.conn.closed.code == 1009
    pid = next(line["response"]["prompt_id"] for line, _ in answers if line["path"] == "/prompt")
    (entry,) = (await http.get(f"/history/{pid}")).json().values()
    assert entry["status"]["status_str"] == want["default_1MiB"]["history_status"]
    binary = [f for f in sockets["ws:raised_64MiB"].frames if f["kind"] == "binary"]
    assert binary[0]["event"] == want["raised_64MiB"]["first_terminal_or_binary_frame"]["event"]


def test_history_race_statistics_on_an_idle_server() -> None:
    """history_race_stats_idle: without the fault, history is never late (0 of 240)."""
    stats = load("history_race_stats_idle.json")
    assert sum(b["history_empty_on_execution_success"] for b in stats["batches"]) == 0
    assert ComfyUISim().faults.history_race_rate == 0.0


def test_history_race_statistics_on_a_loaded_server_are_a_fault_knob() -> None:
    """history_race_stats_cpu_loaded: 10 of 60 late; the knob reproduces that rate."""
    stats = load("history_race_stats_cpu_loaded.json")
    batches = stats.get("batches", [stats])
    late = sum(b["history_empty_on_execution_success"] for b in batches)
    runs = sum(b["runs"] for b in batches)
    assert late > 0
    sim = ComfyUISim(faults=type(ComfyUISim().faults)(history_race_rate=late / runs), seed=1)
    draws = [sim._rng_history.random() < sim.faults.history_race_rate for _ in range(6000)]
    assert sum(draws) / len(draws) == pytest.approx(late / runs, abs=0.03)


OTHER_CHECKS: dict[str, str] = {
    "history_normal_run.json": "test_history_entry_has_the_captured_shape",
    "history_cached_run.json": "test_history_entry_has_the_captured_shape",
    "history_execution_error.json": "test_history_entry_has_the_captured_shape",
    "history_ws_preview_legacy.json": "test_history_entry_has_the_captured_shape",
    "history_ws_preview_metadata.json": "test_history_entry_has_the_captured_shape",
    "history_loadimage_run.json": "test_loadimage_history_lists_outputs_in_the_captured_order",
    "history_max_items_2.json": "test_sim_comfyui: test_history_max_items_returns_the_newest",
    "history_race_stats_idle.json": "test_history_race_statistics_on_an_idle_server",
    "history_race_stats_cpu_loaded.json": "test_history_race_statistics_on_a_loaded_server_...",
    "queue_idle.json": "test_queue_answers_have_the_captured_shapes",
    "queue_empty.json": "test_queue_answers_have_the_captured_shapes",
    "queue_running_and_pending.json": "test_queue_answers_have_the_captured_shapes",
    "queue_and_interrupt.json": "test_sim_comfyui: test_interrupt_history_is_error_...",
    "get_prompt.json": "test_json_route_has_the_captured_status_and_shape",
    "api_prefix_get_prompt.json": "test_json_route_has_the_captured_status_and_shape",
    "features.json": "test_json_route_has_the_captured_status_and_shape",
    "object_info_unknown.json": "test_json_route_has_the_captured_status_and_shape",
    "system_stats.json": "test_json_route_has_the_captured_status_and_shape",
    "object_info_EmptyImage.json": "test_object_info_class_equals_the_capture",
    "object_info_ImageBlur_v3_node.json": "test_object_info_class_equals_the_capture",
    "object_info_LoadImage.json": "test_object_info_class_equals_the_capture",
    "object_info_SaveImage.json": "test_object_info_class_equals_the_capture",
    "object_info_summary.json": "test_object_info_summary_matches",
    "object_info_full.json.gz": "test_full_object_info_copy_is_the_catalogue",
    "prompt_400_bodies.json": "test_prompt_answer_has_the_captured_status_and_body",
    "view_responses.json": "test_view_answers_have_the_captured_status_and_type",
    "upload_image_responses.json": "test_upload_answers_match_the_capture",
    "big_frame_result.json": "test_big_frame_closes_a_default_client_and_reaches_a_raised_one",
    "timings.json": "test_sim_timings: test_real_timings_reproduce_the_capture",
}
