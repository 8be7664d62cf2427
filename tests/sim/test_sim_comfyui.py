"""Conformance of the ComfyUI simulator with the captures of a real server (tests/data/captures).

Each scenario replays the captured request against the simulator (in memory: httpx's ASGI
transport and trio-websocket over memory streams, under MockClock) and compares the WebSocket
frames (types and key fields, in order) and the HTTP bodies with what the real server sent.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio_websocket
from hypothesis import given
from hypothesis import strategies as st
from sim_support import norm

from conjure_actors.clock import TrioWallClock
from conjure_actors.sim.comfyui import ComfyFaults, ComfyTimings, ComfyUISim
from conjure_actors.sim.media import write_png

CAPTURES = Path(__file__).parent.parent / "data" / "captures"
_Frame = dict[str, Any]


def load(name: str) -> Any:
    return json.loads((CAPTURES / name).read_text())


def capture_lines(name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (CAPTURES / name).read_text().splitlines() if line]


def captured_frames(name: str, src: str = "ws:A") -> list[_Frame]:
    return [
        ln["frame"]
        for ln in capture_lines(name)
        if ln.get("src") == src and "frame" in ln and ln.get("dir") == "in"
    ]


def captured_posts(name: str) -> list[dict[str, Any]]:
    return [
        ln
        for ln in capture_lines(name)
        if ln.get("method") == "POST" and ln.get("path") == "/prompt" and "request_json" in ln
    ]


class Harness:
    """A simulator with its worker, an in-memory HTTP client and WebSocket opener."""

    def __init__(self, sim: ComfyUISim, http: httpx.AsyncClient, nursery: trio.Nursery) -> None:
        self.sim = sim
        self.http = http
        self.nursery = nursery

    async def ws(self, client_id: str | None) -> trio_websocket.WebSocketConnection:
        resource = f"/ws?clientId={client_id}" if client_id else "/ws"
        return await self.sim.connect_ws_in_memory(self.nursery, resource)

    async def post(self, body: dict[str, Any]) -> httpx.Response:
        return await self.http.post("/prompt", json=body)


async def receive(ws: trio_websocket.WebSocketConnection) -> _Frame:
    message = await ws.get_message()
    if isinstance(message, bytes):
        return {"kind": "binary", "event": int.from_bytes(message[:4], "big"), "raw": message}
    return {"kind": "json", **json.loads(message)}


async def collect(
    ws: trio_websocket.WebSocketConnection, stop: Callable[[_Frame], bool]
) -> list[_Frame]:
    frames: list[_Frame] = []
    with trio.fail_after(600):  # simulated seconds (MockClock) in most tests
        while True:
            frame = await receive(ws)
            frames.append(frame)
            if stop(frame):
                return frames


def end_of(prompt_id: str) -> Callable[[_Frame], bool]:
    def stop(frame: _Frame) -> bool:
        return (
            frame.get("type") == "executing"
            and frame["data"]["node"] is None
            and frame["data"].get("prompt_id") == prompt_id
        )

    return stop


@pytest.fixture
async def harness(nursery: trio.Nursery) -> AsyncIterator[Harness]:
    sim = ComfyUISim(wall=TrioWallClock().now)
    await nursery.start(sim.run)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=sim.asgi), base_url="http://sim.invalid"
    ) as http:
        yield Harness(sim, http, nursery)
    nursery.cancel_scope.cancel()


async def run_captured(h: Harness, request: dict[str, Any], client_id: str) -> list[_Frame]:
    body = copy.deepcopy(request)
    body["client_id"] = client_id
    return await run_body(h, body, client_id)


async def run_body(h: Harness, body: dict[str, Any], client_id: str) -> list[_Frame]:
    ws = await h.ws(client_id)
    response = await h.post(body)
    assert response.status_code == 200, response.text
    frames = await collect(ws, end_of(response.json()["prompt_id"]))
    await ws.aclose()
    return frames


async def test_normal_run_frames_match_capture(
    harness: Harness, autojump_clock: trio.abc.Clock
) -> None:
    """invert_save: the frame types and fields come in the captured order."""
    post = captured_posts("ws_normal_run.jsonl")[0]
    frames = await run_captured(harness, post["request_json"], "client-a")
    assert [norm(f) for f in frames] == [norm(f) for f in captured_frames("ws_normal_run.jsonl")]


async def test_every_prompt_frame_names_the_submitted_prompt_id(
    harness: Harness, autojump_clock: trio.abc.Clock
) -> None:
    """Frames that carry a prompt_id carry the id the client chose."""
    post = captured_posts("ws_normal_run.jsonl")[0]
    body = {**post["request_json"], "client_id": "c", "prompt_id": "7d1c1b7e-0000-4000-8000-1"}
    frames = await run_body(harness, body, "c")
    ids = {f["data"]["prompt_id"] for f in frames if "prompt_id" in f.get("data", {})}
    assert ids == {"7d1c1b7e-0000-4000-8000-1"}


async def test_normal_run_history_matches_capture(
    harness: Harness, autojump_clock: trio.abc.Clock
) -> None:
    """/history/{id} after a run equals the captured entry (ids and timestamps aside)."""
    post = captured_posts("ws_normal_run.jsonl")[0]
    body = {**post["request_json"], "client_id": "a962e6638434454aa4cac234cfe64a7c"}
    frames = await run_body(harness, body, body["client_id"])
    pid = frames[-1]["data"]["prompt_id"]
    got = (await harness.http.get(f"/history/{pid}")).json()
    want = load("history_normal_run.json")
    (want_pid,) = want
    text = json.dumps(want).replace(want_pid, pid)
    want = json.loads(text)
    want[pid]["prompt"][0] = got[pid]["prompt"][0]
    strip = re.compile(r'"timestamp": \d+')
    assert strip.sub("T", json.dumps(got, sort_keys=True)) == strip.sub(
        "T", json.dumps(want, sort_keys=True)
    )


async def test_cached_run_frames_match_capture(
    harness: Harness, autojump_clock: trio.abc.Clock
) -> None:
    """The same prompt again: execution_cached lists all, executed repeats the old file."""
    post = captured_posts("ws_normal_run.jsonl")[0]
    await run_captured(harness, post["request_json"], "a")
    again = captured_posts("ws_cached_run.jsonl")[0]
    frames = await run_captured(harness, again["request_json"], "b")
    want = [norm(f) for f in captured_frames("ws_cached_run.jsonl")]
    assert [norm(f) for f in frames][1:] == want  # [0] is the new socket's status+sid


async def test_cached_run_writes_no_new_file(
    harness: Harness, autojump_clock: trio.abc.Clock
) -> None:
    """A fully cached run produces nothing new."""
    post = captured_posts("ws_normal_run.jsonl")[0]
    await run_captured(harness, post["request_json"], "a")
    before = dict(harness.sim.produced)
    await run_captured(harness, post["request_json"], "b")
    assert harness.sim.produced == before


async def test_execution_error_frames_match_capture(
    harness: Harness, autojump_clock: trio.abc.Clock
) -> None:
    """A file that is not an image passes validation and fails at run time."""
    harness.sim.add_input("heldout_broken.png", b"this is not a png")
    post = captured_posts("ws_execution_error.jsonl")[0]
    frames = await run_captured(harness, post["request_json"], "c36a166c25f443b389f7fe623f1b9a2c")
    assert [norm(f) for f in frames] == [
        norm(f) for f in captured_frames("ws_execution_error.jsonl")
    ]


async def test_execution_error_history_matches_capture(
    harness: Harness, autojump_clock: trio.abc.Clock
) -> None:
    """History of a failed run: status error, completed false, the error message kept."""
    harness.sim.add_input("heldout_broken.png", b"this is not a png")
    post = captured_posts("ws_execution_error.jsonl")[0]
    frames = await run_captured(harness, post["request_json"], "c")
    pid = frames[-1]["data"]["prompt_id"]
    got = (await harness.http.get(f"/history/{pid}")).json()[pid]
    (want,) = load("history_execution_error.json").values()
    assert got["status"]["status_str"] == want["status"]["status_str"] == "error"
    assert got["status"]["completed"] is want["status"]["completed"] is False
    assert [m[0] for m in got["status"]["messages"]] == [m[0] for m in want["status"]["messages"]]
    got_err, want_err = got["status"]["messages"][-1][1], want["status"]["messages"][-1][1]
    assert set(got_err) == set(want_err)
    assert got_err["exception_message"] == want_err["exception_message"]
    assert got["outputs"] == want["outputs"] == {}


async def test_interrupt_frames_match_capture(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    """Interrupting a running prompt: the next node gets executing, then interrupted."""
    timings = ComfyTimings(per_class={"ImageBlur": 0.8, "EmptyImage": 0.03})
    sim = ComfyUISim(wall=TrioWallClock().now, timings=timings)
    await nursery.start(sim.run)
    transport = httpx.ASGITransport(app=sim.asgi)
    async with httpx.AsyncClient(transport=transport, base_url="http://sim.invalid") as http:
        ws = await sim.connect_ws_in_memory(nursery, "/ws?clientId=i")
        body = {**captured_posts("ws_queue_and_interrupt.jsonl")[0]["request_json"]}
        body["client_id"] = "i"
        pid = (await http.post("/prompt", json=body)).json()["prompt_id"]
        frames = await collect(
            ws, lambda f: f.get("type") == "executing" and f["data"]["node"] == "2"
        )
        await http.post("/interrupt", json={"prompt_id": "not-the-running-one"})
        await http.post("/interrupt", json={"prompt_id": pid})
        frames += await collect(ws, end_of(pid))
        await ws.aclose()
    nursery.cancel_scope.cancel()
    captured = captured_frames("ws_queue_and_interrupt.jsonl")
    a_pid = load("queue_and_interrupt.json")["prompt_ids"]["A"]
    start = next(i for i, f in enumerate(captured) if f["data"].get("prompt_id") == a_pid)
    end = next(
        i
        for i, f in enumerate(captured)
        if f["type"] == "executing"
        and f["data"]["node"] is None
        and f["data"]["prompt_id"] == a_pid
    )
    want = [norm(f) for f in captured[start : end + 1] if f["type"] != "status"]
    assert [norm(f) for f in frames if f.get("type") != "status"] == want


async def test_interrupt_history_is_error_not_completed(
    harness: Harness, autojump_clock: trio.abc.Clock
) -> None:
    """An interrupted prompt's history says error / completed false with the message."""
    harness.sim.timings = ComfyTimings(per_class={"ImageBlur": 0.8})
    ws = await harness.ws("i")
    body = {**captured_posts("ws_queue_and_interrupt.jsonl")[0]["request_json"], "client_id": "i"}
    pid = (await harness.post(body)).json()["prompt_id"]
    await collect(ws, lambda f: f.get("type") == "executing" and f["data"]["node"] == "2")
    await harness.http.post("/interrupt")
    await collect(ws, end_of(pid))
    entry = (await harness.http.get(f"/history/{pid}")).json()[pid]
    assert entry["status"]["status_str"] == "error"
    assert entry["status"]["completed"] is False
    assert entry["status"]["messages"][-1][0] == "execution_interrupted"


