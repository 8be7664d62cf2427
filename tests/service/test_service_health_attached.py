"""serve --comfyui-url: while that ComfyUI does not answer, the health probe is 200
``degraded`` naming it and ``/api/conjure/mode`` says ``comfyui_answers: false`` (QA found
both saying nothing while jobs waited on a ComfyUI gone away); both recover with it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
from extras_support import open_extras_service, wait_for

from conjure_actors.sim.cloud import STANDALONE_HOST


async def test_health_and_mode_say_when_the_attached_comfyui_does_not_answer(
    tmp_path: Path, autojump_clock: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Up: ``ok`` and ``comfyui_answers`` true; down: ``degraded`` (no URL in it) and false;
    up again: ``ok``."""
    with trio.fail_after(600):
        async with open_extras_service(tmp_path, attached=True) as run:
            up = (await run.client.get("/api/v2/health")).json()
            up_mode = (await run.client.get("/api/conjure/mode")).json()
            cloud = run.cloud
            transport_for = cloud._transport_for
            with monkeypatch.context() as down:
                down.setattr(
                    cloud,
                    "_transport_for",
                    lambda host: None if host == STANDALONE_HOST else transport_for(host),
                )
                await wait_for(run.service, lambda s: not s.machines["comfyui"].healthy)
                degraded = (await run.client.get("/api/v2/health")).json()
                down_mode = (await run.client.get("/api/conjure/mode")).json()
            await wait_for(run.service, lambda s: s.machines["comfyui"].healthy)
            again = (await run.client.get("/api/v2/health")).json()
    assert up["status"] == "ok"
    assert up_mode["comfyui_answers"] is True
    assert degraded["status"] == "degraded"
    assert "the ComfyUI of --comfyui-url does not answer" in degraded["reason"]
    assert STANDALONE_HOST not in degraded["reason"]
    assert down_mode["comfyui_answers"] is False
    assert again["status"] == "ok"
