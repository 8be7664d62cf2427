"""``generate DIR`` writes the bundled workflows and the example sketch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conjure_actors.actors.example import bundled_workflows, example_sketch_png
from conjure_actors.cli import main


def test_generate_writes_every_workflow(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Every bundled workflow lands in DIR as valid JSON, plus the sketch PNG."""
    assert main(["generate", str(tmp_path / "ex")]) == 0
    for name, data in bundled_workflows().items():
        written = (tmp_path / "ex" / name).read_bytes()
        assert written == data
        json.loads(written)
    assert (tmp_path / "ex" / "sketch.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "conjure_flux_mesh.json" in capsys.readouterr().out


def test_generate_refuses_to_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An existing file is not overwritten without --force: one line, exit 2."""
    (tmp_path / "invert_save.json").write_text("{}")
    assert main(["generate", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--force" in err
    assert err.count("\n") == 1
    assert main(["generate", "--force", str(tmp_path)]) == 0


def test_generate_into_a_file_path_fails(tmp_path: Path) -> None:
    """A DIR that is a file is a usage error."""
    target = tmp_path / "f"
    target.write_text("x")
    assert main(["generate", str(target)]) == 2


def test_example_sketch_is_deterministic() -> None:
    """The sketch has the same bytes every time and is a 128x128 PNG."""
    a, b = example_sketch_png(), example_sketch_png()
    assert a == b
    assert int.from_bytes(a[16:20], "big") == 128
