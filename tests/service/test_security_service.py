"""The security layer wired into ``serve``'s app: each refusal the right status and code, and
nothing stored; secrets in no response, no log line and not in the event log."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from extras_support import open_extras_service, png, serve_args

from conjure_actors.commands.serve import build_app, open_serve
from conjure_actors.service.app import Settings

TOKEN = "tok-3f9c2a7d51e84b6c"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _job_files() -> dict[str, Any]:
    return {"image": ("sketch.png", png(), "image/png")}


async def test_wrong_token_is_401_and_no_job(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """A wrong token on a submission: 401 ``unauthorized``, no job logged."""
    async with open_extras_service(tmp_path, token=TOKEN) as run:
        r = await run.client.post(
            "/api/conjure/jobs",
            files=_job_files(),
            data={"prompt": "x"},
            headers={"Authorization": "Bearer wrong"},
        )
        assert (r.status_code, r.json()["error"]["code"]) == (401, "unauthorized")
        r2 = await run.client.post(
            "/api/v2/jobs", json={"workflow": {}}, headers={"Authorization": "Bearer wrong"}
        )
        assert r2.status_code == 401
        assert run.service.state.jobs == {}


async def test_health_is_open_with_a_token(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Probes need no token; everything else does."""
    async with open_extras_service(tmp_path, token=TOKEN) as run:
        assert (await run.client.get("/api/v2/health")).status_code == 200
        assert (await run.client.get("/metrics")).status_code == 401
        assert (await run.client.get("/metrics", headers=AUTH)).status_code == 200


