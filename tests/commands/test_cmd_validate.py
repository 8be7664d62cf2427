"""``python -m conjure_actors validate``: a summary line, or exit 2 with every problem."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conjure_actors.cli import main

ROOT = Path(__file__).resolve().parents[2]
CONJURE = ROOT / "conjure_actors" / "workflows" / "conjure_flux_mesh.json"
CAPTURES = Path(__file__).resolve().parents[1] / "data" / "captures"


def test_valid_workflow_prints_one_summary_line(capsys: pytest.CaptureFixture[str]) -> None:
    """The CONJURE workflow validates: exit 0, one line with outputs and roles."""
    assert main(["validate", str(CONJURE)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1
    assert out[0].startswith("ok: conjure_flux_mesh.json: 19 nodes")
    assert "24 (SaveImage), 33 (SaveGLB)" in out[0]
    assert "image=16 prompt=34 depth=24 mesh=33" in out[0]


def test_bindings_are_checked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Good --image/--prompt/--set bindings are counted in the summary."""
    from conjure_actors.actors.example import example_sketch_png

    (tmp_path / "a.png").write_bytes(example_sketch_png())
    image = str(tmp_path / "a.png")
    args = ["validate", str(CONJURE), "--image", image, "--prompt", "fox", "--set", "20.steps=30"]
    assert main(args) == 0
    assert "4 bindings" in capsys.readouterr().out


def test_every_problem_is_listed_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A broken workflow exits 2 and lists each problem on its own line."""
    path = tmp_path / "bad.json"
    path.write_text(
        json.dumps({"1": {"inputs": {}}, "2": {"class_type": "X", "inputs": {"a": ["7", 0]}}})
    )
    assert main(["validate", str(path), "--no-catalog"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "error: bad.json: workflow has 3 problems:"
    assert err[1:] == [
        "  - node 1: missing class_type",
        "  - node 2 input 'a': link to missing node '7'",
        "  - the workflow has no output node: add a SaveImage or similar node"
        " (known output classes: SaveImage, SaveGLB...)",
    ]


def test_bad_binding_is_listed(capsys: pytest.CaptureFixture[str]) -> None:
    """--set to a missing input is a problem naming node and input."""
    assert main(["validate", str(CONJURE), "--set", "20.nope=1"]) == 2
    assert "binding 20.nope: node 20 (KSampler) has no input 'nope'" in capsys.readouterr().err


def test_ui_format_gets_the_hint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A UI export is told to use Save (API)."""
    path = tmp_path / "ui.json"
    path.write_text(json.dumps({"nodes": [], "links": []}))
    assert main(["validate", str(path)]) == 2
    assert "Save (API)" in capsys.readouterr().err


def test_object_info_file_is_used_strictly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With --object-info, classes the server does not have are errors."""
    assert (
        main(
            [
                "validate",
                str(CONJURE),
                "--object-info",
                str(CAPTURES / "object_info_LoadImage.json"),
            ]
        )
        == 2
    )
    assert "unknown class 'KSampler'" in capsys.readouterr().err


def test_unreadable_object_info_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad --object-info file is one line, exit 2."""
    path = tmp_path / "oi.json"
    path.write_text("[1, 2]")
    assert main(["validate", str(CONJURE), "--object-info", str(path)]) == 2
    assert "GET /object_info" in capsys.readouterr().err


def test_missing_workflow_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A missing file is reported, no traceback."""
    assert main(["validate", str(tmp_path / "nope.json")]) == 2
    assert "file not found" in capsys.readouterr().err


def test_default_catalog_catches_a_type_mismatch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With the simulator's catalog, a MASK wired into an IMAGE input is reported."""
    pytest.importorskip("conjure_actors.sim.catalog")
    graph = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "a.png"}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 1], "filename_prefix": "x"}},
    }
    path = tmp_path / "mask.json"
    path.write_text(json.dumps(graph))
    assert main(["validate", str(path)]) == 2
    assert "node 2 input 'images': expects IMAGE but node 1 output 1 is MASK" in (
        capsys.readouterr().err
    )


def test_image_whose_pixels_do_not_decode_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A JPEG with a sound header but damaged data is refused (the pixels are decoded)."""
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (64, 64), "red").save(out, "JPEG")
    data = bytearray(out.getvalue())
    data[-200:-2] = bytes(198)
    (tmp_path / "bad.jpg").write_bytes(bytes(data))
    assert main(["validate", str(CONJURE), "--image", str(tmp_path / "bad.jpg")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --image {tmp_path / 'bad.jpg'}: does not decode (")
    assert err.count("\n") == 1


@pytest.mark.slow
def test_image_file_is_checked_and_bound_by_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """validate --image FILE: a good image passes and is bound into the LoadImage."""
    from conjure_actors.actors.example import example_sketch_png

    path = tmp_path / "s.png"
    path.write_bytes(example_sketch_png())
    assert main(["validate", str(CONJURE), "--image", str(path)]) == 0
    assert "1 bindings" in capsys.readouterr().out


def test_a_value_where_only_a_link_will_do_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    """``--set 2.image=3`` on ImageInvert (an IMAGE input): exit 2 before any machine,
    one line naming the node, the input and the type of link it needs."""
    invert = ROOT / "conjure_actors" / "workflows" / "invert_save.json"
    assert main(["validate", str(invert), "--set", "2.image=3"]) == 2
    err = capsys.readouterr().err
    assert err == (
        "error: invert_save.json: workflow has 1 problem: node 2 (ImageInvert) input"
        " 'image': needs a link to a node's IMAGE output ([\"NODE\", INDEX]), not the"
        " value 3\n"
    )


def test_an_image_path_that_is_no_file_exits_2_as_run_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """validate --image nonexist.png says what run says (exit 2): a missing file is not
    taken for the name of an image on the server (which run could not run)."""
    monkeypatch.chdir(tmp_path)
    assert main(["validate", str(CONJURE), "--image", "nonexist.png"]) == 2
    assert capsys.readouterr().err == (
        "error: cannot read image nonexist.png: No such file or directory\n"
    )


def test_an_image_cut_inside_its_first_chunk_is_said_without_a_python_repr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 30-byte cut PNG (Pillow cannot identify it): one line, no ``<_io.BytesIO ...>``."""
    from conjure_actors.actors.example import example_sketch_png

    (tmp_path / "t30.png").write_bytes(example_sketch_png()[:30])
    assert main(["validate", str(CONJURE), "--image", str(tmp_path / "t30.png")]) == 2
    assert capsys.readouterr().err == (
        f"error: --image {tmp_path / 't30.png'}: not an image ComfyUI's LoadImage reads"
        " (PNG, JPEG, WebP, GIF, BMP, TIFF...), or one cut short or damaged\n"
    )
