"""The ComfyUI client against the simulator, in memory under MockClock, through every fault knob."""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import random
import traceback
from collections.abc import AsyncIterator, Callable, MutableMapping
from contextlib import aclosing, asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio
import wsproto.utilities
from hypothesis import given, settings
from hypothesis import strategies as st

from conjure_actors.clients import (
    ComfyUIClient,
    ComfyUIEvents,
    FollowUpdate,
    NodeExecuted,
    NodeProgress,
    NodesCached,
    NodeStarted,
    OutputFile,
    PreviewImage,
    PromptFailed,
    PromptInterrupted,
    PromptStarted,
    PromptSucceeded,
    RetryPolicy,
    check_signature,
    new_prompt_id,
)
from conjure_actors.clients.comfyui_wire import (
    ProgressMsg,
    ProgressStateMsg,
    UnknownMessage,
    parse_binary_frame,
    parse_ws_message,
)
from conjure_actors.clients.errors import (
    ClientError,
    DownloadError,
    ExecutionError,
    OutcomeUnknownError,
    PromptInterruptedError,
    PromptLostError,
    PromptRejectedError,
    TransportError,
)
from conjure_actors.clock import TrioWallClock
from conjure_actors.sim.comfyui import ComfyFaults, ComfyTimings, ComfyUISim
from conjure_actors.sim.media import write_glb, write_png

ROOT = Path(__file__).parents[2]
WORKFLOWS = ROOT / "conjure_actors" / "workflows"
BASE = "http://comfy.sim.invalid:8188"


def workflow(name: str) -> dict[str, Any]:
    return json.loads((WORKFLOWS / f"{name}.json").read_text())


@attrs.define
class Env:
    sim: ComfyUISim
    client: ComfyUIClient
    events: ComfyUIEvents
    nursery: trio.Nursery


@asynccontextmanager
async def open_env(
    *,
    faults: ComfyFaults | None = None,
    timings: ComfyTimings | None = None,
    redact: str | None = None,
    policy: RetryPolicy | None = None,
    base: str = BASE,
    app: Callable[..., Any] | None = None,
    seed: int = 0,
    ws_connect: Callable[[str], Any] | None = None,
) -> AsyncIterator[Env]:
    sim = ComfyUISim(seed=seed, faults=faults, timings=timings, wall=TrioWallClock().now)
    async with trio.open_nursery() as nursery:
        await nursery.start(sim.run)
        transport = httpx.ASGITransport(app=app or sim.asgi)
        async with httpx.AsyncClient(transport=transport) as http:
            client = ComfyUIClient(
                base,
                http=http,
                ws_connect=ws_connect or sim.open_ws_in_memory,
                redact=redact,
                policy=policy,
                rng=random.Random(seed),
            )
            events = client.events()
            await nursery.start(events.run)
            yield Env(sim, client, events, nursery)
            nursery.cancel_scope.cancel()


async def run_job(env: Env, graph: dict[str, Any]) -> tuple[str, list[FollowUpdate]]:
    pid = new_prompt_id()
    await submit_reconciled(env, graph, pid)
    updates: list[FollowUpdate] = []
    with trio.fail_after(600):
        async with aclosing(env.client.follow(pid, events=env.events)) as stream:
            updates.extend([update async for update in stream])
    return pid, updates


async def submit_reconciled(env: Env, graph: dict[str, Any], pid: str) -> None:
    """Submit as a caller must: an outcome unknown (a 5xx to POST /prompt) is looked up by
    its id, and sent again only when the lookup proves ComfyUI does not have it."""
    for _ in range(20):
        try:
            await env.client.submit(graph, pid, env.events.client_id)
            return
        except OutcomeUnknownError:
            if await env.client.find_prompt(pid) != "unknown":
                return
    raise AssertionError(f"prompt {pid}: outcome unknown 20 times")


async def conjure_graph(env: Env) -> dict[str, Any]:
    graph = workflow("conjure_flux_mesh")
    uploaded = await env.client.upload_image(write_png(48, 32, b"user sketch"), "sketch.png")
    graph["16"]["inputs"]["image"] = uploaded.reference
    return graph


@pytest.mark.slow  # (just test <= 30 s: CI and just check run it)
async def test_conjure_job_downloads_a_verified_png_and_glb(autojump_clock: trio.abc.Clock) -> None:
    """The CONJURE workflow: upload, submit, follow, download node 24's PNG and 33's GLB."""
    async with open_env() as env:
        _, updates = await run_job(env, await conjure_graph(env))
        final = updates[-1]
        assert isinstance(final, PromptSucceeded)
        by_node = {o.node_id: o for o in final.outputs}
        assert set(by_node) == {"24", "33"}
        for output in final.outputs:
            download = await env.client.download(output)
            assert download.sha256 == hashlib.sha256(env.sim.produced[output.path]).hexdigest()
        assert by_node["33"].key == "3d"
        assert by_node["33"].filename.endswith(".glb")


