"""SSE ``preview`` events (the newest preview frame of a running job, as JPEG, throttled) and
the progress throttle, over the ASGI app in memory on trio's mock clock."""

from __future__ import annotations

import base64
import io
import itertools
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import trio
import yaml
from extras_support import open_extras_service, sse_events, wait_for

from conjure_actors.domain import state as st
from conjure_actors.service.previews import Previews, to_jpeg
from conjure_actors.sim.media import write_png
from conjure_actors.sim.timings import ComfyTimings

SPEC = Path(__file__).resolve().parents[2] / "conjure_actors" / "service" / "openapi_v2.yaml"
WORKFLOWS = Path(__file__).resolve().parents[2] / "conjure_actors" / "workflows"


def _json_schema(node: Any) -> Any:
    """OpenAPI 3.0's ``nullable: true`` as JSON Schema (``type: [t, "null"]``)."""
    if isinstance(node, list):
        return [_json_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _json_schema(v) for k, v in node.items() if k != "nullable"}
    if node.get("nullable") and "type" in node:
        out["type"] = [node["type"], "null"]
    return out


@cache
def _schema(name: str) -> Any:
    import jsonschema_rs

    spec = yaml.safe_load(SPEC.read_text())
    return jsonschema_rs.validator_for(_json_schema(spec["components"]["schemas"][name]))


def _workflow(name: str) -> dict[str, Any]:
    import json

    data: dict[str, Any] = json.loads((WORKFLOWS / name).read_text())
    return data


def test_png_frame_becomes_jpeg() -> None:
    """A PNG preview frame is re-encoded as a JPEG of the same size."""
    from PIL import Image

    jpeg = to_jpeg(write_png(40, 24, b"frame"), "image/png")
    assert jpeg is not None
    with Image.open(io.BytesIO(jpeg)) as image:
        assert (image.format, image.size) == ("JPEG", (40, 24))


def test_jpeg_frame_is_sent_as_it_is() -> None:
    """A JPEG frame is not decoded again."""
    jpeg = to_jpeg(write_png(8, 8, b"x"), None)
    assert jpeg is not None
    assert to_jpeg(jpeg, "image/jpeg") is jpeg


def test_a_frame_that_is_no_image_is_not_sent() -> None:
    """Bytes Pillow cannot read give no preview (and no error)."""
    assert to_jpeg(b"\x89PNG not really", "image/png") is None


def test_only_the_newest_preview_is_kept_until_the_job_ends() -> None:
    """A second frame replaces the first; forgetting the job drops it."""
    previews = Previews()
    previews.put("j1", "5", "image/png", b"one")
    previews.put("j1", None, "image/png", b"two")
    latest = previews.latest("j1")
    assert latest is not None
    assert (latest.data, latest.node_id, len(previews)) == (b"two", "", 1)
    previews.forget("j1")
    assert previews.latest("j1") is None
    assert len(previews) == 0


async def test_preview_payload_validates_against_the_schema() -> None:
    """The payload of a PNG frame is a PreviewEvent whose data is a JPEG."""
    previews = Previews()
    previews.put("j1", "7", "image/png", write_png(16, 16, b"p"))
    preview = previews.latest("j1")
    assert preview is not None
    payload = await previews.payload(preview)
    assert payload is not None
    _schema("PreviewEvent").validate(payload)
    assert payload["content_type"] == "image/jpeg"
    assert base64.b64decode(payload["data_base64"])[:3] == b"\xff\xd8\xff"


async def test_sse_delivers_the_running_jobs_preview(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """A job whose ComfyUI sends image frames streams a ``preview`` event (a valid
    PreviewEvent, JPEG) before its terminal status; the preview is gone once it ended."""
    async with open_extras_service(tmp_path) as run:
        r = await run.client.post("/api/v2/jobs", json={"workflow": _workflow("ws_preview.json")})
        assert r.status_code == 201, r.text
        job_id = r.json()["id"]
        seen = await sse_events(run.app, f"/api/v2/jobs/{job_id}/events")
        await wait_for(run.service, lambda s: s.jobs[job_id].status in st.TERMINAL_STATUSES)
        assert run.service.previews.latest(job_id) is None
    names = [name for _, name, _ in seen]
    assert "preview" in names, names
    assert names.index("preview") < len(names) - 1
    for _, name, data in seen:
        if name == "preview":
            _schema("PreviewEvent").validate(data)
            assert data["node_id"] == "2"
            assert base64.b64decode(data["data_base64"])[:3] == b"\xff\xd8\xff"
    assert seen[-1][1:] == ("status", seen[-1][2])
    assert seen[-1][2]["status"] == "succeeded"


@pytest.mark.slow
async def test_sse_progress_is_throttled_to_about_two_per_second(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Progress snapshots of a long job leave no faster than every progress_interval
    (trio's clock), each a full snapshot; the stream ends succeeded."""
    # Ten progress updates per blur node, 0.1 s apart: five times what the stream sends.
    comfy = ComfyTimings(per_step={"ImageBlur": 0.1}, progress_steps={"ImageBlur": 10})
    async with open_extras_service(tmp_path, comfy=comfy) as run:
        body = {"workflow": _workflow("slow_blur_chain.json")}
        r = await run.client.post("/api/v2/jobs", json=body)
        assert r.status_code == 201, r.text
        seen = await sse_events(run.app, f"/api/v2/jobs/{r.json()['id']}/events")
        interval = run.service.settings.progress_interval
    progress = [(at, data) for at, name, data in seen if name == "progress"]
    assert len(progress) > 5, [name for _, name, _ in seen]
    for _, data in progress:
        _schema("Progress").validate(data)
        assert data["nodes_total"]
        assert 0.0 <= data["value"] <= 1.0
    # The first one is the snapshot on connect; the throttle applies from there on.
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(progress[1:])]
    assert all(gap >= interval - 1e-6 for gap in gaps), gaps
    assert seen[-1][2]["status"] == "succeeded"


@pytest.mark.parametrize("image_type", ["image/png", None])
async def test_throttle_sends_the_newest_preview_at_most_every_interval(
    image_type: str | None, autojump_clock: trio.testing.MockClock
) -> None:
    """Frames arriving faster than preview_interval: the stream sends the newest one,
    never two within the interval, and never the same frame twice."""
    from conjure_actors.service.v2_jobs import _PreviewThrottle

    class _Svc:
        previews = Previews()

        class settings:
            preview_interval = 0.5

    throttle = _PreviewThrottle(_Svc(), "j1")  # type: ignore[arg-type]
    sent: list[tuple[float, str]] = []
    for i in range(40):
        _Svc.previews.put("j1", str(i), image_type, write_png(4, 4, bytes([i])))
        payload = await throttle.due()
        if payload is not None:
            sent.append((trio.current_time(), payload["node_id"]))
        assert await throttle.due() is None
        await trio.sleep(0.1)
    times = [t for t, _ in sent]
    assert len(sent) >= 7
    assert all(b - a >= 0.5 - 1e-9 for a, b in itertools.pairwise(times))
    assert len({n for _, n in sent}) == len(sent)