@pytest.mark.parametrize(
    "index",
    range(len(captured_posts("ws_validation_errors.jsonl"))),
)
async def test_validation_answers_match_capture(
    harness: Harness, autojump_clock: trio.abc.Clock, index: int
) -> None:
    """Each captured bad prompt gets the captured status and body (tracebacks aside)."""
    post = captured_posts("ws_validation_errors.jsonl")[index]
    response = await harness.post(post["request_json"])
    assert response.status_code == post["status"]
    got, want = response.json(), copy.deepcopy(post["response"])
    if response.status_code == 200:
        want["prompt_id"], want["number"] = got["prompt_id"], got["number"]

    def drop_tracebacks(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: drop_tracebacks(v) for k, v in value.items() if k != "traceback"}
        if isinstance(value, list):
            return [drop_tracebacks(v) for v in value]
        return value

    assert drop_tracebacks(got) == drop_tracebacks(want)


@pytest.mark.parametrize("body", [b"{not json", b'{"prompt": [1, 2]}'])
async def test_malformed_prompt_bodies_get_500_text(
    harness: Harness, autojump_clock: trio.abc.Clock, body: bytes
) -> None:
    """A body that is not JSON, or a prompt that is a list: 500 text/plain, as captured."""
    want = load("prompt_400_bodies.json")["body_not_json"]
    response = await harness.http.post("/prompt", content=body)
    assert response.status_code == 500
    assert response.headers["content-type"] == want["content_type"]
    assert response.text == want["text"]


