"""``run`` in JSON mode (``--json``, or stdout not a terminal) as a program reads it: a line
per meaningful event, node progress at most twice a second per job, a ``run.error`` record
per failed job and one final ``run.summary`` object (docs/run-json.md)."""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as hyp

from conjure_actors.commands.run import PROGRESS_INTERVAL, JsonSink
from conjure_actors.domain import events as ev
from conjure_actors.domain import state as st

WORKFLOWS = Path(__file__).parents[2] / "conjure_actors" / "workflows"


def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNCOMFY_", "CONJURE_"))}
    return subprocess.run(
        [sys.executable, "-m", "conjure_actors", "run", "--json", "--log", "r.log", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _records(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines()]


@given(
    ticks=hyp.lists(
        hyp.tuples(hyp.sampled_from(["a", "b"]), hyp.floats(0, 0.2)), min_size=1, max_size=80
    )
)
def test_node_progress_is_at_most_twice_a_second_per_job(ticks: list[tuple[str, float]]) -> None:
    """Whatever the progress frames, the lines kept for one job are PROGRESS_INTERVAL apart,
    and each job's first progress line is kept."""
    stream = io.StringIO()
    sink = JsonSink(stream)
    now = 0.0
    for seq, (job_id, gap) in enumerate(ticks):
        now += gap
        event = ev.NodeProgress(job_id=job_id, prompt_id="p", node_id="20", value=1, max=2, at=now)
        sink.record(seq, now, event, None)
    kept = [json.loads(line) for line in stream.getvalue().splitlines()]
    for job_id in {j for j, _ in ticks}:
        times = [line["ts"] for line in kept if line["job_id"] == job_id]
        assert times
        assert all(b - a >= PROGRESS_INTERVAL - 1e-6 for a, b in itertools.pairwise(times))


def test_a_failed_job_gets_a_run_error_record() -> None:
    """After job.failed, a run.error record names the job, its error type and the reason."""
    state = st.initial_state()
    for e in (
        ev.WorkflowRegistered(sha256="w", name="w", graph_json="{}", at=0.0),
        ev.JobSubmitted(job_id="j", workflow_sha256="w", at=0.0),
        failed := ev.JobFailed(
            job_id="j", error_type="ExecutionFailed", message="node 3 (X) failed: E: m", at=1.0
        ),
    ):
        st.apply(state, e)
    stream = io.StringIO()
    JsonSink(stream).record(3, 1.0, failed, state)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["type"] for line in lines] == ["job.failed", "run.error"]
    assert lines[1]["job_id"] == "j"
    assert lines[1]["error_type"] == "ExecutionFailed"
    assert lines[1]["message"] == "node 3 (X) failed: E: m"


def test_a_budget_refusal_is_one_line_on_the_terminal() -> None:
    """A ``BudgetLimitReached`` is its JSON line on stdout and one line on the terminal
    (stderr) saying what was refused and what to do; other events print nothing there."""
    stream, terminal = io.StringIO(), io.StringIO()
    sink = JsonSink(stream, notices=terminal)
    told = ev.BudgetLimitReached(
        what="renewal", spent_micros=37_425, committed_micros=40_197, limit_micros=90_000, at=1.0
    )
    sink.record(1, 1.0, ev.BudgetSet(limit_micros=90_000, at=0.0), None)
    sink.record(2, 1.0, told, None)
    assert [json.loads(line)["type"] for line in stream.getvalue().splitlines()] == [
        "cost.budget_set",
        "cost.budget_limit_reached",
    ]
    (line,) = terminal.getvalue().splitlines()
    assert line.startswith("budget: lease renewal refused: ")
    assert "$0.09" in line
    assert "raise --budget" in line


@pytest.mark.slow
def test_json_run_ends_with_a_summary_object_a_program_can_use(tmp_path: Path) -> None:
    """The embedded run in JSON mode: no runtime chatter, and the last line is run.summary
    with the jobs by status, every output's path and sha256 (matching the file), the cost,
    the machines and the log path."""
    proc = _cli(tmp_path)
    assert proc.returncode == 0, proc.stderr
    records = _records(proc.stdout)
    assert not any(r["type"].startswith("actor.") for r in records)
    summary = records[-1]
    assert summary["type"] == "run.summary"
    assert summary["ok"] is True
    assert summary["jobs"]["total"] == summary["jobs"]["succeeded"] == 1
    assert summary["log"] == "r.log"
    assert summary["cost"]["micros"] > 0
    assert len(summary["machines"]) == 1
    assert len(summary["outputs"]) == 2
    for output in summary["outputs"]:
        data = (tmp_path / output["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == output["sha256"]
    assert [r for r in records if r["type"] == "run.summary"] == [summary]


@pytest.mark.slow
def test_a_rejected_job_says_why_in_json_and_in_the_summary(tmp_path: Path) -> None:
    """A prompt ComfyUI rejects: exit 1, a run.error record and the summary's errors give the
    node, its class and ComfyUI's details; the human summary on stderr says the same."""
    proc = _cli(tmp_path, str(WORKFLOWS / "load_broken_file.json"))
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    records = _records(proc.stdout)
    errors = [r for r in records if r["type"] == "run.error"]
    assert len(errors) == 1
    assert errors[0]["error_type"] == "PromptRejected"
    assert (errors[0]["node_id"], errors[0]["node_type"]) == ("1", "LoadImage")
    assert "node 1 (LoadImage)" in errors[0]["message"]
    assert "Invalid image file: heldout_broken.png" in errors[0]["message"]
    summary = records[-1]
    assert summary["ok"] is False
    assert summary["jobs"]["failed"] == 1
    assert summary["errors"][0]["message"] == errors[0]["message"]
    line = next(x for x in proc.stderr.splitlines() if " failed: " in x)
    assert "node 1 (LoadImage) image:" in line
    assert "Invalid image file: heldout_broken.png" in line


def test_docs_name_every_field_of_the_records() -> None:
    """docs/run-json.md documents every key of run.summary, run.error and their parts."""
    from conjure_actors.actors.view import summary_record

    state = st.initial_state()
    for e in (
        ev.WorkflowRegistered(sha256="w", name="w", graph_json="{}", at=0.0),
        ev.JobSubmitted(job_id="j", workflow_sha256="w", at=0.0),
        ev.JobFailed(job_id="j", error_type="E", message="m", at=1.0),
        ev.OutputSaved(
            job_id="j", node_id="1", filename="f", path="p", size=1, sha256="s", kind="k", at=1
        ),
        ev.MachineLaunchRequested(
            request_key="k",
            server_type="medium",
            workflow_version="v",
            estimated_duration=60,
            at=1.0,
        ),
        ev.MachineLaunched(request_key="k", server_id="s1", at=2.0),
    ):
        st.apply(state, e)
    record = summary_record(state, None, seconds=1, out_dir="o", log_path="l", mode="simulated")
    keys = set(record) | set(record["jobs"]) | set(record["cost"])
    keys |= set(record["errors"][0]) | set(record["outputs"][0]) | set(record["machines"][0])
    doc = (Path(__file__).parents[2] / "docs" / "run-json.md").read_text()
    missing = sorted(k for k in keys if f"`{k}`" not in doc)
    assert missing == []
