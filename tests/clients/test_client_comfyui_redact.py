"""The secret-redacting log filter: it scrubs the URLs of live clients and keeps nothing else."""

from __future__ import annotations

import gc
import logging

import httpx
import pytest

from conjure_actors.clients import ComfyUIClient
from conjure_actors.clients.comfyui import _REDACT_FILTER


def make_client(http: httpx.AsyncClient, n: int) -> ComfyUIClient:
    return ComfyUIClient(f"https://m{n}.secret.invalid:8443", http=http, redact=f"server {n}")


@pytest.mark.slow  # ~0.2 s or more: the inner loop runs without it, CI with it
async def test_the_filter_does_not_grow_with_clients_that_are_gone() -> None:
    """100 clients made and dropped one after another: the filter holds no more secrets."""
    gc.collect()
    baseline = len(_REDACT_FILTER)
    async with httpx.AsyncClient() as http:
        for n in range(100):
            make_client(http, n)
        gc.collect()
        assert len(_REDACT_FILTER) == baseline
        alive = make_client(http, 100)
        assert len(_REDACT_FILTER) > baseline
        del alive
        gc.collect()
        assert len(_REDACT_FILTER) == baseline


async def test_live_clients_urls_are_scrubbed_longest_first(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """httpx's log lines name live servers by their redacted names, even when one host
    is a prefix of another's."""
    caplog.set_level(logging.INFO, logger="httpx")
    async with httpx.AsyncClient() as http:
        short = ComfyUIClient("https://m1.secret.invalid", http=http, redact="server a")
        longer = ComfyUIClient("https://m1.secret.invalid.eu", http=http, redact="server b")
        logging.getLogger("httpx").info(
            "HTTP Request: GET %s/view and %s/queue",
            "https://m1.secret.invalid.eu",
            "https://m1.secret.invalid",
        )
        assert short.name == "server a"
        assert longer.name == "server b"
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["HTTP Request: GET server b/view and server a/queue"]
