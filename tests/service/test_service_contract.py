"""Per-endpoint contract properties: whatever a client sends, ``serve`` answers with a
result or a typed error (the envelope, a known code), never a 5xx.

One ``serve`` subprocess (embedded simulated cloud) for the module; hypothesis drives a
plain HTTP client at it, so each example is one request over loopback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.slow

CODES = {
    "invalid_request",
    "invalid_workflow",
    "workflow_format_ui",
    "missing_asset",
    "hash_mismatch",
    "blob_not_found",
    "idempotency_key_reuse",
    "queue_full",
    "not_found",
    "method_not_allowed",
    "payload_too_large",
    "metadata_invalid",
    "invalid_metadata_filter",
    "invalid_cursor",
    "too_many_streams",
    "unauthorized",
    "forbidden",
}

SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
CLASSES = ["LoadImage", "SaveImage", "EmptyImage", "ImageInvert", "ImageBlur", "KSampler", "X"]
nodes = st.fixed_dictionaries(
    {"class_type": st.sampled_from(CLASSES) | st.text(max_size=10)},
    optional={
        "inputs": st.dictionaries(
            st.sampled_from(["image", "images", "width", "height", "color", "seed"])
            | st.text(max_size=6),
            json_values
            | st.lists(st.text(max_size=3), min_size=2, max_size=2)
            | st.fixed_dictionaries(
                {
                    "__type": st.just("core/ASSET"),
                    "info": st.dictionaries(st.text(max_size=4), json_values),
                }
            ),
            max_size=4,
        ),
        "_meta": json_values,
    },
)
graphs = st.dictionaries(st.text(max_size=4), nodes | json_values, max_size=5)
job_bodies = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {"workflow": graphs},
        optional={
            "extra_data": json_values,
            "metadata": st.dictionaries(st.text(max_size=8), json_values | st.text(), max_size=20),
            "inputs": json_values,
        },
    ),
    st.fixed_dictionaries({"workflow": st.just({"nodes": [], "links": []})}),
)
ascii_text = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40)
header_values = st.from_regex(r"[!-~]([ -~]{0,38}[!-~])?", fullmatch=True)
"""What an HTTP client can send as a header value (no surrounding blanks)."""


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One ``serve`` subprocess on the embedded simulated cloud, port 0."""
    cwd = tmp_path_factory.mktemp("contract")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNCOMFY_", "CONJURE_"))}
    with (
        open(cwd / "stderr.txt", "wb") as stderr,
        subprocess.Popen(
            [sys.executable, "-m", "conjure_actors", "serve", "--port", "0", "--log", "s.log"],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=stderr,
        ) as process,
    ):
        try:
            assert process.stdout is not None
            line = process.stdout.readline().decode()
            assert "http://" in line, (cwd / "stderr.txt").read_text()
            yield line.split()[-1]
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _typed(answer: httpx.Response) -> None:
    """No 5xx; an error is the envelope with a known code."""
    assert answer.status_code < 500, (answer.status_code, answer.text)
    if answer.status_code >= 400 and answer.request.method != "HEAD":
        error = answer.json()["error"]
        assert error["code"] in CODES, error
        assert isinstance(error["message"], str)


@pytest.fixture(scope="module")
def http(url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=url, timeout=60) as client:
        yield client


@SETTINGS
@given(body=job_bodies, key=st.none() | header_values)
def test_submit_any_json_body_is_a_job_or_a_typed_error(
    http: httpx.Client, body: Any, key: str | None
) -> None:
    """POST /api/v2/jobs with any JSON: 201 with a job, or a typed error."""
    headers = {"Idempotency-Key": key} if key else {}
    answer = http.post("/api/v2/jobs", json=body, headers=headers)
    _typed(answer)
    if answer.status_code == 201:
        assert answer.json()["status"] in ("queued", "running", "succeeded", "failed")


@SETTINGS
@given(raw=st.binary(max_size=200), content_type=header_values)
def test_submit_any_bytes_is_a_typed_error(
    http: httpx.Client, raw: bytes, content_type: str
) -> None:
    """POST /api/v2/jobs with any bytes and content type: never a 5xx."""
    _typed(http.post("/api/v2/jobs", content=raw, headers={"content-type": content_type}))


@SETTINGS
@given(
    data=st.binary(max_size=300),
    fields=st.dictionaries(
        st.sampled_from(["content_type", "file_path", "expected_hash", "tags", "expires_in", "x"]),
        ascii_text,
        max_size=5,
    ),
    with_file=st.booleans(),
)
def test_upload_any_form_is_an_asset_or_a_typed_error(
    http: httpx.Client, data: bytes, fields: dict[str, str], with_file: bool
) -> None:
    """POST /api/v2/assets with any form: 200/201 with an asset, or a typed error."""
    files = {"file": ("f.bin", data, "application/octet-stream")} if with_file else None
    answer = http.post("/api/v2/assets", data=fields, files=files)
    _typed(answer)
    if answer.status_code in (200, 201):
        assert answer.json()["hash"].startswith("blake3:")