async def test_follow_reports_start_nodes_progress_outputs_then_success(
    autojump_clock: trio.abc.Clock,
) -> None:
    """Over the WebSocket: started, cached, node starts, sampler progress, outputs, success."""
    async with open_env() as env:
        _, updates = await run_job(env, await conjure_graph(env))
    kinds = [type(u) for u in updates]
    assert kinds[:2] == [PromptStarted, NodesCached]
    assert kinds[-1] is PromptSucceeded
    started = [u.node for u in updates if isinstance(u, NodeStarted)]
    assert len(started) == len(set(started)) == 19
    steps = [u for u in updates if isinstance(u, NodeProgress) and u.node == "20"]
    assert [s.value for s in steps] == list(range(1, 21))
    assert {u.node for u in updates if isinstance(u, NodeExecuted)} == {"24", "33"}


async def test_cached_rerun_returns_the_old_files(autojump_clock: trio.abc.Clock) -> None:
    """The same prompt twice: everything cached, the same file names, nothing new written."""
    async with open_env() as env:
        graph = await conjure_graph(env)
        _, first = await run_job(env, graph)
        written = dict(env.sim.produced)
        _, second = await run_job(env, graph)
    assert isinstance(first[-1], PromptSucceeded)
    assert isinstance(second[-1], PromptSucceeded)
    assert set(second[-1].outputs) == set(first[-1].outputs)
    assert set(second[-1].cached_nodes) == set(graph)
    assert env.sim.produced == written
    assert not any(isinstance(u, NodeStarted) for u in second)


async def test_rejected_prompt_lists_every_node_error(autojump_clock: trio.abc.Clock) -> None:
    """A 400 becomes PromptRejectedError with node id, class, input and message per problem."""
    graph = workflow("conjure_flux_mesh")
    graph["20"]["inputs"]["steps"] = 0
    graph["43"]["inputs"]["resolution"] = "lots"
    graph["16"]["inputs"]["image"] = "missing.png"
    async with open_env() as env:
        with pytest.raises(PromptRejectedError) as info:
            await env.client.submit(graph, new_prompt_id(), env.events.client_id)
    err = info.value
    assert err.error_type == "prompt_outputs_failed_validation"
    found = {(e.node_id, e.class_type, e.input_name, e.type) for e in err.node_errors}
    assert found == {
        ("20", "KSampler", "steps", "value_smaller_than_min"),
        ("43", "EmptyLatentHunyuan3Dv2", "resolution", "invalid_input_type"),
        ("16", "LoadImage", "image", "custom_validation_failed"),
    }
    assert "\n" not in str(err)


async def test_unknown_class_is_rejected_naming_the_node(
    autojump_clock: trio.abc.Clock,
) -> None:
    """invalid_prompt comes with empty node_errors; the node its ``details`` names ("Node ID
    '#2'") and the class its message names are the error's one entry (QA G12: they were
    lost, and the job's error had node_id/class_type null)."""
    graph = workflow("invert_save")
    graph["2"]["class_type"] = "NoSuchNode"
    async with open_env() as env:
        with pytest.raises(PromptRejectedError) as info:
            await env.client.submit(graph, new_prompt_id(), None)
    assert info.value.error_type == "invalid_prompt"
    assert [(e.node_id, e.class_type) for e in info.value.node_errors] == [("2", "NoSuchNode")]
    assert "NoSuchNode" in str(info.value)


