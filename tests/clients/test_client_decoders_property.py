"""Property, per endpoint: any status and any body (wrong types, missing fields, not JSON,
truncated) gives a result or a ClientError with a short message that names no secret; never
another exception. Bodies are real captures mutated at random, arbitrary JSON, or bytes."""

from __future__ import annotations

import json
import random
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from conjure_actors.clients import ComfyUIClient, OutputFile, RetryPolicy
from conjure_actors.clients.comfyui_wire import (
    BinaryFrame,
    UnknownMessage,
    parse_binary_frame,
    parse_ws_message,
)
from conjure_actors.clients.errors import ClientError
from conjure_actors.clients.runcomfy import RunComfyClient, RunComfyPolicy
from conjure_actors.sim.media import write_png

# A long property suite: out of the inner loop (just test), run by just check and CI.
pytestmark = pytest.mark.slow

CAPTURES = Path(__file__).parents[1] / "data" / "captures"
MARK = "m-5ec2e7"  # in the machine URL: must never reach a message
BASE = f"https://{MARK}.secret.invalid:8443"
TOKEN = "tok-9f8e7d6c5b4a"
POLICY = RetryPolicy(attempts=2, base_delay=0.01, max_delay=0.02, request_timeout=5.0)


def _capture(name: str) -> Any:
    return json.loads((CAPTURES / name).read_text())


HISTORY_OK = _capture("history_normal_run.json")
HISTORY_ERROR = _capture("history_execution_error.json")
PID = next(iter(HISTORY_OK))
QUEUE = _capture("queue_and_interrupt.json")["queue_while_A_runs"]
UPLOAD = _capture("upload_image_responses.json")["different_bytes_same_name_no_overwrite"]["body"]
REJECTED = _capture("prompt_400_bodies.json")["value_smaller_than_min"]["body"]
PROMPT_OK = {"prompt_id": PID, "number": 3, "node_errors": {}}
WS_FRAMES = [
    {k: v for k, v in line["frame"].items() if k != "kind"}
    for name in ("ws_normal_run.jsonl", "ws_execution_error.jsonl")
    for line in map(json.loads, (CAPTURES / name).read_text().splitlines())
    if line.get("dir") == "in" and line.get("frame", {}).get("kind") == "json"
]
SERVER = {
    "server_id": "s-1",
    "current_status": "Ready",
    "server_type": "medium",
    "workflow_version_id": "wv-1",
    "estimated_duration": 600,
    "main_service_url": f"https://{MARK}.runcomfy.invalid/comfy",
    "service_ready_at": "2026-12-05T10:00:00.123456",
    "estimated_stopping_at": 1_780_000_000,
}
WORKFLOW = {"workflow_id": "w", "workflow_name": "n", "version_id": "v", "created_at": 1}

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=16,
)


@st.composite
def mutated(draw: st.DrawFn, value: Any, depth: int = 0) -> Any:
    """``value`` with random subtrees replaced by arbitrary JSON, keys dropped or added."""
    if depth > 4:
        return value
    roll = draw(st.integers(0, 9))
    if roll == 0:
        return draw(json_values)
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            choice = draw(st.integers(0, 6))
            if choice == 0:
                continue
            out[key] = draw(mutated(item, depth + 1)) if choice == 1 else item
        if draw(st.integers(0, 9)) == 0:
            out[draw(st.text(max_size=6))] = draw(json_values)
        return out
    if isinstance(value, list):
        return [draw(mutated(item, depth + 1)) for item in value[:6]]
    return value


def bodies(*valid: Any) -> st.SearchStrategy[bytes]:
    """Mutated captures, arbitrary JSON, arbitrary bytes, truncated captures, and the
    captures themselves."""
    encoded = [msgspec.json.encode(v) for v in valid]
    return st.one_of(
        st.sampled_from(valid).flatmap(mutated).map(msgspec.json.encode),
        json_values.map(msgspec.json.encode),
        st.binary(max_size=64),
        st.sampled_from(encoded).flatmap(lambda b: st.integers(0, len(b)).map(lambda n: b[:n])),
        st.sampled_from(encoded),
    )


statuses = st.sampled_from([200, 200, 200, 200, 201, 204, 400, 401, 404, 429, 500, 503])


def check_message(exc: ClientError) -> None:
    text = str(exc) + " ".join(getattr(exc, "__notes__", []))
    assert MARK not in text, text
    assert TOKEN not in text, text
    assert len(str(exc)) < 800, str(exc)
    assert "\n" not in str(exc)


