"""The start-up probe's line (``run`` and ``status --comfyui-url`` say it): what failed, and
what to check, true of who chose the URL."""

from __future__ import annotations

import httpx
import pytest

from conjure_actors.actors.conjure import probe_comfyui
from conjure_actors.clients.comfyui import ComfyUIClient
from conjure_actors.errors import UsageError


async def _probe(name: str, url: str, answer: httpx.Response) -> str:
    transport = httpx.MockTransport(lambda request: answer)
    async with httpx.AsyncClient(transport=transport) as http:
        client = ComfyUIClient(url, http=http, redact=f"server {name}")
        with pytest.raises(UsageError) as caught:
            await probe_comfyui(client, name, url)
    return str(caught.value)


async def test_a_page_that_is_not_comfyuis_is_an_answer_from_a_wrong_url() -> None:
    """A 200 that is not a JSON object (a proxy's sign-in page): it answered, so the URL is
    the suspect (it said "does not answer ... : is it running?")."""
    said = await _probe("comfyui", "http://h:8188/comfy", httpx.Response(200, text="<html>"))
    assert said == (
        "the ComfyUI at http://h:8188 answered GET /comfy/system_stats with an answer that is"
        " not a ComfyUI's: is the URL its base URL (with the path a reverse proxy serves it"
        " under, if any)?"
    )


async def test_a_dev_machine_answering_an_http_error_is_not_blamed_on_its_url() -> None:
    """A dev machine's URL is RunComfy's, not the user's: the line asks whether it is still
    up, and where to see it (it asked whether the URL was its base URL)."""
    said = await _probe("d1", "https://d1-comfyui.example", httpx.Response(404))
    assert said == (
        "dev machine d1 answered GET /system_stats with HTTP 404: is it still up?"
        " (`python -m conjure_actors machine status` says)"
    )