async def test_partially_valid_prompt_returns_warnings(autojump_clock: trio.abc.Clock) -> None:
    """A 200 with node_errors: queued, and the dropped outputs come back as warnings."""
    graph = workflow("invert_save")
    graph["4"] = {
        "class_type": "EmptyImage",
        "inputs": {"width": 0, "height": 8, "batch_size": 1, "color": 0},
    }
    graph["5"] = {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": "p"}}
    async with open_env() as env:
        submitted = await env.client.submit(graph, new_prompt_id(), None)
    assert [(w.node_id, w.type) for w in submitted.warnings] == [("4", "value_smaller_than_min")]


async def test_node_failure_ends_with_prompt_failed(autojump_clock: trio.abc.Clock) -> None:
    """A node error fault: the last update is PromptFailed naming the node; wait() raises."""
    faults = ComfyFaults(node_error_classes=frozenset({"KSampler"}))
    async with open_env(faults=faults) as env:
        graph = await conjure_graph(env)
        _, updates = await run_job(env, graph)
        final = updates[-1]
        assert isinstance(final, PromptFailed)
        assert final.node_type == "KSampler"
        assert final.exception_type == "torch.OutOfMemoryError"
        graph["20"]["inputs"]["seed"] = 7
        pid = new_prompt_id()
        await env.client.submit(graph, pid, env.events.client_id)
        with trio.fail_after(600), pytest.raises(ExecutionError) as info:
            await env.client.wait(pid, events=env.events)
        assert info.value.node_type == "KSampler"


async def test_interrupt_ends_with_prompt_interrupted(autojump_clock: trio.abc.Clock) -> None:
    """interrupt(prompt_id) while node 2 runs: the next node is reported interrupted."""
    timings = ComfyTimings(per_class={"ImageBlur": 0.8})
    async with open_env(timings=timings) as env:
        pid = new_prompt_id()
        await env.client.submit(workflow("slow_blur_chain"), pid, env.events.client_id)
        updates = []
        with trio.fail_after(60):
            async with aclosing(env.client.follow(pid, events=env.events)) as stream:
                async for update in stream:
                    updates.append(update)
                    if isinstance(update, NodeStarted) and update.node == "2":
                        await env.client.interrupt(pid)
    final = updates[-1]
    assert isinstance(final, PromptInterrupted)
    assert final.node_id == "3"


async def test_wait_raises_prompt_interrupted_error(autojump_clock: trio.abc.Clock) -> None:
    """wait() turns an interrupt into PromptInterruptedError."""
    timings = ComfyTimings(per_class={"ImageBlur": 0.8})
    async with open_env(timings=timings) as env:
        pid = new_prompt_id()
        await env.client.submit(workflow("slow_blur_chain"), pid, env.events.client_id)

        async def interrupt_soon() -> None:
            await trio.sleep(1.0)
            await env.client.interrupt()

        env.nursery.start_soon(interrupt_soon)
        with trio.fail_after(60), pytest.raises(PromptInterruptedError):
            await env.client.wait(pid, events=env.events)


async def test_deleted_pending_prompt_is_lost(autojump_clock: trio.abc.Clock) -> None:
    """A pending prompt deleted from the queue vanishes: follow raises PromptLostError."""
    timings = ComfyTimings(per_class={"ImageBlur": 0.8})
    async with open_env(timings=timings) as env:
        first, second = new_prompt_id(), new_prompt_id()
        await env.client.submit(workflow("slow_blur_chain"), first, env.events.client_id)
        await env.client.submit(workflow("invert_save"), second, env.events.client_id)
        assert await env.client.find_prompt(second) == "pending"
        await env.client.delete_from_queue(second)
        with trio.fail_after(60), pytest.raises(PromptLostError):
            await env.client.wait(second, events=env.events)
        assert second not in env.sim.prompts_run


async def test_restart_mid_prompt_is_lost_and_socket_reconnects(
    autojump_clock: trio.abc.Clock,
) -> None:
    """A server restart forgets the running prompt; the events socket comes back fresh."""
    faults = ComfyFaults(restart_during_prompt=1)
    async with open_env(faults=faults) as env:
        graph = await conjure_graph(env)
        first_id = env.events.client_id
        pid = new_prompt_id()
        await env.client.submit(graph, pid, first_id)
        with trio.fail_after(600), pytest.raises(PromptLostError):
            await env.client.wait(pid, events=env.events)
        with trio.fail_after(60):
            while env.events.generation < 2:  # noqa: ASYNC110 - the reconnect has no event
                await trio.sleep(0.1)
        assert env.events.client_id != first_id
        assert env.sim.restarts == 1


async def test_dropped_socket_reconnects_with_fresh_id_and_job_completes(
    autojump_clock: trio.abc.Clock,
) -> None:
    """Sockets dropped every 10 frames: new client ids, and the job still succeeds."""
    faults = ComfyFaults(ws_drop_after=10)
    async with open_env(faults=faults) as env:
        first_id = env.events.client_id
        _, updates = await run_job(env, await conjure_graph(env))
        assert isinstance(updates[-1], PromptSucceeded)
        assert env.events.generation >= 2
        assert env.events.client_id != first_id


async def test_random_socket_drops_still_complete(autojump_clock: trio.abc.Clock) -> None:
    """A 5 % chance per frame of losing the socket: the job completes by polling."""
    async with open_env(faults=ComfyFaults(ws_drop_rate=0.05), seed=3) as env:
        _, updates = await run_job(env, await conjure_graph(env))
    assert isinstance(updates[-1], PromptSucceeded)


async def test_silent_socket_job_completes_by_polling(autojump_clock: trio.abc.Clock) -> None:
    """A socket that goes silent after its first frame: polling finishes the job."""
    faults = ComfyFaults(ws_silence_rate=1.0, ws_silent_after=1)
    async with open_env(faults=faults) as env:
        _, updates = await run_job(env, await conjure_graph(env))
    assert isinstance(updates[-1], PromptSucceeded)
    assert {o.node_id for o in updates[-1].outputs} == {"24", "33"}


async def test_socket_protocol_error_falls_back_to_polling(
    autojump_clock: trio.abc.Clock,
) -> None:
    """A socket that fails with wsproto's LocalProtocolError (trio-websocket #184: a server
    ping answered on a closing socket) is a dropped socket: the events task reports itself
    started, keeps trying, and the job completes by polling."""

    @asynccontextmanager
    async def broken(url: str) -> AsyncIterator[Any]:
        raise wsproto.utilities.LocalProtocolError("Event Pong cannot be sent")
        yield  # pragma: no cover

    async with open_env(ws_connect=broken) as env:
        _, updates = await run_job(env, workflow("invert_save"))
        assert isinstance(updates[-1], PromptSucceeded)
        assert not env.events.connected


async def test_polling_only_without_events(autojump_clock: trio.abc.Clock) -> None:
    """follow() without a WebSocket still reports start, cache and the outcome."""
    async with open_env() as env:
        pid = new_prompt_id()
        await env.client.submit(await conjure_graph(env), pid, None)
        with trio.fail_after(600):
            updates = [u async for u in env.client.follow(pid, poll_interval=0.5)]
    assert [type(u) for u in updates] == [PromptStarted, NodesCached, PromptSucceeded]


async def test_history_race_is_not_taken_for_a_lost_prompt(
    autojump_clock: trio.abc.Clock,
) -> None:
    """History written 3 s after execution_success: the follower waits for it."""
    faults = ComfyFaults(history_race_rate=1.0, history_race_delay=3.0)
    async with open_env(faults=faults) as env:
        _, updates = await run_job(env, workflow("invert_save"))
    assert isinstance(updates[-1], PromptSucceeded)


async def test_429_bursts_are_retried_after_retry_after(autojump_clock: trio.abc.Clock) -> None:
    """429 bursts with Retry-After on every route: the job still completes."""
    faults = ComfyFaults(http_429_rate=0.2, http_429_burst=3, retry_after=2.0)
    policy = RetryPolicy(attempts=8)
    async with open_env(faults=faults, policy=policy, seed=5) as env:
        _, updates = await run_job(env, await conjure_graph(env))
        assert isinstance(updates[-1], PromptSucceeded)
        for output in updates[-1].outputs:
            await env.client.download(output)


async def test_5xx_are_retried(autojump_clock: trio.abc.Clock) -> None:
    """A 30 % rate of 503s: every call is retried until it succeeds (POST /prompt's 503 is
    an outcome unknown: looked up, and sent again once the lookup finds nothing)."""
    policy = RetryPolicy(attempts=10)
    async with open_env(faults=ComfyFaults(http_5xx_rate=0.3), policy=policy, seed=1) as env:
        _, updates = await run_job(env, await conjure_graph(env))
        assert isinstance(updates[-1], PromptSucceeded)
        for output in updates[-1].outputs:
            await env.client.download(output)


async def test_truncated_downloads_are_retried(autojump_clock: trio.abc.Clock) -> None:
    """Half the /view answers are cut short: download retries and verifies."""
    faults = ComfyFaults(truncated_download_rate=0.5)
    async with open_env(faults=faults, policy=RetryPolicy(attempts=10), seed=2) as env:
        _, updates = await run_job(env, await conjure_graph(env))
        assert isinstance(updates[-1], PromptSucceeded)
        for output in updates[-1].outputs:
            download = await env.client.download(output)
            assert check_signature(output.filename, download.data) is None


async def test_always_truncated_download_raises(autojump_clock: trio.abc.Clock) -> None:
    """Every /view answer cut short: DownloadError after the attempts."""
    faults = ComfyFaults(truncated_download_rate=1.0)
    async with open_env(faults=faults, policy=RetryPolicy(attempts=3)) as env:
        _, updates = await run_job(env, workflow("invert_save"))
        assert isinstance(updates[-1], PromptSucceeded)
        with pytest.raises(DownloadError):
            await env.client.download(updates[-1].outputs[0])


async def test_slow_download_times_out_then_succeeds(autojump_clock: trio.abc.Clock) -> None:
    """Half the downloads hang 100 s: the 5 s timeout retries them."""
    faults = ComfyFaults(slow_download_rate=0.5, slow_download_seconds=100.0)
    policy = RetryPolicy(attempts=10, request_timeout=5.0)
    async with open_env(faults=faults, policy=policy, seed=4) as env:
        _, updates = await run_job(env, workflow("invert_save"))
        assert isinstance(updates[-1], PromptSucceeded)
        download = await env.client.download(updates[-1].outputs[0])
        assert download.size > 0


async def test_always_slow_download_raises_transport_error(
    autojump_clock: trio.abc.Clock,
) -> None:
    """Every download hangs: TransportError once the attempts are used."""
    faults = ComfyFaults(slow_download_rate=1.0, slow_download_seconds=100.0)
    policy = RetryPolicy(attempts=3, request_timeout=5.0)
    async with open_env(faults=faults, policy=policy) as env:
        _, updates = await run_job(env, workflow("invert_save"))
        with pytest.raises(TransportError):
            await env.client.download(updates[-1].outputs[0])


def swallow_prompt_answers(sim: ComfyUISim) -> Callable[..., Any]:
    """An ASGI app that queues POST /prompt but never answers it (a lost response)."""

    async def app(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == "/prompt":

            async def drop(message: MutableMapping[str, Any]) -> None:
                return None

            await sim.asgi(scope, receive, drop)
            await trio.sleep_forever()
        await sim.asgi(scope, receive, send)

    return app


async def test_submit_timeout_is_outcome_unknown_and_reconciled(
    autojump_clock: trio.abc.Clock,
) -> None:
    """A lost /prompt answer: OutcomeUnknownError, find_prompt finds it, it runs once."""
    policy = RetryPolicy(request_timeout=5.0)
    sim_box: list[ComfyUISim] = []

    def app(scope: Any, receive: Any, send: Any) -> Any:
        return swallow_prompt_answers(sim_box[0])(scope, receive, send)

    async with open_env(policy=policy, app=app) as env:
        sim_box.append(env.sim)
        pid = new_prompt_id()
        with pytest.raises(OutcomeUnknownError) as info:
            await env.client.submit(workflow("invert_save"), pid, env.events.client_id)
        assert any(pid in note for note in getattr(info.value, "__notes__", []))
        assert await env.client.find_prompt(pid) in ("pending", "running", "done")
        result = await env.client.wait(pid, events=env.events)
        assert result.outputs
        assert env.sim.prompts_run.count(pid) == 1


async def test_previews_reach_the_follower(autojump_clock: trio.abc.Clock) -> None:
    """SaveImageWebsocket's images arrive as PreviewImage updates (PNG, with metadata)."""
    async with open_env() as env:
        _, updates = await run_job(env, workflow("ws_preview"))
    previews = [u for u in updates if isinstance(u, PreviewImage)]
    assert len(previews) == 2
    assert all(p.image_type == "image/png" and p.data.startswith(b"\x89PNG") for p in previews)
    assert all(p.node == "2" for p in previews)


@pytest.mark.slow  # ~0.2 s or more: the inner loop runs without it, CI with it
async def test_frame_over_one_mib_does_not_break_the_socket(
    autojump_clock: trio.abc.Clock,
) -> None:
    """A ~3 MB binary frame is received whole; the socket is not closed for it."""
    async with open_env() as env:
        _, updates = await run_job(env, workflow("ws_big_frame"))
        assert env.events.generation == 1
    previews = [u for u in updates if isinstance(u, PreviewImage)]
    assert len(previews[0].data) > 1024 * 1024
    assert isinstance(updates[-1], PromptSucceeded)


async def test_upload_into_subfolder_is_referenced_with_its_folder(
    autojump_clock: trio.abc.Clock,
) -> None:
    """An upload into a subfolder is usable from LoadImage as 'subfolder/name'."""
    async with open_env() as env:
        uploaded = await env.client.upload_image(write_png(8, 8, b"s"), "s.png", subfolder="jobs")
        assert uploaded.reference == "jobs/s.png"
        graph = {
            "1": {"class_type": "LoadImage", "inputs": {"image": uploaded.reference}},
            "2": {
                "class_type": "SaveImage",
                "inputs": {"images": ["1", 0], "filename_prefix": "x"},
            },
        }
        _, updates = await run_job(env, graph)
    assert isinstance(updates[-1], PromptSucceeded)


async def test_queue_snapshot_is_in_run_order(autojump_clock: trio.abc.Clock) -> None:
    """queue(): pending sorted by number (front prompts first), graphs dropped."""
    timings = ComfyTimings(per_class={"ImageBlur": 0.8})
    async with open_env(timings=timings) as env:
        running = new_prompt_id()
        await env.client.submit(workflow("slow_blur_chain"), running, env.events.client_id)
        async with aclosing(env.client.follow(running, events=env.events)) as stream:
            async for update in stream:
                if isinstance(update, NodeStarted):
                    break
        later, first = new_prompt_id(), new_prompt_id()
        graph = workflow("invert_save")
        await env.client.submit(graph, later, None)
        graph2 = copy.deepcopy(graph)
        graph2["1"]["inputs"]["color"] = 1
        await env.client.submit(graph2, first, None, front=True)
        snapshot = await env.client.queue()
        assert [i.prompt_id for i in snapshot.running] == [running]
        assert [i.prompt_id for i in snapshot.pending] == [first, later]
        assert await env.client.find_prompt(running) == "running"
        assert await env.client.find_prompt(new_prompt_id()) == "unknown"


async def test_small_routes_answer(autojump_clock: trio.abc.Clock) -> None:
    """system_stats and object_info return the server's dictionaries."""
    async with open_env() as env:
        stats = await env.client.system_stats()
        info = await env.client.object_info("SaveGLB")
        everything = await env.client.object_info()
    assert stats["system"]["comfyui_version"]
    assert info["SaveGLB"]["output_node"] is True
    assert "KSampler" in everything


# ---------------------------------------------------------------------------- secrets

MARKER = "sekrit-7f3a9c"


async def test_secret_url_never_appears_in_errors_logs_or_reprs(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """With redact set, failures mention 'server s1' and never the machine URL."""
    caplog.set_level(logging.DEBUG)
    base = f"https://{MARKER}.runcomfy.invalid"
    raised: list[BaseException] = []
    timings = ComfyTimings(per_class={"ImageBlur": 0.8})
    faults = ComfyFaults(truncated_download_rate=1.0, ws_drop_after=25)
    policy = RetryPolicy(attempts=2, request_timeout=5.0)
    async with open_env(
        redact="server s1", base=base, timings=timings, faults=faults, policy=policy
    ) as env:
        assert MARKER not in repr(env.client) + repr(env.events)
        bad = workflow("invert_save")
        bad["1"]["inputs"]["width"] = 0
        with pytest.raises(PromptRejectedError) as rejected:
            await env.client.submit(bad, new_prompt_id(), None)
        raised.append(rejected.value)
        _, updates = await run_job(env, workflow("invert_save"))
        with pytest.raises(DownloadError) as broken:
            await env.client.download(updates[-1].outputs[0])
        raised.append(broken.value)
        missing = OutputFile("9", "images", "nope.png", "", "output")
        with pytest.raises(DownloadError) as absent:
            await env.client.download(missing)
        raised.append(absent.value)
        first, second = new_prompt_id(), new_prompt_id()
        await env.client.submit(workflow("slow_blur_chain"), first, None)
        await env.client.submit(workflow("ws_preview"), second, None)
        await env.client.delete_from_queue(second)
        with trio.fail_after(60), pytest.raises(PromptLostError) as lost:
            await env.client.wait(second)
        raised.append(lost.value)

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"cannot reach {request.url}", request=request)

    async with httpx.AsyncClient(transport=httpx.MockTransport(refuse)) as http:
        client = ComfyUIClient(base, http=http, redact="server s1", policy=policy)
        with pytest.raises(TransportError) as refused:
            await client.system_stats()
        raised.append(refused.value)
    for exc in raised:
        text = "".join(traceback.format_exception(exc)) + " ".join(getattr(exc, "__notes__", []))
        assert MARKER not in text
        assert "server s1" in str(exc)
    for record in caplog.records:
        assert MARKER not in record.getMessage()
    assert any("server s1" in r.getMessage() for r in caplog.records if r.name == "httpx")


# ---------------------------------------------------------------------------- pure parts


def test_progress_state_decodes_to_a_typed_struct() -> None:
    """A captured progress_state frame decodes through the tagged-union decoder."""
    line = next(
        ln
        for ln in (ROOT / "tests/data/captures/ws_normal_run.jsonl").read_text().splitlines()
        if '"progress_state"' in ln
    )
    frame = json.dumps(json.loads(line)["frame"] | {"kind": None})
    msg = parse_ws_message(frame)
    assert isinstance(msg, ProgressStateMsg)
    assert msg.data.nodes["1"].state == "running"


@given(
    kind=st.text(min_size=1, max_size=20).filter(
        lambda t: (
            t
            not in {
                "status",
                "execution_start",
                "execution_cached",
                "executing",
                "progress",
                "progress_state",
                "executed",
                "execution_success",
                "execution_error",
                "execution_interrupted",
                "feature_flags",
            }
        )
    ),
    data=st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=10),
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
        ),
        max_leaves=10,
    ),
)
def test_unknown_frames_are_kept_not_raised(kind: str, data: Any) -> None:
    """Any frame of an unknown type decodes to UnknownMessage with its type."""
    msg = parse_ws_message(json.dumps({"type": kind, "data": data}))
    assert isinstance(msg, UnknownMessage)
    assert msg.type == kind