async def test_rejected_posts_still_advance_the_number(
    harness: Harness, autojump_clock: trio.abc.Clock
) -> None:
    """The counter goes up on every POST without number, rejected ones included."""
    await harness.post({"client_id": "x"})
    post = captured_posts("ws_normal_run.jsonl")[0]
    response = await harness.post(post["request_json"])
    assert response.json()["number"] == 1


async def test_preview_frames_match_capture_legacy_then_metadata(
    harness: Harness, autojump_clock: trio.abc.Clock
) -> None:
    """SaveImageWebsocket: type-1 frames after progress; type-4 before it with metadata."""
    legacy = captured_posts("ws_ws_preview_legacy.jsonl")[0]
    frames = await run_captured(harness, legacy["request_json"], "legacy")
    assert [norm(f) for f in frames] == [
        norm(f) for f in captured_frames("ws_ws_preview_legacy.jsonl")
    ]
    ws = await harness.ws("meta")
    await ws.send_message(
        json.dumps({"type": "feature_flags", "data": {"supports_preview_metadata": True}})
    )
    first = [await receive(ws), await receive(ws)]
    body = {
        **captured_posts("ws_ws_preview_metadata.jsonl")[0]["request_json"],
        "client_id": "meta",
    }
    pid = (await harness.post(body)).json()["prompt_id"]
    frames = first + await collect(ws, end_of(pid))
    await ws.aclose()
    assert [norm(f) for f in frames] == [
        norm(f) for f in captured_frames("ws_ws_preview_metadata.jsonl")
    ]
    meta_frame = next(f for f in frames if f.get("kind") == "binary")
    size = int.from_bytes(meta_frame["raw"][4:8], "big")
    metadata = json.loads(meta_frame["raw"][8 : 8 + size])
    assert metadata["prompt_id"] == pid
    assert meta_frame["raw"][8 + size :].startswith(b"\x89PNG\r\n\x1a\n")