@SETTINGS
@given(
    body=json_values
    | st.fixed_dictionaries(
        {"hash": ascii_text},
        optional={"file_path": json_values, "tags": json_values, "expires_in": json_values},
    )
)
def test_from_hash_any_body_is_typed(http: httpx.Client, body: Any) -> None:
    """POST /api/v2/assets/from-hash with any JSON: never a 5xx."""
    _typed(http.post("/api/v2/assets/from-hash", json=body))


@SETTINGS
@given(segment=st.text(min_size=1, max_size=80), method=st.sampled_from(["GET", "DELETE"]))
def test_any_asset_id_is_typed(http: httpx.Client, segment: str, method: str) -> None:
    """GET/DELETE /api/v2/assets/{id}, GET .../content and HEAD by-hash with any id."""
    part = quote(segment, safe="")
    _typed(http.request(method, f"/api/v2/assets/{part}"))
    _typed(http.get(f"/api/v2/assets/{part}/content"))
    _typed(http.head(f"/api/v2/assets/by-hash/{part}"))


@SETTINGS
@given(range_header=header_values)
def test_any_range_header_is_typed(http: httpx.Client, range_header: str) -> None:
    """GET content with any Range header: 200, 206 or 416, never a 5xx."""
    asset = http.post(
        "/api/v2/assets",
        data={"content_type": "application/octet-stream", "file_path": "r.bin"},
        files={"file": ("r.bin", b"0123456789", "application/octet-stream")},
    ).json()
    answer = http.get(f"/api/v2/assets/{asset['id']}/content", headers={"Range": range_header})
    assert answer.status_code in (200, 206, 416), answer.status_code


@SETTINGS
@given(
    segment=st.text(min_size=1, max_size=80),
    tail=st.sampled_from(["", "/workflow", "/cancel", "/events"]),
)
def test_any_job_id_is_typed(http: httpx.Client, segment: str, tail: str) -> None:
    """GET /api/v2/jobs/{id}[/workflow|/events] and POST .../cancel with any id."""
    method = "POST" if tail == "/cancel" else "GET"
    _typed(http.request(method, f"/api/v2/jobs/{quote(segment, safe='')}{tail}"))


@SETTINGS
@given(
    params=st.lists(
        st.tuples(
            st.sampled_from(["limit", "cursor", "metadata[a]", "metadata[]", "x"]) | ascii_text,
            ascii_text,
        ),
        max_size=4,
    )
)
def test_any_list_query_is_typed(http: httpx.Client, params: list[tuple[str, str]]) -> None:
    """GET /api/v2/jobs with any query: a page of jobs or a typed error."""
    answer = http.get("/api/v2/jobs", params=params)
    _typed(answer)
    if answer.status_code == 200:
        assert isinstance(answer.json()["jobs"], list)


def _sketch() -> bytes:
    from conjure_actors.actors.example import example_sketch_png

    return example_sketch_png()


_SAMPLER_SETS = st.builds(
    "{}.{}={}".format,
    st.sampled_from(["20", "44", "16", "99"]),
    st.sampled_from(["steps", "cfg", "seed", "sampler_name", "denoise", "model", "nope"]),
    st.sampled_from(["20", "-1", "abc", "1e400", "euler", "true", "[1, 0]", "3.5", ""]),
)


@SETTINGS
@given(
    image=st.binary(max_size=64) | st.just(b"") | st.builds(_sketch),
    cut=st.none() | st.integers(0, 600),
    prompt=ascii_text,
    sets=st.lists(_SAMPLER_SETS | ascii_text, max_size=3),
)
def test_conjure_job_is_a_job_or_a_typed_error_and_never_over_a_non_image(
    http: httpx.Client, image: bytes, cut: int | None, prompt: str, sets: list[str]
) -> None:
    """POST /api/conjure/jobs with any image bytes, prompt and sets: 201 or a typed 4xx;
    a 201 only over bytes the pre-flight reads as an image, which a blank prompt or bytes
    it does not read as one never get."""
    from conjure_actors.domain.preflight import image_problem

    data = image if cut is None else image[:cut]
    answer = http.post(
        "/api/conjure/jobs",
        files={"image": ("s.png", data, "image/png")},
        data={"prompt": prompt, "set": sets},
    )
    _typed(answer)
    if answer.status_code == 201:
        assert image_problem(data) is None
        assert prompt.strip()
    elif data and prompt.strip() and image_problem(data) is not None:
        assert answer.status_code == 400, answer.text


def test_events_of_a_finished_job_end_after_the_terminal_status(http: httpx.Client) -> None:
    """The SSE stream of a job ends after its terminal status event."""
    graph = json.loads(
        (
            Path(__file__).resolve().parents[2] / "conjure_actors/workflows/invert_save.json"
        ).read_text()
    )
    job = http.post("/api/v2/jobs", json={"workflow": graph}).json()
    with http.stream("GET", job["urls"]["events"]) as answer:
        assert answer.headers["content-type"].startswith("text/event-stream")
        names = [
            line.split(":", 1)[1].strip()
            for line in answer.iter_lines()
            if line.startswith("event:")
        ]
    assert names[0] == "status"
    assert names[-1] == "status"
