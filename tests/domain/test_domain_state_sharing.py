"""Memory per retained job: the fold shares repeated values and usually empty containers,
drops the health records of finished job actors, and a decoded state shares the same way."""

from __future__ import annotations

import gc
import tracemalloc
from typing import Any

import msgspec
import pytest
from domain_strategies import any_event
from hypothesis import given
from hypothesis import strategies as st

from conjure_actors.domain import events as ev
from conjure_actors.domain import service_events as se
from conjure_actors.domain.sharing import EMPTY_DICT, EMPTY_LIST, SHARED, SHARED_MAX, share
from conjure_actors.domain.state import Job, State, apply_all, initial_state, state_to_builtins
from conjure_actors.lifecycle import ActorCrashed, ActorStarted, ActorStopped

WF = "e" * 64
CLIENT = "c" * 32


def job_id(i: int) -> str:
    return f"00000000-0000-4000-8000-{i:012d}"


def finished_job(i: int, t: float = 1_800_000_000.0) -> list[Any]:
    """One API job's events as ``serve`` logs them, from acceptance to its output asset."""
    j, p = job_id(i), f"{i:032x}"
    path = f"/srv/out/{j}/out/invert_00001_.png"
    return [
        se.ApiJobAccepted(job_id=j, expires_at=t + 600, at=t),
        ev.JobSubmitted(job_id=j, workflow_sha256=WF, at=t),
        ev.JobQueued(job_id=j, at=t),
        ActorStarted(actor=f"root/jobs/{j}", incarnation=1, at=t),
        ev.MachineLeased(server_id="comfyui", job_id=j, at=t + 1),
        ev.JobStarted(job_id=j, attempt=1, server_id="comfyui", at=t + 1),
        ev.PromptSubmitting(
            job_id=j, attempt=1, prompt_id=p, client_id=CLIENT, server_id="comfyui", at=t + 1
        ),
        ev.PromptSubmitted(job_id=j, prompt_id=p, number=i, at=t + 1),
        ev.ExecutionStarted(job_id=j, prompt_id=p, at=t + 2),
        ev.NodeCached(job_id=j, prompt_id=p, nodes=["1", "2"], at=t + 2),
        ev.NodeExecuted(job_id=j, prompt_id=p, node_id="3", at=t + 3),
        ev.ExecutionSucceeded(job_id=j, prompt_id=p, at=t + 3),
        ev.OutputSaved(
            job_id=j,
            node_id="3",
            filename="invert_00001_.png",
            path=path,
            size=100,
            sha256="3" * 64,
            kind="output",
            at=t + 4,
        ),
        ev.JobSucceeded(job_id=j, at=t + 4),
        ev.MachineReleased(server_id="comfyui", job_id=j, at=t + 4),
        ActorStopped(actor=f"root/jobs/{j}", incarnation=1, reason="normal", at=t + 4),
        se.AssetRecorded(
            asset_id=f"a{i}",
            hash="blake3:" + "4" * 64,
            size=100,
            content_type="image/png",
            file_path="invert_00001_.png",
            tags=("output",),
            job_id=j,
            node_id="3",
            kind="output",
            source_path=path,
            expires_at=t + 600,
            at=t + 5,
        ),
    ]


def decoded(events: list[Any]) -> list[Any]:
    """The events as a log gives them back: every string a new object."""
    return msgspec.msgpack.decode(msgspec.msgpack.encode(events), type=list[ev.Event])


def serve_log(jobs: int) -> list[Any]:
    head = [
        ev.WorkflowRegistered(sha256=WF, name="api", graph_json="{}", at=1.0),
        ev.MachineAttached(server_id="comfyui", kind="comfyui", max_jobs=8, at=1.0),
    ]
    return decoded(head + [e for i in range(jobs) for e in finished_job(i)])


def test_jobs_share_their_repeated_values() -> None:
    """Two jobs on one workflow and machine hold one object per value they have in common."""
    state = apply_all(initial_state(), serve_log(2))
    a, b = (state.jobs[job_id(i)] for i in range(2))
    assert a.workflow_sha256 is b.workflow_sha256 is state.workflows[WF].sha256
    assert a.server_id is b.server_id is state.machines["comfyui"].server_id
    assert a.client_id is b.client_id
    assert a.outputs[0].sha256 is b.outputs[0].sha256
    assert a.outputs[0].kind is b.outputs[0].kind
    assert next(iter(a.nodes)) is next(iter(b.nodes))
    assets = state.service.assets
    assert assets["a0"].hash is assets["a1"].hash
    assert assets["a0"].content_type is assets["a1"].content_type