def run_comfy(status: int, body: bytes, call: Callable[[ComfyUIClient], Awaitable[Any]]) -> None:
    """``call`` against a server that answers ``status`` and ``body`` to every request."""

    async def scenario() -> None:
        transport = httpx.MockTransport(lambda request: httpx.Response(status, content=body))
        async with httpx.AsyncClient(transport=transport) as http:
            client = ComfyUIClient(
                BASE, http=http, policy=POLICY, redact="server s-1", rng=random.Random(0)
            )
            with trio.move_on_after(3600):
                try:
                    await call(client)
                except ClientError as exc:
                    check_message(exc)

    trio.run(scenario, clock=trio.testing.MockClock(autojump_threshold=0))


def run_runcomfy(
    status: int, body: bytes, call: Callable[[RunComfyClient], Awaitable[Any]]
) -> None:
    async def scenario() -> None:
        transport = httpx.MockTransport(lambda request: httpx.Response(status, content=body))
        async with httpx.AsyncClient(transport=transport) as http:
            client = RunComfyClient(
                "https://api.invalid",
                "u",
                TOKEN,
                http=http,
                policy=RunComfyPolicy(retry=POLICY, not_found_grace=0.0),
                rng=random.Random(0),
            )
            with trio.move_on_after(3600):
                try:
                    await call(client)
                except ClientError as exc:
                    check_message(exc)

    trio.run(scenario, clock=trio.testing.MockClock(autojump_threshold=0))


# ---------------------------------------------------------------------------- ComfyUI


@given(status=statuses, body=bodies(UPLOAD))
def test_upload_image_answers(status: int, body: bytes) -> None:
    """POST /upload/image: an UploadedImage with string fields, or a ClientError."""

    async def call(client: ComfyUIClient) -> None:
        uploaded = await client.upload_image(write_png(4, 4, b"x"), "x.png")
        assert isinstance(uploaded.name, str)
        assert isinstance(uploaded.subfolder, str)
        assert isinstance(uploaded.type, str)

    run_comfy(status, body, call)


@given(status=statuses, body=bodies(PROMPT_OK, REJECTED))
def test_submit_answers(status: int, body: bytes) -> None:
    """POST /prompt (200, 400 with node_errors, others): a Submitted, or a ClientError."""

    async def call(client: ComfyUIClient) -> None:
        submitted = await client.submit({"1": {"class_type": "X", "inputs": {}}}, PID, "c")
        assert isinstance(submitted.prompt_id, str)
        assert isinstance(submitted.number, float)

    run_comfy(status, body, call)


@given(status=statuses, body=bodies(HISTORY_OK, HISTORY_ERROR, {}))
def test_history_answers(status: int, body: bytes) -> None:
    """GET /history/{id}: an entry or None, or a ClientError."""
    run_comfy(status, body, lambda client: client.history(PID))


@given(status=statuses, body=bodies(QUEUE, {"queue_running": [], "queue_pending": []}))
def test_queue_answers(status: int, body: bytes) -> None:
    """GET /queue: a snapshot of typed items (pending sorted), or a ClientError."""

    async def call(client: ComfyUIClient) -> None:
        snapshot = await client.queue()
        for item in (*snapshot.running, *snapshot.pending):
            assert isinstance(item.prompt_id, str)
            assert item.client_id is None or isinstance(item.client_id, str)
        numbers = [item.number for item in snapshot.pending]
        assert numbers == sorted(numbers)

    run_comfy(status, body, call)


@given(status=statuses, body=bodies(HISTORY_OK, HISTORY_ERROR, QUEUE, {}))
def test_find_prompt_answers(status: int, body: bytes) -> None:
    """find_prompt over /queue then /history: a status string, or a ClientError."""

    async def call(client: ComfyUIClient) -> None:
        assert await client.find_prompt(PID) in ("running", "pending", "done", "unknown")

    run_comfy(status, body, call)


@given(status=statuses, body=bodies(HISTORY_OK, HISTORY_ERROR, QUEUE, {}))
def test_following_by_polling_ends_or_raises(status: int, body: bytes) -> None:
    """wait() polling /history and /queue: an outcome, a ClientError, or still waiting."""
    run_comfy(status, body, lambda client: client.wait(PID, poll_interval=1.0))


@given(status=statuses, body=bodies({"system": {"os": "posix"}, "devices": []}))
def test_system_stats_answers(status: int, body: bytes) -> None:
    """GET /system_stats: a dict, or a ClientError."""

    async def call(client: ComfyUIClient) -> None:
        assert isinstance(await client.system_stats(), dict)

    run_comfy(status, body, call)


@given(status=statuses, body=bodies({"SaveImage": {"input": {}, "output_node": True}}))
def test_object_info_answers(status: int, body: bytes) -> None:
    """GET /object_info: a dict, or a ClientError."""

    async def call(client: ComfyUIClient) -> None:
        assert isinstance(await client.object_info(), dict)

    run_comfy(status, body, call)