async def test_prompt_without_client_id_sends_only_shared_frames(
    harness: Harness, autojump_clock: trio.abc.Clock
) -> None:
    """No client_id: an observer sees status, progress and previews, never the outcome."""
    ws = await harness.ws("observer")
    body = captured_posts("ws_no_client_id.jsonl")[0]["request_json"]
    await harness.post(body)
    frames = [await receive(ws)]
    frames += await collect(
        ws,
        lambda f: (
            f.get("type") == "status" and f["data"]["status"]["exec_info"]["queue_remaining"] == 0
        ),
    )
    await ws.aclose()
    want = captured_frames("ws_no_client_id.jsonl", src="ws:observer")
    assert [norm(f) for f in frames] == [norm(f) for f in want]


async def test_loadimage_run_follows_executor_order_and_sends_text(
    harness: Harness, autojump_clock: trio.abc.Clock
) -> None:
    """LoadImage + GetImageSize: nodes run in ComfyUI's UX-friendly order; type-3 text sent."""
    harness.sim.add_input("heldout_input.png", write_png(40, 30, b"input"))
    post = captured_posts("ws_loadimage_run.jsonl")[0]
    frames = await run_captured(harness, post["request_json"], "l")
    first_prompt = post["response"]["prompt_id"]
    captured = captured_frames("ws_loadimage_run.jsonl")
    end = next(
        i
        for i, f in enumerate(captured)
        if f.get("type") == "executing"
        and f["data"]["node"] is None
        and f["data"]["prompt_id"] == first_prompt
    )
    assert [norm(f) for f in frames] == [norm(f) for f in captured[: end + 1]]
    text = next(f["raw"] for f in frames if f.get("kind") == "binary")
    assert text.endswith(b"width: 40, height: 30\n batch size: 1")


async def test_reused_client_id_silences_the_second_socket(
    harness: Harness, autojump_clock: trio.abc.Clock
) -> None:
    """P3: closing the first of two sockets with one clientId removes the second too."""
    first = await harness.ws("same")
    second = await harness.ws("same")
    assert (await receive(first))["type"] == "status"
    assert (await receive(second))["type"] == "status"
    await first.aclose()
    await trio.sleep(0.1)
    post = captured_posts("ws_normal_run.jsonl")[0]
    observer = await harness.ws("observer")
    await receive(observer)
    await harness.post({**post["request_json"], "client_id": "same"})
    await collect(observer, lambda f: norm(f) == ("status", 0, False))
    with trio.move_on_after(1):
        await second.get_message()
        pytest.fail("the second socket received a frame")
    await second.aclose()
    await observer.aclose()


async def test_reconnect_of_the_running_client_gets_executing_without_prompt_id(
    harness: Harness,
    autojump_clock: trio.abc.Clock,
) -> None:
    """A socket reopened with the running prompt's clientId first gets executing {node}."""
    harness.sim.timings = ComfyTimings(per_class={"ImageBlur": 0.8})
    ws = await harness.ws("owner")
    body = {
        **captured_posts("ws_queue_and_interrupt.jsonl")[0]["request_json"],
        "client_id": "owner",
    }
    await harness.post(body)
    await collect(ws, lambda f: f.get("type") == "executing" and f["data"]["node"] == "2")
    await ws.aclose()
    await trio.sleep(0.1)
    again = await harness.ws("owner")
    status, executing = await receive(again), await receive(again)
    assert status["type"] == "status"
    assert status["data"]["sid"] == "owner"
    assert executing == {"kind": "json", "type": "executing", "data": {"node": "2"}}
    await again.aclose()