def test_a_job_id_and_output_path_are_one_object_across_records() -> None:
    """The job's id and output path are shared by its Job, its API record and its asset."""
    state = apply_all(initial_state(), serve_log(1))
    job = state.jobs[job_id(0)]
    asset = state.service.assets["a0"]
    assert state.service.api_jobs[job_id(0)].job_id is job.job_id
    assert asset.job_id is job.job_id
    assert asset.source_path is job.outputs[0].path
    assert asset.file_path is job.outputs[0].filename


def test_usually_empty_containers_are_the_shared_empty_ones() -> None:
    """A job with no bindings, inputs, children or labels holds the shared empty ones."""
    state = apply_all(initial_state(), serve_log(1))
    job = state.jobs[job_id(0)]
    assert job.bindings is EMPTY_DICT
    assert job.extra_inputs is EMPTY_DICT
    assert job.children is EMPTY_LIST
    assert job.inputs is EMPTY_LIST
    assert state.service.api_jobs[job_id(0)].labels is EMPTY_DICT
    assert state.service.api_jobs[job_id(0)].input_assets is EMPTY_DICT


def test_shared_empty_containers_refuse_writes() -> None:
    """Writing to a shared empty container raises instead of changing every job."""
    with pytest.raises(TypeError):
        EMPTY_LIST.append("x")
    with pytest.raises(TypeError):
        EMPTY_DICT["x"] = "y"
    assert EMPTY_LIST == []
    assert EMPTY_DICT == {}


def test_shared_empties_encode_like_plain_containers() -> None:
    """A state holding the shared empties encodes to the bytes of one with plain ones."""
    state = apply_all(initial_state(), serve_log(1))
    plain = msgspec.convert(state_to_builtins(state), State)
    job = plain.jobs[job_id(0)]
    job.bindings, job.children = {}, []  # what decoding used to give
    assert state == plain
    assert msgspec.json.encode(state) == msgspec.json.encode(plain)
    assert msgspec.msgpack.encode(state) == msgspec.msgpack.encode(plain)


def test_nodes_inputs_and_children_are_added_to_a_new_container() -> None:
    """The fold replaces a shared empty container before adding to it."""
    state = apply_all(initial_state(), serve_log(1))
    apply_all(
        state,
        [
            ev.JobSubmitted(job_id="child", workflow_sha256=WF, parent_id=job_id(0), at=9.0),
            ev.InputUploaded(
                job_id="child", node_id="1", name="x.png", sha256="5" * 64, size=1, at=9.0
            ),
        ],
    )
    assert state.jobs[job_id(0)].children == ["child"]
    assert state.jobs["child"].inputs[0].name == "x.png"
    assert EMPTY_LIST == []


def test_a_job_naming_itself_as_parent_is_its_own_child_as_before() -> None:
    """Sharing the parent's id keeps the old fold's answer for a job that names itself."""
    state = apply_all(
        initial_state(),
        [
            ev.WorkflowRegistered(sha256=WF, name="api", graph_json="{}", at=1.0),
            ev.JobSubmitted(job_id="j", workflow_sha256=WF, parent_id="j", at=2.0),
        ],
    )
    assert state.jobs["j"].children == ["j"]
    assert state.anomaly_count == 0


def test_finished_job_actor_leaves_no_health_record() -> None:
    """A job's actor that stopped cleanly after its job finished has no health record."""
    state = apply_all(initial_state(), serve_log(3))
    assert state.actors == {}


def test_crashed_job_actor_keeps_its_health_record() -> None:
    """A job's actor that crashed keeps its record (and its last error) once stopped."""
    events = finished_job(0)
    name = f"root/jobs/{job_id(0)}"
    crash = ActorCrashed(actor=name, incarnation=1, error_type="E", message="boom", at=1.0)
    events.insert(4, crash)
    state = apply_all(apply_all(initial_state(), serve_log(0)), events)
    assert state.actors[name].status == "stopped"
    assert state.actors[name].last_error == "E: boom"


