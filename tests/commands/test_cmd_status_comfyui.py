"""``status --comfyui-url``: the user's ComfyUI asked as ``run``'s start-up asks it (the same
client, retries and health check, the same words when it fails), over an offline transport."""

from __future__ import annotations

import logging
from collections.abc import Callable

import httpx
import pytest
import trio
import trio.testing

from conjure_actors.actors.conjure import ATTACH_PROBE_SECONDS, probe_refusal
from conjure_actors.clients.comfyui import probe_problem
from conjure_actors.clients.errors import ComfyUIResponseError
from conjure_actors.commands import status
from conjure_actors.errors import UsageError

URL = "http://user:s3cret@comfy.example:8188/comfy"
STATS = {
    "system": {"comfyui_version": "0.3.40", "python_version": "3.12.3 (main, Apr 2024)"},
    "devices": [{"name": "cuda:0 NVIDIA L4", "vram_free": 3 * 2**30, "vram_total": 24 * 2**30}],
}
QUEUE = {
    "queue_running": [[7, "p-run", {}, {"client_id": "c"}, []]],
    "queue_pending": [[9, "p-later", {}, {}, []], [8, "p-next", {}, {}, []]],
}
Handler = Callable[[httpx.Request], httpx.Response]


def _healthy(request: httpx.Request) -> httpx.Response:
    if request.url.path == "/comfy/system_stats":
        return httpx.Response(200, json=STATS)
    if request.url.path == "/comfy/queue":
        return httpx.Response(200, json=QUEUE)
    return httpx.Response(404)


async def _status(handler: Handler | httpx.AsyncBaseTransport) -> None:
    transport = handler if isinstance(handler, httpx.AsyncBaseTransport) else None
    transport = transport or httpx.MockTransport(handler)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport) as http:
        with trio.fail_after(ATTACH_PROBE_SECONDS + 60):
            await status._show_comfyui(http, URL)


async def test_a_healthy_comfyui_is_shown_as_before(capsys: pytest.CaptureFixture[str]) -> None:
    """Version, devices, the queue's counts and its prompts, pending in run order."""
    await _status(_healthy)
    assert capsys.readouterr().out == (
        "ComfyUI 0.3.40 (python 3.12.3)\n"
        "  device cuda:0 NVIDIA L4: 3.0 of 24.0 GiB free\n"
        "  queue: 1 running, 2 pending\n"
        "    p-run\n"
        "    p-next\n"
        "    p-later\n"
    )


async def test_a_comfyui_busy_for_a_moment_is_retried_as_run_retries_it(
    autojump_clock: trio.testing.MockClock, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 503 (a proxy while ComfyUI restarts) then a healthy answer: status shows the
    ComfyUI, as run's start-up probe would accept it (status failed on the first 503)."""
    answers = iter([httpx.Response(503)])

    def handler(request: httpx.Request) -> httpx.Response:
        return next(answers, None) or _healthy(request)

    await _status(handler)
    assert capsys.readouterr().out.startswith("ComfyUI 0.3.40 ")


class _Silent(httpx.AsyncBaseTransport):
    """Accepts every request and never answers."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await trio.sleep_forever()
        raise AssertionError("unreachable")


async def test_a_comfyui_that_never_answers_is_said_so_in_runs_words(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Silence is "no answer within 45 s", as run says it (status called it "no
    connection" after its own 30 s timeout, or waited on)."""
    with pytest.raises(UsageError) as caught:
        await _status(_Silent())
    assert str(caught.value) == (
        "the ComfyUI at http://comfy.example:8188 does not answer GET /comfy/system_stats"
        f" (no answer within {ATTACH_PROBE_SECONDS:g} s): is it running?"
    )


async def test_a_proxy_page_instead_of_the_stats_is_said_in_runs_words() -> None:
    """A 200 that is not a JSON object (a proxy's HTML page): the line run's probe says."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text="<html>sign in</html>")

    with pytest.raises(UsageError) as caught:
        await _status(handler)
    said = probe_refusal("comfyui", URL, probe_problem(ComfyUIResponseError("html")))
    assert str(caught.value) == str(said)
    # It answered: the URL is the suspect, not whether it runs (it said "does not answer
    # GET /comfy/system_stats (an answer that is not a ComfyUI's): is it running?").
    assert str(said) == (
        "the ComfyUI at http://comfy.example:8188 answered GET /comfy/system_stats with an"
        " answer that is not a ComfyUI's: is the URL its base URL (with the path a reverse"
        " proxy serves it under, if any)?"
    )


async def test_a_failing_queue_names_the_queue_route(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Healthy stats, then /queue answered 404: the line names that route and status."""

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/queue"):
            return httpx.Response(404)
        return _healthy(request)

    with pytest.raises(UsageError) as caught:
        await _status(handler)
    assert str(caught.value).startswith(
        "the ComfyUI at http://comfy.example:8188 answered GET /comfy/queue with HTTP 404:"
    )


@pytest.mark.parametrize("answer", [200, 404, 503])
async def test_the_urls_credentials_are_never_shown_or_logged(
    autojump_clock: trio.testing.MockClock,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    answer: int,
) -> None:
    """Healthy or not, the URL's user:token is in no output line, error or log record."""
    caplog.set_level(logging.DEBUG)

    def handler(request: httpx.Request) -> httpx.Response:
        return _healthy(request) if answer == 200 else httpx.Response(answer)

    shown = ""
    try:
        await _status(handler)
    except UsageError as exc:
        shown = str(exc)
    out = capsys.readouterr()
    everything = shown + out.out + out.err + caplog.text
    assert "s3cret" not in everything
    assert "user:" not in everything