async def test_deleted_pending_prompt_vanishes_with_only_a_status(
    harness: Harness, autojump_clock: trio.abc.Clock
) -> None:
    """POST /queue delete: a status with a lower count, no history, no other frame."""
    harness.sim.timings = ComfyTimings(per_class={"ImageBlur": 0.8})
    ws = await harness.ws("q")
    body = {**captured_posts("ws_queue_and_interrupt.jsonl")[0]["request_json"], "client_id": "q"}
    first = (await harness.post(body)).json()["prompt_id"]
    second_body = copy.deepcopy(body)
    second_body["prompt"]["1"]["inputs"]["color"] = 1
    second = (await harness.post(second_body)).json()["prompt_id"]
    seen: set[str] = set()

    def running_and_queued(f: _Frame) -> bool:
        # The second POST is validated while the first prompt starts: either order.
        if f.get("type") == "executing" and f["data"]["node"] == "1":
            seen.add("running")
        if norm(f) == ("status", 2, False):
            seen.add("queued")
        return seen == {"running", "queued"}

    await collect(ws, running_and_queued)
    await harness.http.post("/queue", json={"delete": [second]})
    frame = await receive(ws)
    assert norm(frame) == ("status", 1, False)
    frames = await collect(ws, end_of(first))
    assert all(second not in json.dumps(f.get("data", {})) for f in frames)
    assert (await harness.http.get(f"/history/{second}")).json() == {}
    await ws.aclose()


async def test_front_prompt_runs_next_and_queue_shows_heap_order(
    harness: Harness, autojump_clock: trio.abc.Clock
) -> None:
    """front=true gets a negative number and runs before earlier pending prompts."""
    harness.sim.timings = ComfyTimings(per_class={"ImageBlur": 0.8})
    base = captured_posts("ws_queue_and_interrupt.jsonl")[0]["request_json"]
    ws = await harness.ws("f")
    ids = []
    for color, front in [(1, False), (2, False), (3, False), (4, True)]:
        body = copy.deepcopy(base)
        body["prompt"]["1"]["inputs"]["color"] = color
        body["client_id"] = "f"
        if front:
            body["front"] = True
        ids.append((await harness.post(body)).json())
        if len(ids) == 1:
            await collect(ws, lambda f: f.get("type") == "execution_start")
    assert ids[3]["number"] == -3
    queue = (await harness.http.get("/queue")).json()
    assert [len(item) for item in queue["queue_pending"]] == [5, 5, 5]
    await collect(ws, end_of(ids[0]["prompt_id"]))
    await collect(ws, lambda f: f.get("type") == "execution_start")
    await ws.aclose()
    assert harness.sim.prompts_run[:2] == [ids[0]["prompt_id"], ids[3]["prompt_id"]]


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("missing_file", {"filename": "nope.png", "type": "output"}),
        ("dotdot", {"filename": "../x.png"}),
        ("bad_type", {"filename": "invert_00001_.png", "type": "bogus"}),
        ("subfolder_escape", {"filename": "x.png", "subfolder": "../..", "type": "output"}),
        ("annotated_name", {"filename": "heldout/invert_00001_.png [output]"}),
        ("input_default_type", {"filename": "example.png"}),
    ],
)
async def test_view_error_answers_match_capture(
    harness: Harness, autojump_clock: trio.abc.Clock, name: str, params: dict[str, str]
) -> None:
    """/view answers 400 / 403 / 404 exactly where the real server does."""
    post = captured_posts("ws_normal_run.jsonl")[0]
    await run_captured(harness, post["request_json"], "v")
    response = await harness.http.get("/view", params=params)
    assert response.status_code == load("view_responses.json")[name]["status"]