@given(st.binary(max_size=64))
def test_binary_frames_never_raise(frame: bytes) -> None:
    """Any bytes decode to a BinaryFrame (garbage becomes an unknown event)."""
    parsed = parse_binary_frame(frame)
    assert isinstance(parsed.event, int)


@given(
    w=st.integers(1, 300),
    h=st.integers(1, 300),
    digest=st.binary(min_size=1, max_size=32),
    cut=st.floats(0.0, 0.999),
)
def test_signature_check_accepts_sim_files_and_rejects_truncations(
    w: int, h: int, digest: bytes, cut: float
) -> None:
    """Sim PNGs/GLBs pass the client's check; any truncation of them fails it."""
    for name, data in (("a.png", write_png(w, h, digest)), ("m.glb", write_glb(digest))):
        assert check_signature(name, data) is None
        assert check_signature(name, data[: int(len(data) * cut)]) is not None


# ---------------------------------------------------------------------------- property


@settings(max_examples=8, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    drop=st.sampled_from([0.0, 0.02, 0.2]),
    rate_5xx=st.sampled_from([0.0, 0.1]),
    race=st.sampled_from([0.0, 1.0]),
    truncated=st.sampled_from([0.0, 0.3]),
    jobs=st.integers(1, 3),
)
@pytest.mark.slow  # (just test <= 30 s: CI and just check run it)
def test_jobs_succeed_once_whatever_the_transient_faults(
    seed: int, drop: float, rate_5xx: float, race: float, truncated: float, jobs: int
) -> None:
    """Transient faults never lose a job, never run a prompt twice, outputs verify."""
    faults = ComfyFaults(
        ws_drop_rate=drop,
        http_5xx_rate=rate_5xx,
        history_race_rate=race,
        history_race_delay=2.0,
        truncated_download_rate=truncated,
    )

    async def scenario() -> None:
        async with open_env(faults=faults, policy=RetryPolicy(attempts=12), seed=seed) as env:
            results: dict[str, FollowUpdate] = {}

            async def one(k: int) -> None:
                graph = workflow("invert_save")
                graph["1"]["inputs"]["color"] = seed * 10 + k
                pid, updates = await run_job(env, graph)
                results[pid] = updates[-1]
                for output in getattr(updates[-1], "outputs", ()):
                    download = await env.client.download(output)
                    assert download.data == env.sim.produced[output.path]

            async with trio.open_nursery() as nursery:
                for k in range(jobs):
                    nursery.start_soon(one, k)
            assert all(isinstance(r, PromptSucceeded) for r in results.values())
            assert len(env.sim.prompts_run) == len(set(env.sim.prompts_run)) == jobs

    trio.run(scenario, clock=trio.testing.MockClock(autojump_threshold=0))


