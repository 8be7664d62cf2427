"""schemathesis against both OpenAPI documents ``serve`` ships, over a loopback server:
no 5xx, every status code documented, every body and content type as documented.

Short in ``just test`` (:data:`EXAMPLES` cases per operation, derandomized); thousands under
``just fuzz`` (``HYPOTHESIS_PROFILE=fuzz``). schemathesis' client is synchronous: it runs in a
worker thread against the service served on this test's trio loop.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import outcome
import pytest
import trio
from extras_support import serve_args
from hypothesis import HealthCheck, given, settings

from conjure_actors.commands.serve import build_app, open_serve
from conjure_actors.service.app import Settings

EXAMPLES = 400 if os.environ.get("HYPOTHESIS_PROFILE") == "fuzz" else 25
# The envelope's generic answers (the spec's README lists them for every operation, its
# per-operation lists do not): a bad field is 400 ``invalid_request``, a body over the limit
# 413, a full queue 429, a service shutting down 503, each with the error envelope.
GENERIC = frozenset({400, 413, 429, 503})


def response_checks(v2: bool = False) -> list[Any]:
    """The response checks: no 5xx, a documented status (for v2: or a generic one with the
    error envelope), content type and body as documented. schemathesis is imported here,
    not at collection: every test of this module is slow (~0.15-0.9 s per xdist worker)."""
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    def status_documented_or_generic(ctx: Any, response: Any, case: Any) -> bool | None:
        """``status_code_conformance``, but a generic answer with the error envelope passes."""
        if response.status_code in GENERIC and "error" in response.json():
            return None
        result: bool | None = status_code_conformance(ctx, response, case)
        return result

    status = status_documented_or_generic if v2 else status_code_conformance
    return [not_a_server_error, status, content_type_conformance, response_schema_conformance]


# The SSE stream of a job schemathesis cannot know stays open until the job ends: its
# contract is checked by the v2 tests with comfy-sdk, not by a fuzzer that waits on it. The
# many-jobs stream stays open as long as it follows a label (any ``metadata``): its answers
# are checked by tests/service/test_service_streams.py.
SKIP = {"GET /api/v2/jobs/{id}/events", "GET /api/conjure/events"}


def fuzz(document: str, base_url: str, checks: list[Any]) -> list[str]:
    """Run every operation of ``document`` (a file shipped in the service package); returns
    the operations run."""
    import schemathesis

    path = resources.files("conjure_actors.service").joinpath(document)
    schema = schemathesis.openapi.from_path(str(path))
    ran = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.label in SKIP:
            continue

        @settings(
            max_examples=EXAMPLES,
            derandomize=True,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy())
        def run(case: Any) -> None:
            response = case.call(base_url=base_url, timeout=30)
            try:
                case.validate_response(response, checks=checks)
            except Exception as exc:
                exc.add_note(f"{case.method} {case.formatted_path} -> {response.text[:300]}")
                raise

        run()
        ran.append(operation.label)
    return ran


def outcome_of(fn: Callable[[], list[str]]) -> Any:
    """``fn()``'s value or exception, as an ``outcome``."""
    return outcome.capture(fn)


async def _fuzz_served(tmp_path: Path, config: Any, document: str, checks: list[Any]) -> list[str]:
    args = serve_args()
    with trio.fail_after(600):
        async with open_serve(
            config,
            log_path=tmp_path / "serve.log",
            out_dir=tmp_path / "out",
            settings=Settings(max_queue=50),
            app_factory=lambda service: build_app(service, args),
        ) as served:
            job: Callable[[], list[str]] = lambda: fuzz(document, served.url, checks)  # noqa: E731
            outcome = await trio.to_thread.run_sync(outcome_of, job)
    # Raised here, not inside: a failure inside the block would be reported as the run's.
    return outcome.unwrap()


@pytest.mark.slow
async def test_extras_conform_to_their_openapi_document(tmp_path: Path, sim_config: Any) -> None:
    """Every /api/conjure/ operation, /metrics and the probe answer as documented."""
    ran = await _fuzz_served(tmp_path, sim_config, "openapi_extras.yaml", response_checks())
    assert "POST /api/conjure/estimate" in ran
    assert "POST /api/conjure/jobs" in ran


@pytest.mark.slow
async def test_v2_conforms_to_the_comfy_api_v2_document(tmp_path: Path, sim_config: Any) -> None:
    """Every Comfy API v2 operation (but the stream) answers as the spec says."""
    ran = await _fuzz_served(tmp_path, sim_config, "openapi_v2.yaml", response_checks(v2=True))
    assert "POST /api/v2/jobs" in ran