async def test_oversized_json_is_413_and_no_job(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """A JSON body over --max-body-mb: 413 ``payload_too_large``, nothing stored."""
    async with open_extras_service(tmp_path, max_body_mb=0.001) as run:
        r = await run.client.post("/api/v2/jobs", content=b"{" + b" " * 5000 + b"}")
        assert (r.status_code, r.json()["error"]["code"]) == (413, "payload_too_large")
        assert run.service.state.jobs == {}


async def test_oversized_upload_is_413_and_nothing_stored(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """A multipart body over the upload limit: 413, no job and no asset."""
    settings = Settings(max_upload_bytes=1000)
    async with open_extras_service(tmp_path, settings=settings) as run:
        big = {"image": ("big.png", b"x" * 200_000, "image/png")}
        r = await run.client.post("/api/conjure/jobs", files=big, data={"prompt": "x"})
        assert (r.status_code, r.json()["error"]["code"]) == (413, "payload_too_large")
        r2 = await run.client.post("/api/v2/assets", files={"file": big["image"]})
        assert r2.status_code == 413
        assert run.service.state.jobs == {}
        assert run.service.state.service.assets == {}


async def test_foreign_origin_is_403_and_no_job(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """A browser request from another site: 403 ``forbidden``, nothing stored."""
    async with open_extras_service(tmp_path) as run:
        r = await run.client.post(
            "/api/conjure/jobs",
            files=_job_files(),
            data={"prompt": "x"},
            headers={"Origin": "https://evil.example"},
        )
        assert (r.status_code, r.json()["error"]["code"]) == (403, "forbidden")
        assert run.service.state.jobs == {}


async def test_listed_origin_is_served_with_cors(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """``--cors-origin`` lets that page in, with its own origin echoed (never ``*``)."""
    async with open_extras_service(tmp_path, cors_origin=["https://app.example"]) as run:
        r = await run.client.get("/api/conjure/mode", headers={"Origin": "https://app.example"})
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == "https://app.example"


async def test_too_many_streams_is_429(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Past the cap on open event streams: 429 ``too_many_streams`` with Retry-After."""
    async with open_extras_service(tmp_path, settings=Settings(max_streams=0)) as run:
        r = await run.client.post("/api/conjure/jobs", files=_job_files(), data={"prompt": "x"})
        events = r.json()["urls"]["events"]
        refused = await run.client.get(events)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "too_many_streams"
    assert "retry-after" in refused.headers


async def test_queue_full_is_429_with_retry_after_and_no_job(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """With the queue at its bound: 429 ``queue_full`` with Retry-After; the job is not logged."""
    async with open_extras_service(tmp_path, settings=Settings(max_queue=1)) as run:
        first = await run.client.post("/api/conjure/jobs", files=_job_files(), data={"prompt": "x"})
        assert first.status_code == 201
        second = await run.client.post(
            "/api/conjure/jobs", files=_job_files(), data={"prompt": "y"}
        )
        assert second.status_code == 429
        assert second.json()["error"]["code"] == "queue_full"
        assert int(second.headers["retry-after"]) > 0
        assert list(run.service.state.jobs) == [first.json()["id"]]


@pytest.mark.slow
async def test_no_secret_in_any_response_log_line_or_event(
    tmp_path: Path, sim_config: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A real run on loopback: the token, the RunComfy credentials and the machines' URLs
    appear in no response body or header, no log line and nowhere in the event log."""
    caplog.set_level(logging.DEBUG)
    bodies: list[str] = []
    log_path = tmp_path / "serve.log"
    args = serve_args(token=TOKEN)
    with trio.fail_after(120):
        async with (
            open_serve(
                sim_config,
                log_path=log_path,
                out_dir=tmp_path / "out",
                settings=Settings(),
                app_factory=lambda service: build_app(service, args),
            ) as served,
            httpx.AsyncClient(base_url=served.url, headers=AUTH) as client,
        ):
            service = served.service

            async def call(method: str, path: str, **kw: Any) -> httpx.Response:
                r = await client.request(method, path, **kw)
                bodies.append(f"{r.status_code} {dict(r.headers)} {r.text}")
                return r

            job = (
                await call("POST", "/api/conjure/jobs", files=_job_files(), data={"prompt": "x"})
            ).json()
            await service.conjure.wait_until_idle()
            for path in (
                job["urls"]["self"],
                "/api/v2/jobs",
                "/api/conjure/mode",
                "/api/conjure/machines",
                "/api/conjure/costs",
                "/metrics",
                "/api/v2/health",
            ):
                await call("GET", path)
            await call("GET", job["urls"]["events"])
            await call("POST", "/api/conjure/estimate", json={})
            await call("PUT", "/api/conjure/budget", json={"usd": 3})
            await call("GET", "/api/conjure/costs", headers={"Authorization": "Bearer bad"})
            for output in (await call("GET", job["urls"]["self"])).json()["outputs"]:
                r = await client.get(output["url"])
                assert r.status_code == 200
            config = service.conjure.ctx.config
            servers = await service.conjure.ctx.runcomfy.list_servers()
            machine_urls = [s.url.reveal() for s in servers if s.url is not None]
            secrets = [TOKEN, config.runcomfy.api_token.reveal(), *machine_urls]
    assert machine_urls, "the job ran on a machine whose URL we can check for"
    assert all(len(s) >= 8 for s in secrets)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    event_log = log_path.read_bytes()
    for secret in secrets:
        assert all(secret not in body for body in bodies), "a response leaks a secret"
        assert secret not in logged, "a log line leaks a secret"
        assert secret.encode() not in event_log, "the event log holds a secret"


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["serve", "--host", "0.0.0.0"], "--token"),
        (["serve", "--host", ""], "--token"),
        (["serve", "--cors-origin", "*"], "'*' is refused"),
        (["serve", "--cors-origin", "app.example"], "not an origin"),
        (["serve", "--max-body-mb", "0"], "--max-body-mb"),
    ],
)
def test_serve_refuses_unsafe_flags_in_one_line(
    argv: list[str],
    needle: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """A non-loopback bind without a token, a wildcard or malformed CORS origin, a zero body
    limit: exit 2 with one line, before any log is created."""
    from conjure_actors.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CONJURE_TOKEN", raising=False)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert needle in err[0]
    assert not (tmp_path / "runs").exists()