def test_client_error_tree_is_used() -> None:
    """Every client error raised above is a ClientError (one root for callers)."""
    for cls in (DownloadError, PromptLostError, PromptRejectedError, TransportError):
        assert issubclass(cls, ClientError)


def test_public_names_are_exported() -> None:
    """Every name in conjure_actors.clients.__all__ exists."""
    import conjure_actors.clients as package

    assert all(hasattr(package, name) for name in package.__all__)


async def test_frames_before_follow_are_buffered_for_the_follower(
    autojump_clock: trio.abc.Clock,
) -> None:
    """Frames that arrive before follow() subscribes are delivered to it (newest kept)."""
    async with open_env() as env:
        pid = new_prompt_id()
        await env.client.submit(workflow("invert_save"), pid, env.events.client_id)
        with trio.fail_after(60):
            while env.sim.prompts_run != [pid] or env.sim.queue_remaining:  # noqa: ASYNC110
                await trio.sleep(0.01)  # the simulator's state has no event to wait on
        updates = [u async for u in env.client.follow(pid, events=env.events)]
    assert isinstance(updates[0], PromptStarted)
    assert any(isinstance(u, NodeExecuted) for u in updates)
    assert isinstance(updates[-1], PromptSucceeded)


CAPTURED_BINARY = ROOT / "tests/data/captures/binary"


