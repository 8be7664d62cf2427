"""Pre-flight in ``serve``: a job ``run`` refuses before launching (a literal ComfyUI would
refuse, an input image that is not an image) is refused at submission, for free, with
nothing stored (no job, no claimed Idempotency-Key), on both job routes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import trio
from extras_support import open_extras_service, png
from service_helpers import workflow

from conjure_actors.actors.example import bundled_workflow
from conjure_actors.domain.workflow import Catalog, workflow_from_text
from conjure_actors.sim.catalog import node_catalog

PROMPT = "a carved wooden fox"
NOT_AN_IMAGE = b"hello, not a picture\n"


def _sampler() -> str:
    wf = workflow_from_text(bundled_workflow().decode())
    return next(n for n, node in wf.graph.items() if node["class_type"] == "KSampler")


def _without_choice(cls: str, name: str, value: str) -> Catalog:
    """The simulator's catalogue where input ``name`` of ``cls`` no longer offers ``value``
    (a server without that sampler, model file...)."""
    catalog = dict(node_catalog())
    spec = catalog[cls]
    config = spec.configs[name]
    assert config.choices is not None
    assert value in config.choices
    narrowed = attrs.evolve(config, choices=tuple(c for c in config.choices if c != value))
    catalog[cls] = attrs.evolve(spec, configs={**spec.configs, name: narrowed})
    return catalog


def _nothing_stored(service: Any) -> None:
    assert not service.state.jobs
    assert not service.state.service.api_jobs
    assert not service.state.service.idempotency


async def _upload(client: Any, data: bytes, name: str) -> dict[str, Any]:
    r = await client.post(
        "/api/v2/assets",
        data={"content_type": "image/png", "file_path": name},
        files={"file": (name, data, "image/png")},
    )
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


# ----------------------------------------------------------------------- /api/conjure/jobs


async def test_conjure_job_with_a_non_image_is_refused(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """`run --image notimg.png` is exit 2; the front end's call is 400 invalid_request
    naming the 'image' field, and no machine is launched."""
    async with open_extras_service(tmp_path) as run:
        r = await run.client.post(
            "/api/conjure/jobs",
            files={"image": ("s.png", NOT_AN_IMAGE, "image/png")},
            data={"prompt": PROMPT},
        )
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error["code"] == "invalid_request"
        assert "'image'" in error["message"]
        assert "not an image" in error["message"]
        _nothing_stored(run.service)
        assert not run.service.state.machines


async def test_conjure_job_with_a_tiff_is_accepted(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """A whole TIFF (ComfyUI's LoadImage opens what Pillow decodes) is taken by the front
    end's call as by /api/v2/jobs and run --image: one image rule for every door (G3)."""
    import io

    from PIL import Image

    tiff = io.BytesIO()
    Image.new("RGB", (32, 24), "red").save(tiff, "TIFF")
    async with open_extras_service(tmp_path) as run:
        r = await run.client.post(
            "/api/conjure/jobs",
            files={"image": ("a.tiff", tiff.getvalue(), "image/tiff")},
            data={"prompt": PROMPT},
        )
        assert r.status_code == 201, r.text


async def test_conjure_job_with_a_bad_set_value_is_invalid_workflow(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """`run --set N.steps=abc` is exit 2 ('expects an integer'): the front end's call is 422
    invalid_workflow naming the sampler's input, and nothing is stored."""
    sampler = _sampler()
    async with open_extras_service(tmp_path) as run:
        r = await run.client.post(
            "/api/conjure/jobs",
            files={"image": ("sketch.png", png(), "image/png")},
            data={"prompt": PROMPT, "set": [f"{sampler}.steps=abc"]},
        )
        assert r.status_code == 422, r.text
        error = r.json()["error"]
        assert error["code"] == "invalid_workflow"
        assert "expects an integer" in error["message"]
        assert [e["field"] for e in error["details"]["node_errors"][sampler]] == ["steps"]
        _nothing_stored(run.service)
        assert not run.service.state.machines


async def test_conjure_job_refused_by_preflight_does_not_claim_its_key(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """The Idempotency-Key of a refused submission is not used up: the corrected one with
    the same key is 201."""
    headers = {"Idempotency-Key": "k-1"}
    async with open_extras_service(tmp_path) as run:
        bad = await run.client.post(
            "/api/conjure/jobs",
            files={"image": ("s.png", NOT_AN_IMAGE, "image/png")},
            data={"prompt": PROMPT},
            headers=headers,
        )
        good = await run.client.post(
            "/api/conjure/jobs",
            files={"image": ("s.png", png(), "image/png")},
            data={"prompt": PROMPT},
            headers=headers,
        )
    assert bad.status_code == 400
    assert good.status_code == 201, good.text


async def test_conjure_job_over_a_literal_the_server_lacks_is_refused_unless_set(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """A bundled workflow whose own literal the catalogue refuses (its samplers' sampler is
    not one the server offers): 422 naming each; a `set` of one it offers mends it (201)."""
    graph = workflow_from_text(bundled_workflow().decode()).graph
    samplers = sorted(n for n, node in graph.items() if node["class_type"] == "KSampler")
    name = graph[samplers[0]]["inputs"]["sampler_name"]
    catalog = _without_choice("KSampler", "sampler_name", name)
    other = next(c for c in catalog["KSampler"].configs["sampler_name"].choices or ())
    image = {"image": ("sketch.png", png(), "image/png")}
    async with open_extras_service(tmp_path, catalog=catalog) as run:
        refused = await run.client.post("/api/conjure/jobs", files=image, data={"prompt": PROMPT})
        assert refused.status_code == 422, refused.text
        node_errors = refused.json()["error"]["details"]["node_errors"]
        assert sorted(node_errors) == samplers
        assert [e["field"] for e in node_errors[samplers[0]]] == ["sampler_name"]
        _nothing_stored(run.service)
        mended = await run.client.post(
            "/api/conjure/jobs",
            files=image,
            data={"prompt": PROMPT, "set": [f"{n}.sampler_name={other}" for n in samplers]},
        )
        assert mended.status_code == 201, mended.text


async def test_conjure_job_over_a_class_the_server_lacks_says_it_once(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """A bundled workflow's node whose class the server lacks: one problem, said once (QA10
    F5: the graph's check and the prompt's binding each found it: "(and 1 more)" of itself,
    the same line twice in ``node_errors`` and ``problems``)."""
    graph = workflow_from_text(bundled_workflow().decode()).graph
    lacked = "DepthAnythingV2Preprocessor"
    (node_id,) = [n for n, node in graph.items() if node["class_type"] == lacked]
    catalog = {cls: spec for cls, spec in node_catalog().items() if cls != lacked}
    image = {"image": ("sketch.png", png(), "image/png")}
    async with open_extras_service(tmp_path, catalog=catalog) as run:
        refused = await run.client.post("/api/conjure/jobs", files=image, data={"prompt": PROMPT})
    assert refused.status_code == 422, refused.text
    error = refused.json()["error"]
    assert len(error["details"]["problems"]) == 1
    assert error["message"] == error["details"]["problems"][0]
    assert lacked in error["message"]
    assert len(error["details"]["node_errors"][node_id]) == 1


async def test_conjure_job_checks_against_the_catalogue_the_service_has_now(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """The bundled graph's check is kept per catalogue: a catalogue learned later (RunComfy's
    first machine) that refuses a literal refuses the next submission."""
    sampler = _sampler()
    name = workflow_from_text(bundled_workflow().decode()).graph[sampler]["inputs"]["sampler_name"]
    image = {"image": ("sketch.png", png(), "image/png")}
    async with open_extras_service(tmp_path) as run:
        first = await run.client.post("/api/conjure/jobs", files=image, data={"prompt": PROMPT})
        assert first.status_code == 201, first.text
        run.service._catalog = _without_choice("KSampler", "sampler_name", name)
        second = await run.client.post("/api/conjure/jobs", files=image, data={"prompt": PROMPT})
        assert second.status_code == 422, second.text


# --------------------------------------------------------------------------- /api/v2/jobs


async def test_v2_job_with_a_literal_of_the_wrong_type_is_invalid_workflow(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """EmptyImage width "abc": 422 invalid_workflow, node_errors in the spec's shape
    ({node id: [{field, reason}]}), nothing stored."""
    graph = workflow("invert_save.json")
    graph["1"]["inputs"]["width"] = "abc"
    async with open_extras_service(tmp_path) as run:
        r = await run.client.post("/api/v2/jobs", json={"workflow": graph})
        assert r.status_code == 422, r.text
        error = r.json()["error"]
        assert error["code"] == "invalid_workflow"
        (entry,) = error["details"]["node_errors"]["1"]
        assert entry["field"] == "width"
        assert "expects an integer" in entry["reason"]
        _nothing_stored(run.service)


async def test_v2_node_errors_name_a_node_by_its_own_id_even_when_shown_quoted(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """A node id with a space (and an input name with a quote) is shown quoted in the
    message; node_errors is keyed by the id itself, and field is the input's name."""
    graph = workflow("invert_save.json")
    node = graph.pop("1")
    node["inputs"]["width"] = "abc"
    graph["the source"] = node
    graph["2"]["inputs"]["image"] = ["the source", 0]
    async with open_extras_service(tmp_path) as run:
        r = await run.client.post("/api/v2/jobs", json={"workflow": graph})
        assert r.status_code == 422, r.text
        node_errors = r.json()["error"]["details"]["node_errors"]
        assert list(node_errors) == ["the source"]
        assert [e["field"] for e in node_errors["the source"]] == ["width"]
        _nothing_stored(run.service)


async def test_v2_job_with_a_value_out_of_range_is_invalid_workflow(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """EmptyImage width 0 (ComfyUI's min is 1): 422, as ComfyUI would refuse it."""
    graph = workflow("invert_save.json")
    graph["1"]["inputs"]["width"] = 0
    async with open_extras_service(tmp_path) as run:
        r = await run.client.post("/api/v2/jobs", json={"workflow": graph})
        assert r.status_code == 422, r.text
        assert "below the minimum" in r.json()["error"]["message"]
        _nothing_stored(run.service)


async def test_v2_job_whose_load_image_asset_is_not_an_image_is_refused(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """A core/ASSET in LoadImage whose bytes are no image: 422 invalid_workflow naming the
    node and input; no job, the key not claimed (the asset itself stays: it was stored by
    its own upload)."""
    graph = workflow("load_scale_blur_save.json")
    headers = {"Idempotency-Key": "k-2"}
    async with open_extras_service(tmp_path) as run:
        asset = await _upload(run.client, NOT_AN_IMAGE, "bad.png")
        graph["10"]["inputs"]["image"] = {"__type": "core/ASSET", "info": {"id": asset["id"]}}
        r = await run.client.post("/api/v2/jobs", json={"workflow": graph}, headers=headers)
        assert r.status_code == 422, r.text
        error = r.json()["error"]
        assert error["code"] == "invalid_workflow"
        (entry,) = error["details"]["node_errors"]["10"]
        assert entry["field"] == "image"
        assert "not an image" in entry["reason"]
        assert asset["id"] in entry["reason"]
        again = await run.client.post("/api/v2/jobs", json={"workflow": graph})
        assert again.status_code == 422, "the asset's check is remembered, not forgotten"
        _nothing_stored(run.service)
        good = await _upload(run.client, png(), "good.png")
        graph["10"]["inputs"]["image"] = {"__type": "core/ASSET", "info": {"id": good["id"]}}
        ok = await run.client.post("/api/v2/jobs", json={"workflow": graph}, headers=headers)
        assert ok.status_code == 201, ok.text


async def test_v2_job_naming_a_non_image_asset_by_file_name_is_refused(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """A LoadImage filename that resolves to an asset whose bytes are no image: 422."""
    graph = workflow("load_scale_blur_save.json")
    async with open_extras_service(tmp_path) as run:
        await _upload(run.client, NOT_AN_IMAGE, graph["10"]["inputs"]["image"])
        r = await run.client.post("/api/v2/jobs", json={"workflow": graph})
        assert r.status_code == 422, r.text
        assert "10" in r.json()["error"]["details"]["node_errors"]
        _nothing_stored(run.service)


async def test_v2_job_over_an_image_asset_is_accepted(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """The check refuses only what is wrong: a PNG asset in LoadImage is 201."""
    graph = workflow("load_scale_blur_save.json")
    async with open_extras_service(tmp_path) as run:
        await _upload(run.client, png(), graph["10"]["inputs"]["image"])
        r = await run.client.post("/api/v2/jobs", json={"workflow": graph})
        assert r.status_code == 201, r.text


def _noise_png(side: int) -> bytes:
    import io
    import random

    from PIL import Image

    out = io.BytesIO()
    noise = random.Random(1).randbytes(side * side * 3)
    Image.frombytes("RGB", (side, side), noise).save(out, "PNG")
    return out.getvalue()


def _jpeg_with_a_large_profile() -> bytes:
    """A JPEG whose frame header (its size) comes after ~200 KB of ICC profile segments."""
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (9, 7)).save(out, "JPEG", icc_profile=bytes(200_000))
    return out.getvalue()


async def test_v2_job_over_large_image_assets_is_accepted(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Images larger than the header read: a 300x300 noise PNG (~270 KB), and a JPEG whose
    frame header comes after 200 KB of metadata (read to the end to find it): both 201."""
    graph = workflow("load_scale_blur_save.json")
    async with open_extras_service(tmp_path) as run:
        for data in (_noise_png(300), _jpeg_with_a_large_profile()):
            assert len(data) > 200_000
            asset = await _upload(run.client, data, "big.img")
            graph["10"]["inputs"]["image"] = {"__type": "core/ASSET", "info": {"id": asset["id"]}}
            r = await run.client.post("/api/v2/jobs", json={"workflow": graph})
            assert r.status_code == 201, r.text


async def test_v2_job_over_a_truncated_large_jpeg_is_refused(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """A JPEG cut inside its metadata (no frame header at all): 422, as `run` refuses it."""
    graph = workflow("load_scale_blur_save.json")
    async with open_extras_service(tmp_path) as run:
        asset = await _upload(run.client, _jpeg_with_a_large_profile()[:150_000], "cut.jpg")
        graph["10"]["inputs"]["image"] = {"__type": "core/ASSET", "info": {"id": asset["id"]}}
        r = await run.client.post("/api/v2/jobs", json={"workflow": graph})
        assert r.status_code == 422, r.text
        _nothing_stored(run.service)


def _cut_png() -> bytes:
    """The sketch's first 100 bytes: a PNG header that parses, pixels that do not decode."""
    return png()[:100]


async def test_conjure_job_with_an_image_cut_short_after_its_header_is_refused(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """A truncated PNG (`run --image` refuses it: it does not decode): 400 naming 'image',
    not a 201 and a job that fails at LoadImage on a paid machine."""
    async with open_extras_service(tmp_path) as run:
        r = await run.client.post(
            "/api/conjure/jobs",
            files={"image": ("t100.png", _cut_png(), "image/png")},
            data={"prompt": PROMPT},
        )
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error["code"] == "invalid_request"
        assert error["message"].startswith("'image': does not decode (")
        _nothing_stored(run.service)


async def test_conjure_job_decodes_its_image_in_a_worker_thread(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, monkeypatch: Any
) -> None:
    """Decoding an image is CPU (a large one takes a while): not on the event loop, and
    no more than IMAGE_DECODES at once (each may take a few hundred MB)."""
    from conjure_actors.domain.preflight import image_problem
    from conjure_actors.service.v2_jobs import IMAGE_DECODES

    called: list[Any] = []
    limits: list[Any] = []
    inline = trio.to_thread.run_sync  # tests run "threads" inline (tests/conftest.py)

    async def recorded(fn: Any, *args: Any, **kwargs: Any) -> Any:
        called.append(fn)
        limiter = kwargs.get("limiter")
        limits.append(None if limiter is None else limiter.total_tokens)
        return await inline(fn, *args, **kwargs)

    monkeypatch.setattr(trio.to_thread, "run_sync", recorded)
    async with open_extras_service(tmp_path) as run:
        r = await run.client.post(
            "/api/conjure/jobs",
            files={"image": ("s.png", png(), "image/png")},
            data={"prompt": PROMPT},
        )
        assert r.status_code == 201, r.text
        assert image_problem in called
        assert limits[called.index(image_problem)] == IMAGE_DECODES


async def test_v2_job_whose_load_image_asset_is_cut_short_after_its_header_is_refused(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """A truncated PNG asset in LoadImage: its header parses, its pixels do not decode;
    422 invalid_workflow naming the node and input, nothing stored."""
    graph = workflow("load_scale_blur_save.json")
    async with open_extras_service(tmp_path) as run:
        asset = await _upload(run.client, _cut_png(), "t100.png")
        graph["10"]["inputs"]["image"] = {"__type": "core/ASSET", "info": {"id": asset["id"]}}
        r = await run.client.post("/api/v2/jobs", json={"workflow": graph})
        assert r.status_code == 422, r.text
        error = r.json()["error"]
        assert error["code"] == "invalid_workflow"
        (entry,) = error["details"]["node_errors"]["10"]
        assert entry["field"] == "image"
        assert "does not decode" in entry["reason"]
        _nothing_stored(run.service)


async def test_v2_job_with_a_value_where_a_link_is_needed_is_invalid_workflow(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """ImageInvert's image given the number 3 in the submitted graph: 422, not a job that
    fails on the machine ("'int' object has no attribute 'shape'")."""
    graph = workflow("invert_save.json")
    graph["2"]["inputs"]["image"] = 3
    async with open_extras_service(tmp_path) as run:
        r = await run.client.post("/api/v2/jobs", json={"workflow": graph})
        assert r.status_code == 422, r.text
        error = r.json()["error"]
        assert error["code"] == "invalid_workflow"
        (entry,) = error["details"]["node_errors"]["2"]
        assert entry["field"] == "image"
        assert "needs a link to a node's IMAGE output" in entry["reason"]
        _nothing_stored(run.service)
