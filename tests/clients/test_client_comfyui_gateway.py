"""A gateway in front of ComfyUI (RunComfy's proxy) answering POST /prompt or POST
/upload/image with a 502/503/504 after ComfyUI acted on it: a prompt is never sent twice
(P9), its outcome is "unknown" (the caller looks the prompt id up); an upload is resent
safely. ComfyUI's own POST /prompt answers 200 or 400 (500 on an exception in it): a 503 is
the proxy's (Envoy's "upstream connect error or disconnect/reset before headers")."""

from __future__ import annotations

import random
from contextlib import aclosing

import httpx
import pytest
import trio

from conjure_actors.clients import ComfyUIClient, PromptSucceeded, RetryPolicy, new_prompt_id
from conjure_actors.clients.errors import ComfyUIError, OutcomeUnknownError, PromptRejectedError
from conjure_actors.sim.comfyui import ComfyFaults
from conjure_actors.sim.media import write_png
from tests.clients.test_client_comfyui import open_env, workflow

GATEWAY_ON_PROMPT = ComfyFaults(
    gateway_error_after_accept_rate=1.0, gateway_error_paths=frozenset({"/prompt"})
)
GATEWAY_ON_UPLOAD = ComfyFaults(
    gateway_error_after_accept_rate=1.0, gateway_error_paths=frozenset({"/upload/image"})
)


async def test_a_gateway_error_after_queueing_is_outcome_unknown_and_runs_once(
    autojump_clock: trio.abc.Clock,
) -> None:
    """POST /prompt queued, then answered 502/504: OutcomeUnknownError after ONE request, the
    prompt found by its id, and run once."""
    async with open_env(faults=GATEWAY_ON_PROMPT) as env:
        pid = new_prompt_id()
        with pytest.raises(OutcomeUnknownError) as info:
            await env.client.submit(workflow("invert_save"), pid, env.events.client_id)
        assert info.value.status in (502, 504)
        assert env.sim.gateway_errors == 1
        assert await env.client.find_prompt(pid) in ("pending", "running", "done")
        with trio.fail_after(600):
            async with aclosing(env.client.follow(pid, events=env.events)) as stream:
                updates = [update async for update in stream]
        assert isinstance(updates[-1], PromptSucceeded)
        assert env.sim.queue_remaining == 0  # not queued again behind it
        assert env.sim.prompts_run.count(pid) == 1


async def test_a_503_after_queueing_is_outcome_unknown_and_runs_once(
    autojump_clock: trio.abc.Clock,
) -> None:
    """POST /prompt queued, then the proxy's 503 (reset before headers): before, resent on
    the 503 (the policy's attempts, each queued again: the prompt ran 3 times); now
    OutcomeUnknownError after ONE request, the prompt found by its id, run once."""
    faults = ComfyFaults(
        gateway_error_after_accept_rate=1.0,
        gateway_error_paths=frozenset({"/prompt"}),
        gateway_error_statuses=(503,),
    )
    async with open_env(faults=faults, policy=RetryPolicy(attempts=3)) as env:
        pid = new_prompt_id()
        with pytest.raises(OutcomeUnknownError) as info:
            await env.client.submit(workflow("invert_save"), pid, env.events.client_id)
        assert info.value.status == 503
        assert env.sim.gateway_errors == 1
        assert await env.client.find_prompt(pid) in ("pending", "running", "done")
        env.sim.faults = ComfyFaults()
        with trio.fail_after(600):
            async with aclosing(env.client.follow(pid, events=env.events)) as stream:
                updates = [update async for update in stream]
        assert isinstance(updates[-1], PromptSucceeded)
        assert env.sim.prompts_run.count(pid) == 1


def _answering(status: int, body: bytes, sent: list[httpx.Request]) -> httpx.MockTransport:
    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(status, content=body)

    return httpx.MockTransport(answer)


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (500, b"500 Internal Server Error"),
        (502, b"<html>502 Bad Gateway</html>"),
        (503, b"upstream connect error or disconnect/reset before headers"),
        (504, b"<html>504 Gateway Time-out</html>"),
        (200, b"<html>a proxy's page</html>"),
    ],
)
async def test_an_answer_that_does_not_prove_a_refusal_is_outcome_unknown(
    autojump_clock: trio.abc.Clock, status: int, body: bytes
) -> None:
    """A 5xx (a proxy's 503 included), or a 200 we cannot read: sent once, outcome unknown
    (a gateway error's lookup, answered the same here, proves nothing: not sent again)."""
    sent: list[httpx.Request] = []
    async with httpx.AsyncClient(transport=_answering(status, body, sent)) as http:
        client = ComfyUIClient("http://comfy.invalid", http=http, rng=random.Random(0))
        with pytest.raises(OutcomeUnknownError, match="find_prompt"):
            await client.submit(workflow("invert_save"), new_prompt_id(), "c")
    assert [r.url.path for r in sent if r.method == "POST"] == ["/prompt"]


