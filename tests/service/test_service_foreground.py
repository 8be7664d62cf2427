"""Requests are the runtime's foreground: they hold its gate until their first body bytes;
the job actors (and their HTTP calls) wait, within the bound; a submission never does, and
under sustained request load every queued job still completes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.testing
from extras_support import open_extras_service, wait_idle
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from conjure_actors.clients.cookieless import CookielessClient
from conjure_actors.runtime import PriorityGate
from conjure_actors.service.app import Settings
from conjure_actors.service.foreground import ForegroundMiddleware, yielding_http

WORKFLOWS = Path(__file__).resolve().parents[2] / "conjure_actors" / "workflows"


def _app(gate: PriorityGate, seen: list[Any]) -> Starlette:
    async def plain(request: Request) -> Response:
        seen.append(("handler", gate.busy))
        return JSONResponse({"ok": True})

    async def stream(request: Request) -> Response:
        async def chunks() -> Any:
            yield b"first\n"
            seen.append(("after first chunk", gate.busy))
            yield b"second\n"

        return StreamingResponse(chunks())

    async def broken(request: Request) -> Response:
        raise RuntimeError("boom")

    routes = [Route("/plain", plain), Route("/stream", stream), Route("/broken", broken)]
    return Starlette(routes=routes, middleware=[Middleware(ForegroundMiddleware, gate=gate)])


async def _get(app: Any, path: str, **transport: Any) -> httpx.Response:
    """GET ``path`` from ``app`` in process (within 10 s)."""
    asgi = httpx.ASGITransport(app=app, **transport)
    async with httpx.AsyncClient(transport=asgi, base_url="http://t") as client:
        with trio.fail_after(10):
            return await client.get(path)


async def test_a_request_holds_the_gate_until_its_response_body_is_sent() -> None:
    """In the handler the gate is held; once the answer is sent it is not."""
    gate = PriorityGate()
    seen: list[Any] = []
    answer = await _get(_app(gate, seen), "/plain")
    assert answer.status_code == 200
    assert seen == [("handler", True)]
    assert not gate.busy


async def test_a_stream_releases_the_gate_after_its_first_chunk() -> None:
    """A long-lived response (SSE, a download) holds the gate only until it has started."""
    gate = PriorityGate()
    seen: list[Any] = []
    answer = await _get(_app(gate, seen), "/stream")
    assert answer.text == "first\nsecond\n"
    assert seen == [("after first chunk", False)]


async def test_a_body_the_client_does_not_take_does_not_hold_the_gate() -> None:
    """A client that stops reading blocks the server's send of the body: the gate is left
    as the body is handed over, so the job actors do not wait on that client (QA F8)."""
    gate = PriorityGate()
    during: list[bool] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"x", "more_body": False})

    async def stalled_send(message: Any) -> None:
        if message["type"] == "http.response.body":
            during.append(gate.busy)

    async def receive() -> Any:
        return {"type": "http.request", "body": b"", "more_body": False}

    middleware = ForegroundMiddleware(app, gate=gate)
    await middleware({"type": "http", "method": "GET", "path": "/"}, receive, stalled_send)
    assert during == [False]


async def test_a_request_whose_handler_fails_releases_the_gate() -> None:
    """A handler that raises (a 500) does not leave the gate held."""
    gate = PriorityGate()
    answer = await _get(_app(gate, []), "/broken", raise_app_exceptions=False)
    assert answer.status_code == 500
    assert gate.statistics().foreground == 0


async def test_background_http_calls_wait_at_the_gate_and_others_do_not(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Through the runtime's client (yielding_http), a background task's request waits for
    its turn while a request is in flight (the second wait, once the answer is read, is the
    clients' send_with_retry: tests/clients/test_client_retry_gate.py); any other task's
    goes at once."""
    gate = PriorityGate(max_wait=0.5, turn=0.0)
    client = yielding_http(httpx.MockTransport(lambda r: httpx.Response(204)))
    sent: list[tuple[str, float]] = []

    async def call(who: str) -> None:
        await client.get("http://t/x")
        sent.append((who, trio.current_time()))

    async def background_call() -> None:
        with gate.background():
            await call("background")

    gate.enter()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(background_call)
            nursery.start_soon(call, "foreground")
    gate.leave()
    await client.aclose()
    assert sorted(sent) == [("background", 0.5), ("foreground", 0.0)]