async def test_view_serves_the_written_png(
    harness: Harness, autojump_clock: trio.abc.Clock
) -> None:
    """/view of an output: 200, image/png, Content-Disposition, the produced bytes."""
    post = captured_posts("ws_normal_run.jsonl")[0]
    await run_captured(harness, post["request_json"], "v")
    response = await harness.http.get(
        "/view", params={"filename": "invert_00001_.png", "subfolder": "heldout", "type": "output"}
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert response.headers["content-disposition"] == 'filename="invert_00001_.png"'
    assert response.content == harness.sim.produced["output/heldout/invert_00001_.png"]


async def test_upload_naming_matches_capture(
    harness: Harness, autojump_clock: trio.abc.Clock
) -> None:
    """Same bytes reuse the name, other bytes get ' (1)', subfolders and temp work."""
    want = load("upload_image_responses.json")
    png, other = write_png(8, 8, b"a"), write_png(8, 8, b"b")

    async def upload(files: Any, data: dict[str, str]) -> httpx.Response:
        return await harness.http.post("/upload/image", files=files, data=data)

    cases = [
        (
            "first_upload_overwrite_true",
            {"image": ("heldout_input.png", png)},
            {"overwrite": "true"},
        ),
        ("same_bytes_again_no_overwrite", {"image": ("heldout_input.png", png)}, {}),
        ("different_bytes_same_name_no_overwrite", {"image": ("heldout_input.png", other)}, {}),
        ("into_subfolder", {"image": ("sub.png", png)}, {"subfolder": "heldout"}),
        ("type_temp", {"image": ("tmp.png", png)}, {"type": "temp"}),
        ("no_file_field", {"other": ("x.png", png)}, {}),
        ("bad_type_value", {"image": ("x.png", png)}, {"type": "bogus"}),
        ("filename_with_dotdot", {"image": ("../../evil.png", png)}, {}),
    ]
    for name, files, data in cases:
        response = await upload(files, data)
        assert response.status_code == want[name]["status"], name
        if want[name].get("body") is not None:
            assert response.json() == want[name]["body"], name


@pytest.mark.parametrize(
    ("path", "capture"),
    [
        ("/object_info/EmptyImage", "object_info_EmptyImage.json"),
        ("/object_info/ImageBlur", "object_info_ImageBlur_v3_node.json"),
        ("/object_info/SaveImage", "object_info_SaveImage.json"),
        ("/object_info/NoSuchNode", "object_info_unknown.json"),
        ("/features", "features.json"),
        ("/queue", "queue_empty.json"),
        ("/prompt", "get_prompt.json"),
        ("/api/prompt", "api_prefix_get_prompt.json"),
    ],
)
async def test_json_routes_match_capture(
    harness: Harness, autojump_clock: trio.abc.Clock, path: str, capture: str
) -> None:
    """Static JSON answers equal the captured bodies."""
    want = load(capture)
    body = want.get("body", want)
    response = await harness.http.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json; charset=utf-8"
    assert response.json() == body


async def test_loadimage_object_info_lists_the_input_folder(
    harness: Harness, autojump_clock: trio.abc.Clock
) -> None:
    """LoadImage's combo is the input folder; the rest is the captured shape."""
    want = load("object_info_LoadImage.json")["body"]["LoadImage"]
    got = (await harness.http.get("/object_info/LoadImage")).json()["LoadImage"]
    assert got["input"]["required"]["image"][0] == ["example.png", "sketch.png"]
    got["input"]["required"]["image"][0] = want["input"]["required"]["image"][0]
    assert got == want


async def test_system_stats_has_the_captured_shape(
    harness: Harness, autojump_clock: trio.abc.Clock
) -> None:
    """/system_stats: same keys and value types as the real server's."""

    def shape(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: shape(v) for k, v in value.items()}
        if isinstance(value, list):
            return [shape(v) for v in value[:1]]
        return type(value).__name__

    got = (await harness.http.get("/system_stats")).json()
    assert shape(got) == shape(load("system_stats.json")["body"])


async def test_conjure_workflow_runs_and_writes_png_and_glb(
    harness: Harness, autojump_clock: trio.abc.Clock
) -> None:
    """The bundled CONJURE workflow validates, runs, and writes one PNG and one GLB."""
    workflow = json.loads(
        (Path(__file__).parents[2] / "conjure_actors/workflows/conjure_flux_mesh.json").read_text()
    )
    frames = await run_body(harness, {"prompt": workflow, "client_id": "cj"}, "cj")
    executed = {
        f["data"]["node"]: f["data"]["output"] for f in frames if f.get("type") == "executed"
    }
    assert executed == {
        "24": {
            "images": [{"filename": "flux_00001_.png", "subfolder": "conjure", "type": "output"}]
        },
        "33": {"3d": [{"filename": "mesh_00001_.glb", "subfolder": "conjure", "type": "output"}]},
    }
    assert harness.sim.produced["output/conjure/flux_00001_.png"].startswith(b"\x89PNG")
    assert harness.sim.produced["output/conjure/mesh_00001_.glb"][:4] == b"glTF"


async def test_restart_forgets_queue_history_and_sockets(
    harness: Harness, autojump_clock: trio.abc.Clock
) -> None:
    """restart(): history and queue are empty and open sockets are closed."""
    post = captured_posts("ws_normal_run.jsonl")[0]
    frames = await run_captured(harness, post["request_json"], "r")
    pid = frames[-1]["data"]["prompt_id"]
    ws = await harness.ws("r2")
    await receive(ws)
    harness.sim.restart()
    with trio.fail_after(5), pytest.raises(trio_websocket.ConnectionClosed):
        await ws.get_message()
    assert (await harness.http.get(f"/history/{pid}")).json() == {}
    assert (await harness.http.get("/queue")).json() == {"queue_running": [], "queue_pending": []}


async def test_http_429_fault_carries_retry_after() -> None:
    """The 429 fault answers with Retry-After and then lets requests through."""
    sim = ComfyUISim(faults=ComfyFaults(http_429_rate=1.0, http_429_burst=2, retry_after=3))
    transport = httpx.ASGITransport(app=sim.asgi)
    async with httpx.AsyncClient(transport=transport, base_url="http://sim.invalid") as http:
        response = await http.get("/prompt")
        assert response.status_code == 429
        assert response.headers["retry-after"] == "3"


async def test_origin_mismatch_on_loopback_is_403(
    harness: Harness, autojump_clock: trio.abc.Clock
) -> None:
    """A browser-style Origin different from a loopback Host is refused."""
    response = await harness.http.get(
        "/prompt", headers={"host": "127.0.0.1:8188", "origin": "http://evil.example"}
    )
    assert response.status_code == 403


async def test_history_max_items_returns_the_newest(
    harness: Harness, autojump_clock: trio.abc.Clock
) -> None:
    """GET /history?max_items=2 returns the two newest entries, oldest first."""
    post = captured_posts("ws_normal_run.jsonl")[0]
    pids = []
    for color in (1, 2, 3):
        body = copy.deepcopy(post["request_json"])
        body["prompt"]["1"]["inputs"]["color"] = color
        frames = await run_body(harness, {**body, "client_id": "h"}, "h")
        pids.append(frames[-1]["data"]["prompt_id"])
    newest = (await harness.http.get("/history", params={"max_items": 2})).json()
    assert list(newest) == pids[1:]
    assert list((await harness.http.get("/history")).json()) == pids
    captured = load("history_max_items_2.json")["body"]
    assert len(captured) == len(newest) == 2
    assert [set(e) for e in captured.values()] == [set(e) for e in newest.values()]


async def test_post_history_deletes_and_clears(
    harness: Harness, autojump_clock: trio.abc.Clock
) -> None:
    """POST /history {delete} removes one entry; {clear} removes all."""
    post = captured_posts("ws_normal_run.jsonl")[0]
    frames = await run_body(harness, {**post["request_json"], "client_id": "h"}, "h")
    pid = frames[-1]["data"]["prompt_id"]
    await harness.http.post("/history", json={"delete": [pid]})
    assert (await harness.http.get(f"/history/{pid}")).json() == {}
    await run_body(harness, {**post["request_json"], "client_id": "h"}, "h")
    await harness.http.post("/history", json={"clear": True})
    assert (await harness.http.get("/history")).json() == {}


async def test_queue_clear_empties_pending_only(
    harness: Harness, autojump_clock: trio.abc.Clock
) -> None:
    """POST /queue {clear}: pending prompts vanish, the running one goes on."""
    harness.sim.timings = ComfyTimings(per_class={"ImageBlur": 0.8})
    ws = await harness.ws("c")
    base = {**captured_posts("ws_queue_and_interrupt.jsonl")[0]["request_json"], "client_id": "c"}
    running = (await harness.post(base)).json()["prompt_id"]
    await collect(ws, lambda f: f.get("type") == "execution_start")
    other = copy.deepcopy(base)
    other["prompt"]["1"]["inputs"]["color"] = 5
    await harness.post(other)
    await harness.http.post("/queue", json={"clear": True})
    queue = (await harness.http.get("/queue")).json()
    assert queue["queue_pending"] == []
    assert [item[1] for item in queue["queue_running"]] == [running]
    await collect(ws, end_of(running))
    await ws.aclose()


async def test_timings_scale_stretches_simulated_time(
    harness: Harness, autojump_clock: trio.abc.Clock
) -> None:
    """The CONJURE run takes 1-2 simulated seconds at scale 1 and 100x that at scale 100."""
    workflow = json.loads(
        (Path(__file__).parents[2] / "conjure_actors/workflows/conjure_flux_mesh.json").read_text()
    )
    spans = []
    for scale, seed in ((1.0, 1), (100.0, 2)):
        harness.sim.timings = ComfyTimings(scale=scale)
        graph = copy.deepcopy(workflow)
        graph["20"]["inputs"]["seed"] = seed
        for loader in ("11", "12", "13", "40"):  # cold loaders: give each run its own names
            graph[loader]["_meta"] = {"title": str(seed)}
        harness.sim._cache.clear()
        start = trio.current_time()
        await run_body(harness, {"prompt": graph, "client_id": "t"}, "t")
        spans.append(trio.current_time() - start)
    assert 1.0 <= spans[0] <= 2.0
    assert spans[1] == pytest.approx(100 * spans[0], rel=0.05)


_MUTATIONS = st.sampled_from(
    [
        ("1", "width", 0),
        ("1", "width", "abc"),
        ("1", "width", 10**9),
        ("1", "color", -1),
        ("1", "height", [1, 2, 3]),
        ("2", "image", ["99", 0]),
        ("2", "image", ["1", 5]),
        ("2", "image", ["1", 0, 0]),
        ("3", "filename_prefix", 12),
        ("3", "images", ["3", 0]),
        ("2", "class_type", "Nope"),
        ("1", "batch_size", {"__value__": 2}),
    ]
)


@given(mutations=st.lists(_MUTATIONS, max_size=4))
def test_any_mutated_prompt_gets_a_well_formed_answer(mutations: list[Any]) -> None:
    """Whatever is wrong with the graph: 200 or 400 with well-formed node_errors, never a crash."""
    graph = json.loads((CAPTURES / "workflows" / "invert_save.json").read_text())
    for node, key, value in mutations:
        if key == "class_type":
            graph[node]["class_type"] = value
        else:
            graph[node]["inputs"][key] = value

    async def scenario() -> None:
        sim = ComfyUISim()
        transport = httpx.ASGITransport(app=sim.asgi)
        async with httpx.AsyncClient(transport=transport, base_url="http://sim.invalid") as http:
            response = await http.post("/prompt", json={"prompt": graph})
        assert response.status_code in (200, 400)
        body = response.json()
        if response.status_code == 200:
            assert set(body) == {"prompt_id", "number", "node_errors"}
            return
        assert set(body) == {"error", "node_errors"}
        assert set(body["error"]) == {"type", "message", "details", "extra_info"}
        for node_id, entry in body["node_errors"].items():
            assert node_id in graph
            assert set(entry) == {"errors", "dependent_outputs", "class_type"}
            assert entry["errors"]
            assert all(
                {"type", "message", "details", "extra_info"} <= set(e) for e in entry["errors"]
            )

    trio.run(scenario)


@given(
    name=st.text(st.characters(min_codepoint=48, max_codepoint=122), min_size=1, max_size=12),
    data=st.binary(max_size=256),
)
def test_multipart_upload_round_trips(name: str, data: bytes) -> None:
    """Any file httpx uploads is stored byte for byte under the name the server returns."""

    async def scenario() -> None:
        sim = ComfyUISim()
        transport = httpx.ASGITransport(app=sim.asgi)
        async with httpx.AsyncClient(transport=transport, base_url="http://sim.invalid") as http:
            response = await http.post(
                "/upload/image", files={"image": (name + ".png", data)}, data={"subfolder": "u"}
            )
        assert response.status_code == 200
        stored = response.json()
        assert sim._files[f"input/u/{stored['name']}"] == data

    trio.run(scenario)


async def test_dependency_cycle_is_rejected_by_validation(
    harness: Harness, autojump_clock: trio.abc.Clock
) -> None:
    """Two nodes feeding each other: a 400, not a crash (reasons are lost, as in ComfyUI)."""
    graph = {
        "1": {"class_type": "ImageInvert", "inputs": {"image": ["2", 0]}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "c"}},
    }
    response = await harness.post({"prompt": graph})
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "prompt_outputs_failed_validation"