def test_actor_of_an_unfinished_job_keeps_its_health_record() -> None:
    """A job's actor stopped while its job is not finished (a shutdown) keeps its record."""
    j = job_id(0)
    events = [
        *serve_log(0),
        ev.JobSubmitted(job_id=j, workflow_sha256=WF, at=1.0),
        ActorStarted(actor=f"root/jobs/{j}", incarnation=1, at=1.0),
        ev.JobInterrupted(job_id=j, at=2.0),
        ActorStopped(actor=f"root/jobs/{j}", incarnation=1, reason="shutdown", at=2.0),
    ]
    state = apply_all(initial_state(), events)
    assert state.actors[f"root/jobs/{j}"].status == "stopped"


def test_decoded_state_shares_as_the_fold_does() -> None:
    """A state decoded from a snapshot shares values and empties like the folded one."""
    state = apply_all(initial_state(), serve_log(2))
    back = msgspec.msgpack.decode(msgspec.msgpack.encode(state), type=State)
    assert back == state
    a, b = (back.jobs[job_id(i)] for i in range(2))
    assert a.workflow_sha256 is b.workflow_sha256
    assert a.outputs[0].sha256 is b.outputs[0].sha256
    assert a.bindings is EMPTY_DICT
    assert a.children is EMPTY_LIST
    assert back.service.api_jobs[job_id(0)].job_id is a.job_id
    assert back.service.assets["a0"].source_path is a.outputs[0].path


def test_job_records_share_values_as_they_are_decoded() -> None:
    """Two job records decoded on their own already share their values (no state around)."""
    state = apply_all(initial_state(), serve_log(2))
    data = msgspec.msgpack.encode([state.jobs[job_id(0)], state.jobs[job_id(1)]])
    a, b = msgspec.msgpack.decode(data, type=list[Job])
    assert a.workflow_sha256 is b.workflow_sha256
    assert a.client_id is b.client_id
    assert a.outputs[0].filename is b.outputs[0].filename
    assert a.status is b.status


@pytest.mark.slow
@given(st.lists(any_event(), max_size=40))
def test_decoding_a_state_changes_no_value(events: list[Any]) -> None:
    """Whatever the log, a state decoded from its encoding is equal and encodes the same."""
    state = apply_all(initial_state(), events)
    data = msgspec.msgpack.encode(state)
    back = msgspec.msgpack.decode(data, type=State)
    assert back == state
    assert msgspec.msgpack.encode(back) == data


def test_share_table_is_bounded() -> None:
    """The share table never holds more than SHARED_MAX values, and keeps sharing after."""
    table: dict[str, str] = {}
    for i in range(SHARED_MAX + 10):
        share(table, f"v{i}")
    assert len(table) <= SHARED_MAX
    first = share(table, "again-" + "x")
    assert share(table, "again-" + "x") is first


def _bytes_per_job(build: Any, jobs: int) -> float:
    # The state's own memory, whatever ran before in this process: a first build also
    # interns the log's bounded vocabulary and fills msgspec's caches once (2,328 bytes per
    # job measured first, 2,246 after), so one is built and dropped before; then the share
    # table starts empty, as a process's does (one left near SHARED_MAX shares less).
    build()
    SHARED.clear()
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        state = build()
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(state.jobs) == jobs
    return held / jobs


@pytest.mark.slow  # ~0.3 s or more: the inner loop runs without it, CI with it
def test_memory_per_finished_job_stays_small() -> None:
    """A finished API job costs the folded state under 2,300 bytes (1,910; 3,670 before)."""
    jobs = 200
    encoded = msgspec.msgpack.encode(serve_log(jobs))

    def build() -> State:
        return apply_all(initial_state(), msgspec.msgpack.decode(encoded, type=list[ev.Event]))

    assert _bytes_per_job(build, jobs) < 2300


@pytest.mark.slow  # ~0.2 s or more: the inner loop runs without it, CI with it
def test_memory_per_finished_job_decoded_from_a_snapshot_stays_small() -> None:
    """So does one decoded from a snapshot of that state (2,140 bytes now; 4,660 before)."""
    jobs = 200
    snapshot = msgspec.msgpack.encode(apply_all(initial_state(), serve_log(jobs)))
    assert _bytes_per_job(lambda: msgspec.msgpack.decode(snapshot, type=State), jobs) < 2300
