"""The simulator's ``/history``: entries kept as their JSON bytes (issue 16) read back exactly
as written, and a finished prompt leaves (almost) nothing for the garbage collector."""

from __future__ import annotations

import gc
from typing import Any

import httpx
import msgspec
import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from conjure_actors.sim.comfyui import MAX_HISTORY, ComfyUISim

_json: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=6,
)
_entries = st.fixed_dictionaries(
    {
        "prompt": st.lists(_json, max_size=5),
        "outputs": st.dictionaries(st.text(), _json, max_size=3),
        "status": st.fixed_dictionaries(
            {
                "status_str": st.sampled_from(["success", "error"]),
                "completed": st.booleans(),
                "messages": st.lists(st.tuples(st.text(), _json).map(list), max_size=3),
            }
        ),
        "meta": st.dictionaries(st.text(), _json, max_size=3),
    }
)
_pids = st.sampled_from(["a", "b", "c", "d", "e/f", 'quote"d', "é"])


def _get(sim: ComfyUISim, path: str, query: dict[str, str] | None = None) -> bytes:
    """The body of a GET on ``path``, run straight through the simulator's router."""
    coro = sim._http("GET", path, query or {}, {}, b"")
    try:
        coro.send(None)  # the history routes never wait: the router returns at once
    except StopIteration as done:
        status, body, _, _ = done.value
        assert status == 200
        return bytes(body)
    coro.close()
    raise AssertionError(f"GET {path} waited")


_writes = st.lists(st.tuples(_pids, _entries), min_size=1, max_size=8)


# Generating nested JSON is most of this property's cost (~40 ms an example): the inner loop
# runs 15 examples, the slow tests 200.
@pytest.mark.slow  # ~0.3 s or more: the inner loop runs without it, CI with it
@settings(max_examples=15, deadline=None)
@given(writes=_writes)
def test_history_entries_read_back_byte_identical_to_what_was_written(
    writes: list[tuple[str, dict[str, Any]]],
) -> None:
    """Whatever entries are written (and rewritten), GET /history and /history/{id} answer the
    bytes encoding the written entries gives, newest write last."""
    _check_history_reads_back(writes)


@pytest.mark.slow
@settings(max_examples=200, deadline=None)
@given(writes=_writes)
def test_history_entries_read_back_byte_identical_over_many_examples(
    writes: list[tuple[str, dict[str, Any]]],
) -> None:
    """The same property as above, over many more generated histories."""
    _check_history_reads_back(writes)


def _check_history_reads_back(writes: list[tuple[str, dict[str, Any]]]) -> None:
    sim = ComfyUISim()
    model: dict[str, Any] = {}
    for pid, entry in writes:
        sim._remember(pid, entry)
        model.pop(pid, None)
        model[pid] = entry
    for pid, entry in model.items():
        body = _get(sim, f"/history/{pid}")
        assert body == msgspec.json.encode({pid: entry})
        assert msgspec.json.decode(body) == {pid: entry}
    assert _get(sim, "/history") == msgspec.json.encode(model)
    newest = dict(list(model.items())[-2:])
    assert _get(sim, "/history", {"max_items": "2"}) == msgspec.json.encode(newest)
    assert _get(sim, "/history/missing") == b"{}"


def test_history_keeps_the_newest_max_history_entries() -> None:
    """Beyond MAX_HISTORY entries the oldest is forgotten, one per new entry."""
    sim = ComfyUISim()
    for i in range(MAX_HISTORY + 2):
        sim._remember(f"p{i}", {"n": i})
    assert len(sim._history) == MAX_HISTORY
    assert _get(sim, "/history/p1") == b"{}"
    assert msgspec.json.decode(_get(sim, "/history/p2")) == {"p2": {"n": 2}}
    last = f"p{MAX_HISTORY + 1}"
    assert msgspec.json.decode(_get(sim, f"/history/{last}")) == {last: {"n": MAX_HISTORY + 1}}


_GRAPH = {
    "1": {
        "class_type": "EmptyImage",
        "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0},
        "_meta": {"title": "EmptyImage"},
    },
    "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
    "3": {
        "class_type": "SaveImage",
        "inputs": {"images": ["2", 0], "filename_prefix": "gc/invert"},
    },
}


async def _finish_prompt(sim: ComfyUISim, http: httpx.AsyncClient, ws: Any, i: int) -> None:
    """POST prompt ``p<i>``, wait for its ``executing null`` and read its history."""
    graph = msgspec.json.decode(msgspec.json.encode(_GRAPH))
    graph["1"]["inputs"]["color"] = i
    pid = f"p{i}"
    body = {"prompt": graph, "client_id": "gc", "prompt_id": pid}
    assert (await http.post("/prompt", json=body)).status_code == 200
    end = msgspec.json.encode({"type": "executing", "data": {"node": None, "prompt_id": pid}})
    while await ws.get_message() != end.decode():
        pass
    assert pid in (await http.get(f"/history/{pid}")).json()


async def _tracked_after_prompts(counts: list[int]) -> list[int]:
    """The GC-tracked objects of the process after each of ``counts`` (cumulative) prompts
    has finished on one simulator, its client still connected."""
    sim = ComfyUISim()
    tracked: list[int] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(sim.run)
        transport = httpx.ASGITransport(app=sim.asgi)
        async with httpx.AsyncClient(transport=transport, base_url="http://sim.invalid") as http:
            ws = await sim.connect_ws_in_memory(nursery, "/ws?clientId=gc")
            done = 0
            # One deadline for the whole run: a scope per prompt would stay in trio's
            # deadline heap until it is pruned, and be counted here.
            with trio.fail_after(600):
                for target in counts:
                    for i in range(done, target):
                        await _finish_prompt(sim, http, ws, i)
                    done = target
                    gc.collect()
                    tracked.append(len(gc.get_objects()))
            await ws.aclose()
        nursery.cancel_scope.cancel()
    return tracked


@pytest.mark.slow
def test_a_finished_prompt_leaves_almost_no_gc_tracked_objects() -> None:
    """100 more finished prompts leave under one GC-tracked object each (a dict entry: ~22);
    the first 150 warm the caches (urlsplit's keeps 128 results)."""
    clock = trio.testing.MockClock(autojump_threshold=0)
    first, second = trio.run(_tracked_after_prompts, [150, 250], clock=clock)
    assert (second - first) / 100 < 1.0