@given(status=statuses, body=bodies({}, b""))
def test_delete_and_interrupt_answers(status: int, body: bytes) -> None:
    """POST /queue (delete) and POST /interrupt: None, or a ClientError."""

    async def call(client: ComfyUIClient) -> None:
        await client.delete_from_queue(PID)
        await client.interrupt(PID)

    run_comfy(status, body, call)


@given(status=statuses, body=st.one_of(st.binary(max_size=300), st.just(write_png(4, 4, b"v"))))
def test_download_to_answers(status: int, body: bytes) -> None:
    """GET /view to a file: (size, sha256) of a file that is there, or a ClientError."""
    output = OutputFile("9", "images", "x.png", "", "output")
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "x.png"

        async def call(client: ComfyUIClient) -> None:
            size, _ = await client.download_to(output, target)
            assert target.stat().st_size == size

        run_comfy(status, body, call)
        assert all(not p.name.endswith(".part") for p in Path(tmp).iterdir())


@given(text=bodies(*WS_FRAMES).map(lambda b: b.decode("utf-8", "replace")))
def test_websocket_text_frames_decode_or_are_skipped(text: str) -> None:
    """Any text frame: a typed message or UnknownMessage; dispatching it never raises."""
    message = parse_ws_message(text)
    assert isinstance(message, UnknownMessage) or hasattr(message, "data")
    client = ComfyUIClient(BASE, http=httpx.AsyncClient(), redact="server s-1")
    events = client.events()
    events.dispatch(text)
    for queue in events._orphans.values():
        for item in queue:
            assert item is not None
            client._translate(PID, item)


@given(
    frame=st.one_of(
        st.binary(max_size=64),
        st.tuples(bodies({"prompt_id": PID, "node_id": "3", "image_type": "image/png"}))
        .map(lambda t: t[0])
        .map(lambda meta: b"\x00\x00\x00\x04" + len(meta).to_bytes(4, "big") + meta + b"img"),
    )
)
def test_websocket_binary_frames_decode_with_typed_fields(frame: bytes) -> None:
    """Any binary frame: a BinaryFrame whose ids are strings or None; dispatch never raises."""
    parsed = parse_binary_frame(frame)
    assert isinstance(parsed, BinaryFrame)
    for value in (parsed.prompt_id, parsed.node_id, parsed.image_type):
        assert value is None or isinstance(value, str)
    client = ComfyUIClient(BASE, http=httpx.AsyncClient(), redact="server s-1")
    client.events().dispatch(frame)


# ---------------------------------------------------------------------------- RunComfy


@given(status=statuses, body=bodies([SERVER, SERVER], []))
def test_list_servers_answers(status: int, body: bytes) -> None:
    """GET /servers: a list of Servers, or a ClientError naming no URL nor token."""
    run_runcomfy(status, body, lambda client: client.list_servers())


@given(status=statuses, body=bodies([WORKFLOW], []))
def test_list_workflows_answers(status: int, body: bytes) -> None:
    """GET /workflows: a list of Workflows, or a ClientError."""
    run_runcomfy(status, body, lambda client: client.list_workflows())


@given(status=statuses, body=bodies(SERVER))
def test_status_answers(status: int, body: bytes) -> None:
    """GET /servers/{id}: a Server, or a ClientError."""
    run_runcomfy(status, body, lambda client: client.status("s-1"))


@given(status=statuses, body=bodies(SERVER))
def test_launch_answers(status: int, body: bytes) -> None:
    """POST /servers: a Server, or a ClientError (OutcomeUnknownError when it may have landed)."""
    run_runcomfy(status, body, lambda client: client.launch("wv-1", "medium", 600))


@given(status=statuses, body=bodies(SERVER))
def test_extend_answers(status: int, body: bytes) -> None:
    """POST update-estimated-duration: a Server, or a ClientError."""
    run_runcomfy(status, body, lambda client: client.extend("s-1", 900))


@given(status=statuses, body=bodies(SERVER))
def test_stop_answers(status: int, body: bytes) -> None:
    """DELETE /servers/{id}: a Server or None, or a ClientError."""
    run_runcomfy(status, body, lambda client: client.stop("s-1", missing_ok=True))


@given(status=statuses, body=bodies(SERVER))
def test_wait_until_ready_answers(status: int, body: bytes) -> None:
    """Polling until Ready: a Server, or a ClientError (LaunchError when it never is)."""
    run_runcomfy(status, body, lambda client: client.wait_until_ready("s-1", give_up_after=60.0))
