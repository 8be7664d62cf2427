"""``POST /api/conjure/jobs`` names only the bundled workflows it can run (QA10 F8): it
requires ``image`` and ``prompt``, so a workflow without a text-encode node (or a LoadImage)
is never offered, and one asked for is refused naming the form's field, not the CLI's flag
("--prompt")."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from extras_support import open_extras_service, png

from conjure_actors.actors.example import DEFAULT_WORKFLOW, bundled_workflows
from conjure_actors.service.extras import form_workflows

PROMPT = "a carved wooden fox"
IMAGE = {"image": ("sketch.png", png(), "image/png")}
UNRUNNABLE = sorted({n.removesuffix(".json") for n in bundled_workflows()} - set(form_workflows()))


def test_the_form_runs_the_default_workflow_and_not_those_without_a_prompt_node() -> None:
    assert DEFAULT_WORKFLOW.removesuffix(".json") in form_workflows()
    assert "invert_save" in UNRUNNABLE


async def test_an_unknown_workflow_lists_only_those_the_form_runs(
    tmp_path: Path, autojump_clock: Any
) -> None:
    async with open_extras_service(tmp_path) as run:
        answer = await run.client.post(
            "/api/conjure/jobs", files=IMAGE, data={"prompt": PROMPT, "workflow": "nope"}
        )
    assert answer.status_code == 400, answer.text
    message = answer.json()["error"]["message"]
    listed = message.split("use one of ", 1)[1].split(" (", 1)[0].split(", ")
    assert listed == list(form_workflows())


@pytest.mark.parametrize("name", UNRUNNABLE)
async def test_a_workflow_without_a_prompt_node_is_refused_in_the_forms_words(
    tmp_path: Path, autojump_clock: Any, name: str
) -> None:
    async with open_extras_service(tmp_path) as run:
        answer = await run.client.post(
            "/api/conjure/jobs", files=IMAGE, data={"prompt": PROMPT, "workflow": name}
        )
        assert not run.service.state.jobs
    assert answer.status_code == 422, answer.text
    error = answer.json()["error"]
    assert error["code"] == "invalid_workflow"
    assert "--" not in error["message"]
    assert error["message"].startswith(("'prompt': the workflow", "'image': the workflow"))
    assert f"use one of {', '.join(form_workflows())}" in error["message"]
    assert any(
        p.startswith(f"'prompt': the workflow {name!r} has no text-encode node to take it")
        for p in error["details"]["problems"]
    )