async def test_jobs_complete_and_submissions_are_answered_while_a_request_never_ends(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """A request in flight for ever (the gate held from start to end): three submissions
    are answered 201 without waiting on the gate, and their jobs all succeed, moved on by
    the bound alone."""
    graph = json.loads((WORKFLOWS / "invert_save.json").read_text())
    settings = Settings(background_max_wait=0.02, background_turn=0.0)
    took: list[float] = []
    with trio.fail_after(900):
        async with open_extras_service(tmp_path, settings=settings) as run:
            gate = run.service.gate
            with gate.foreground():
                ids = []
                for _ in range(3):
                    start = trio.current_time()
                    answer = await run.client.post("/api/v2/jobs", json={"workflow": graph})
                    took.append(trio.current_time() - start)
                    assert answer.status_code == 201, answer.text
                    ids.append(answer.json()["id"])
                await wait_idle(run.service)
                assert gate.busy
            statuses = {run.service.state.jobs[j].status for j in ids}
            stats = gate.statistics()
    assert statuses == {"succeeded"}
    assert max(took) < settings.background_max_wait
    assert stats.released_bound > 0
    assert stats.released_open == 0


@pytest.mark.slow
async def test_submissions_never_wait_on_the_gate_and_every_job_completes_under_sustained_load(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Clients keep requests in flight back to back (each within the linger of the last, so
    the gate never opens of itself) while 4 jobs are submitted: every submission is
    answered 201 in less than the bound (it waited on nothing gated), and every job still
    runs to success, on the bound's turns."""
    graph = json.loads((WORKFLOWS / "invert_save.json").read_text())
    settings = Settings(background_max_wait=0.02, background_turn=0.002, request_linger=0.003)
    took: list[float] = []
    with trio.fail_after(900):
        async with open_extras_service(tmp_path, settings=settings) as run:
            gate = run.service.gate
            done = trio.Event()

            async def client_loop() -> None:
                while not done.is_set():
                    answer = await run.client.get("/api/v2/health")
                    assert answer.status_code == 200
                    await trio.sleep(0.001)

            async with trio.open_nursery() as nursery:
                for _ in range(3):
                    nursery.start_soon(client_loop)
                ids = []
                for _ in range(4):
                    start = trio.current_time()
                    answer = await run.client.post("/api/v2/jobs", json={"workflow": graph})
                    took.append(trio.current_time() - start)
                    assert answer.status_code == 201, answer.text
                    ids.append(answer.json()["id"])
                await wait_idle(run.service)
                done.set()
            statuses = {run.service.state.jobs[j].status for j in ids}
            stats = gate.statistics()
    assert statuses == {"succeeded"}
    assert max(took) < settings.background_max_wait
    assert stats.released_bound > 0
    assert stats.longest_wait <= settings.background_max_wait + 1e-9


@pytest.mark.parametrize("field", ["background_max_wait", "background_turn", "request_linger"])
async def test_the_service_tunes_the_runtimes_gate_from_its_settings(
    tmp_path: Path, field: str, autojump_clock: trio.testing.MockClock
) -> None:
    """The gate the job actors wait at uses the service's settings."""
    settings = Settings(**{field: 0.5})
    attribute = {"background_max_wait": "max_wait", "background_turn": "turn"}.get(field, "linger")
    with trio.fail_after(900):
        async with open_extras_service(tmp_path, settings=settings) as run:
            assert getattr(run.service.gate, attribute) == 0.5


async def test_a_submitted_job_is_queued_as_background_work(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """A job is queued in the log with its submission (one append); while a request is in
    flight its entry in the pool's queue (``start_submitted``: what gets it a machine) waits
    for the gate, the bound at most; once no request is in flight it goes at once."""
    graph = json.loads((WORKFLOWS / "invert_save.json").read_text())
    settings = Settings(background_max_wait=0.5, background_turn=0.0, request_linger=0.0)
    started: dict[str, float] = {}
    with trio.fail_after(900):
        async with open_extras_service(tmp_path, settings=settings) as run:
            conjure = run.service.conjure
            start_submitted = conjure.start_submitted

            async def recorded(job_id: str) -> None:
                started[job_id] = trio.current_time()
                await start_submitted(job_id)

            conjure.start_submitted = recorded
            gate = run.service.gate
            with gate.foreground():
                answer = await run.client.post("/api/v2/jobs", json={"workflow": graph})
                answered = trio.current_time()
                job_id = answer.json()["id"]
                queued = run.service.state.jobs[job_id].status
                await trio.sleep(0.6)
            answer = await run.client.post("/api/v2/jobs", json={"workflow": graph})
            other = answer.json()["id"]
            answered_other = trio.current_time()
            await trio.testing.wait_all_tasks_blocked()
            await wait_idle(run.service)
    assert queued == "queued"
    assert 0.4 < started[job_id] - answered <= 0.5 + 1e-9  # held by the gate, within the bound
    assert started[other] == answered_other  # no request in flight: at once


async def test_the_runtimes_client_keeps_the_environments_proxy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """serve's runtime client honours HTTPS_PROXY as run's does (a wrapping transport made
    httpx ignore the environment: serve went direct; found by review)."""
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.corp.invalid:3128")
    url = httpx.URL("https://api.runcomfy.example/prod/v2/servers")
    client = yielding_http(None)
    try:
        assert client._transport_for_url(url) is not client._transport  # the proxy's mount
    finally:
        await client.aclose()


async def test_the_runtimes_client_keeps_no_cookies() -> None:
    """ComfyUI and RunComfy use no cookies: the client serve makes skips httpx's jar (its
    per-response parsing was waste)."""
    client = yielding_http(None)
    try:
        assert isinstance(client, CookielessClient)
    finally:
        await client.aclose()


async def test_a_stalled_upload_does_not_hold_the_gate(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A request whose body never comes (a stalled or slow upload) is waiting on its client,
    not foreground work: background work is not held back (found by review)."""
    gate = PriorityGate(max_wait=10.0, turn=0.0)

    async def upload_app(scope: Any, receive: Any, send: Any) -> None:
        await receive()  # the body, which never comes
        raise AssertionError("unreachable")

    async def stalled_receive() -> dict[str, Any]:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    async def send(message: Any) -> None:
        return None

    app = ForegroundMiddleware(upload_app, gate=gate)
    scope = {"type": "http", "method": "POST", "path": "/api/v2/assets", "headers": []}
    async with trio.open_nursery() as nursery:
        nursery.start_soon(app, scope, stalled_receive, send)
        await trio.testing.wait_all_tasks_blocked()
        assert gate.is_open()
        nursery.cancel_scope.cancel()
    assert gate.statistics().foreground == 0


async def test_a_request_body_that_arrives_holds_the_gate_until_the_answer(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Once its body arrives the request is foreground again, until its answer's first bytes."""
    gate = PriorityGate(max_wait=10.0, turn=0.0)
    seen: list[bool] = []

    async def app_(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        seen.append(gate.is_open())
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        seen.append(gate.is_open())

    async def receive() -> dict[str, Any]:
        await trio.sleep(1.0)
        return {"type": "http.request", "body": b"x", "more_body": False}

    async def send(message: Any) -> None:
        return None

    scope = {"type": "http", "method": "POST", "path": "/x", "headers": []}
    await ForegroundMiddleware(app_, gate=gate)(scope, receive, send)
    assert seen == [False, True]


async def test_a_streaming_response_holds_the_gate_until_its_first_chunk() -> None:
    """A streaming response's disconnect listener reads from the client once the body is in:
    that is not waiting on the body, so the gate stays held until the first chunk (found by
    review)."""
    gate = PriorityGate()
    seen: list[Any] = []

    async def stream(request: Request) -> Response:
        async def chunks() -> Any:
            for _ in range(5):  # the first chunk's work (a blob read, a state snapshot)
                await trio.lowlevel.checkpoint()
            seen.append(("before first chunk", gate.busy))
            yield b"first\n"

        return StreamingResponse(chunks())

    app = Starlette(
        routes=[Route("/stream", stream)],
        middleware=[Middleware(ForegroundMiddleware, gate=gate)],
    )
    answer = await _get(app, "/stream")
    assert answer.status_code == 200
    assert seen == [("before first chunk", True)]
    assert not gate.busy
