"""v2_jobs' views of a job, from the state alone."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from conjure_actors.domain import state as st
from conjure_actors.service.v2_jobs import progress_of

CLASSES = {"1": "LoadImage", "2": "ImageBlur", "3": "ImageBlur", "4": "SaveImage"}


def _service() -> Any:
    return SimpleNamespace(node_classes=lambda sha: CLASSES)


def _running(nodes: dict[str, st.NodeState], current: str) -> st.Job:
    job = st.Job(job_id="job-1", workflow_sha256="w", status=st.RUNNING)
    job.prompt_id = "p-1"
    job.nodes = nodes
    job.current_node = current
    return job


def test_a_node_that_started_and_is_no_longer_current_counts_as_done() -> None:
    """ComfyUI says "executed" only of nodes with UI output: a chain of blurs counted 0
    nodes done until the SaveImage ran (QA: 59 progress frames at 0 on a 252-node chain).
    One node runs at a time, so a started node that is not the current one has finished."""
    nodes = {
        "1": st.NodeState(st.NODE_CACHED),
        "2": st.NodeState(st.NODE_RUNNING),
        "3": st.NodeState(st.NODE_RUNNING, value=5, max=10),
    }
    progress = progress_of(_service(), _running(nodes, current="3"))
    assert progress is not None
    assert (progress["nodes_done"], progress["nodes_total"]) == (2, 4)
    assert progress["value"] == (2 + 0.5) / 4