async def test_models_folder_lists_the_loader_files(
    harness: Harness, autojump_clock: trio.abc.Clock
) -> None:
    """/models/{folder} lists the model files the catalogue's loaders accept."""
    assert "vae" in (await harness.http.get("/models")).json()
    vae = (await harness.http.get("/models/vae")).json()
    assert "ae.safetensors" in vae
    assert (await harness.http.get("/models/nope")).status_code == 404


async def test_outputs_without_a_subfolder_are_numbered_not_overwritten(
    harness: Harness, autojump_clock: trio.abc.Clock
) -> None:
    """Two prompts saving under the same prefix in ``output/`` itself get ``_00001_`` and
    ``_00002_``, as ComfyUI numbers them; the first file is not overwritten."""
    names = []
    for color in (0, 255):
        workflow = {
            "1": {
                "class_type": "EmptyImage",
                "inputs": {"width": 1, "height": 1, "batch_size": 1, "color": color},
            },
            "2": {
                "class_type": "SaveImage",
                "inputs": {"images": ["1", 0], "filename_prefix": "a"},
            },
        }
        frames = await run_body(harness, {"prompt": workflow, "client_id": "c"}, "c")
        names += [
            image["filename"]
            for f in frames
            if f.get("type") == "executed"
            for image in f["data"]["output"]["images"]
        ]
    assert names == ["a_00001_.png", "a_00002_.png"]
    first, second = (
        harness.sim.produced["output/a_00001_.png"],
        harness.sim.produced["output/a_00002_.png"],
    )
    assert first != second