@pytest.mark.parametrize("status", [502, 503, 504])
async def test_a_gateway_error_with_nothing_queued_is_sent_again_once_a_lookup_shows_it_absent(
    autojump_clock: trio.abc.Clock, status: int
) -> None:
    """A proxy answers 503 while ComfyUI restarts (nothing forwarded). Given up at once,
    each such answer cost the job an attempt: three in a row failed a job that ComfyUI
    would have run (soak seed 48: RetriesExhausted). The prompt is looked up, absent, and
    sent again under the same id after a pause: queued, no attempt lost. The same for a
    502/504 (a lookup that shows it absent proves ComfyUI did not take it)."""
    sent: list[str] = []
    pid = new_prompt_id()

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(f"{request.method} {request.url.path}")
        if request.url.path == "/prompt":
            if sent.count("POST /prompt") == 1:
                return httpx.Response(status, content=b"upstream connect error")
            return httpx.Response(200, json={"prompt_id": pid, "number": 3, "node_errors": {}})
        if request.url.path == "/queue":
            return httpx.Response(200, json={"queue_running": [], "queue_pending": []})
        return httpx.Response(200, json={})  # /history/{id}: not there

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as http:
        client = ComfyUIClient("http://comfy.invalid", http=http, rng=random.Random(0))
        queued = await client.submit(workflow("invert_save"), pid, "c")
    assert queued.prompt_id == pid
    assert sent.count("POST /prompt") == 2
    assert sent.index("GET /queue") < len(sent) - 1  # looked up before sending again


async def test_a_refusal_hidden_by_a_gateway_error_is_learnt_by_sending_again(
    autojump_clock: trio.abc.Clock,
) -> None:
    """ComfyUI refused the prompt (400, never queued) and the proxy answered 502 instead:
    given up as an outcome unknown, the job retried it as a new attempt until its attempts
    ran out, and failed RetriesExhausted, never PromptRejected (money soak, seed 906). Looked
    up (absent) and sent again, the refusal comes through."""
    sent: list[str] = []
    refusal = {
        "error": {"type": "prompt_outputs_failed_validation", "message": "bad"},
        "node_errors": {},
    }

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(f"{request.method} {request.url.path}")
        if request.url.path == "/prompt":
            if sent.count("POST /prompt") == 1:
                return httpx.Response(502, content=b"<html>502 Bad Gateway</html>")
            return httpx.Response(400, json=refusal)
        if request.url.path == "/queue":
            return httpx.Response(200, json={"queue_running": [], "queue_pending": []})
        return httpx.Response(200, json={})  # /history/{id}: not there

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as http:
        client = ComfyUIClient("http://comfy.invalid", http=http, rng=random.Random(0))
        with pytest.raises(PromptRejectedError):
            await client.submit(workflow("invert_save"), new_prompt_id(), "c")
    assert sent.count("POST /prompt") == 2


async def test_a_429_is_resent(autojump_clock: trio.abc.Clock) -> None:
    """A 429 is a rate limiter's, answered before the request is routed on (nothing was
    queued): resent up to the policy's attempts, then a plain ComfyUIError."""
    sent: list[httpx.Request] = []
    async with httpx.AsyncClient(transport=_answering(429, b"busy", sent)) as http:
        client = ComfyUIClient(
            "http://comfy.invalid", http=http, policy=RetryPolicy(attempts=3), rng=random.Random(0)
        )
        with pytest.raises(ComfyUIError) as info:
            await client.submit(workflow("invert_save"), new_prompt_id(), "c")
    assert not isinstance(info.value, OutcomeUnknownError)
    assert len(sent) == 3


async def test_an_upload_answered_by_a_gateway_is_resent_without_a_second_copy(
    autojump_clock: trio.abc.Clock,
) -> None:
    """POST /upload/image stored, then answered 502/504: resent, ComfyUI finds the same bytes
    under the same name (no ``name (1).png``): the upload is idempotent, retrying is safe."""
    data = write_png(8, 8, b"gateway")
    async with open_env(faults=GATEWAY_ON_UPLOAD, policy=RetryPolicy(attempts=3)) as env:
        with pytest.raises(ComfyUIError):
            await env.client.upload_image(data, "conjure_gw.png")
        assert env.sim.gateway_errors == 3
        env.sim.faults = ComfyFaults()
        uploaded = await env.client.upload_image(data, "conjure_gw.png")
        assert uploaded.name == "conjure_gw.png"
        assert [n for n in env.sim._input_files() if n.startswith("conjure_gw")] == [
            "conjure_gw.png"
        ]