def test_captured_binary_frames_decode() -> None:
    """The captured type-1, type-3 and type-4 frames decode to their image, text and metadata."""
    legacy = parse_binary_frame((CAPTURED_BINARY / "ws_preview_legacy_1_event1.bin").read_bytes())
    assert (legacy.event, legacy.image_type) == (1, "image/png")
    assert legacy.data.startswith(b"\x89PNG\r\n\x1a\n")
    meta = parse_binary_frame((CAPTURED_BINARY / "ws_preview_metadata_1_event4.bin").read_bytes())
    assert (meta.event, meta.image_type, meta.node_id) == (4, "image/png", "2")
    assert meta.prompt_id == "447fd527-7665-4301-a3d6-1963311b0348"
    assert meta.data.startswith(b"\x89PNG\r\n\x1a\n")
    text = parse_binary_frame((CAPTURED_BINARY / "loadimage_run_1_event3.bin").read_bytes())
    assert (text.event, text.node_id) == (3, "14")
    assert text.text == "width: 40, height: 30\n batch size: 1"


async def test_legacy_previews_are_routed_by_the_running_prompt(
    autojump_clock: trio.abc.Clock,
) -> None:
    """Without preview metadata, type-1 frames go to the prompt that is executing."""
    async with open_env() as env:
        legacy = env.client.events(feature_flags=False)
        await env.nursery.start(legacy.run)
        pid = new_prompt_id()
        await env.client.submit(workflow("ws_preview"), pid, legacy.client_id)
        with trio.fail_after(60):
            updates = [u async for u in env.client.follow(pid, events=legacy)]
        stats = legacy.statistics()
    previews = [u for u in updates if isinstance(u, PreviewImage)]
    assert [(p.image_type, p.node) for p in previews] == [("image/png", None)] * 2
    assert stats.connected
    assert stats.generation == 1
    assert stats.followers == 0


