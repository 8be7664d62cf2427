"""A job behind RunComfy's proxy that answers POST /prompt with a 503 after ComfyUI queued
the prompt (Envoy's "upstream connect error or disconnect/reset before headers"): the job
looks its prompt up by id and follows it, as on a 502/504; it never sends it again (P9)."""

from __future__ import annotations

from pathlib import Path

import trio.testing
from test_actor_job_gateway import _events, _run_behind_a_gateway

from conjure_actors.sim.comfyui import ComfyFaults


async def test_a_prompt_answered_503_after_queueing_runs_once(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """Before, the client resent POST /prompt on the 503 (each resend queued it again: the
    prompt ran once per attempt, billed on the paid machine); now each job finds its prompt
    by id and succeeds on its first attempt, every prompt run exactly once."""
    faults = ComfyFaults(
        gateway_error_after_accept_rate=1.0,
        gateway_error_paths=frozenset({"/prompt"}),
        gateway_error_statuses=(503,),
    )
    log, state, jobs, sims = await _run_behind_a_gateway(tmp_path, faults, 2)
    for job in jobs:
        assert state.jobs[job].status == "succeeded", state.jobs[job].error
        assert state.jobs[job].attempt == 1
    assert _events(log, "JobRetrying") == []
    submitted = [e.prompt_id for e in _events(log, "PromptSubmitting")]
    assert len(submitted) == 2
    assert sum(sim.gateway_errors for sim in sims) == 2
    runs = [pid for sim in sims for pid in sim.prompts_run]
    assert sorted(runs) == sorted(submitted)  # each ran once, nothing else ran