async def test_gzip_encoded_download_is_not_mistaken_for_truncated() -> None:
    """A gzip-encoded /view (Content-Length of the compressed body) verifies by signature."""
    import gzip

    png = write_png(32, 32, b"z")
    body = gzip.compress(png)

    def answer(request: httpx.Request) -> httpx.Response:
        headers = {"content-encoding": "gzip", "content-length": str(len(body))}
        return httpx.Response(200, headers=headers, content=body)

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as http:
        client = ComfyUIClient(BASE, http=http)
        download = await client.download(OutputFile("1", "images", "a.png", "", "output"))
    assert download.data == png


async def test_random_node_errors_fail_some_jobs_and_never_hang(
    autojump_clock: trio.abc.Clock,
) -> None:
    """node_error_rate: each job ends, succeeded or failed, and the failures name a node."""
    async with open_env(faults=ComfyFaults(node_error_rate=0.3), seed=11) as env:
        finals = []
        for color in range(6):
            graph = workflow("invert_save")
            graph["1"]["inputs"]["color"] = color
            _, updates = await run_job(env, graph)
            finals.append(updates[-1])
    failed = [f for f in finals if isinstance(f, PromptFailed)]
    assert failed
    assert any(isinstance(f, PromptSucceeded) for f in finals)
    assert all(f.node_id in {"1", "2", "3"} for f in failed)


async def test_mesh_decoder_reports_progress_steps(autojump_clock: trio.abc.Clock) -> None:
    """VAEDecodeHunyuan3D sends the configured number of progress updates."""
    timings = ComfyTimings(progress_steps={"VAEDecodeHunyuan3D": 5})
    async with open_env(timings=timings) as env:
        _, updates = await run_job(env, await conjure_graph(env))
    steps = [u.value for u in updates if isinstance(u, NodeProgress) and u.node == "45"]
    assert steps == [1, 2, 3, 4, 5]


async def test_a_flood_of_buffered_frames_does_not_starve_other_tasks(
    autojump_clock: trio.abc.Clock,
) -> None:
    """A follower draining many buffered frames still lets other tasks run between them."""

    def unreachable(request: httpx.Request) -> httpx.Response:
        raise AssertionError(f"no poll expected before the flood is read: {request.url}")

    async with httpx.AsyncClient(transport=httpx.MockTransport(unreachable)) as http:
        client = ComfyUIClient(BASE, http=http)
        events = ComfyUIEvents(client)
        events.connected = True  # a live socket: the first poll waits for poll_interval
        pid = new_prompt_id()
        flood = ComfyUIEvents.MAX_BUFFERED_FRAMES
        for value in range(flood):
            frame = {"prompt_id": pid, "node": "3", "value": value + 1, "max": flood}
            events.dispatch(json.dumps({"type": "progress", "data": frame}))
        read = 0
        seen_by_other: list[int] = []

        async def follower() -> None:
            nonlocal read
            async with aclosing(client.follow(pid, events=events)) as updates:
                async for _ in updates:  # nothing else here awaits: only follow can yield
                    read += 1

        async def other() -> None:
            await trio.lowlevel.checkpoint()
            seen_by_other.append(read)

        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(follower)
                nursery.start_soon(other)
                while read < flood:
                    await trio.lowlevel.checkpoint()
                nursery.cancel_scope.cancel()
    assert seen_by_other
    assert seen_by_other[0] < flood // 4


async def test_progress_state_frames_wake_no_follower() -> None:
    """A followed prompt's progress_state frame is dropped by dispatch, its progress is not."""
    line = next(
        ln
        for ln in (ROOT / "tests/data/captures/ws_normal_run.jsonl").read_text().splitlines()
        if '"progress_state"' in ln
    )
    state = json.loads(line)["frame"]
    state.pop("kind", None)
    pid = state["data"]["prompt_id"]
    progress = {"type": "progress", "data": {"prompt_id": pid, "node": "1", "value": 1, "max": 2}}
    async with httpx.AsyncClient() as http:
        events = ComfyUIEvents(ComfyUIClient(BASE, http=http))
        sub = events.subscribe(pid)
        events.dispatch(json.dumps(state))
        with pytest.raises(trio.WouldBlock):
            sub.receive.receive_nowait()
        events.dispatch(json.dumps(progress))
        assert isinstance(sub.receive.receive_nowait(), ProgressMsg)
        sub.close()
