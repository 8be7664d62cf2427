"""docs/runcomfy.md (issue 14's onboarding) stays true to the code it describes."""

from __future__ import annotations

import re
from pathlib import Path

from conjure_actors.domain.prices import PRICE_TABLES, usd_to_micros
from conjure_actors.sim.catalog import MODEL_FILES

DOC = (Path(__file__).resolve().parents[1] / "docs" / "runcomfy.md").read_text()


def test_price_table_matches_the_code() -> None:
    """Every server type priced in domain/prices.py has its row, Hobby and Pro as the code."""
    rows = {
        m[1]: (m[2], m[3])
        for m in re.finditer(r"^\| `([\w-]+)`[^|]*\|[^|]*\| ([\d.]+) \| ([\d.]+) \|$", DOC, re.M)
    }
    for plan, column in (("hobby", 0), ("pro", 1)):
        for server_type, micros in PRICE_TABLES[plan].hourly_micros.items():
            assert usd_to_micros(rows[server_type][column]) == micros, (plan, server_type)


def test_model_files_named_are_the_conjure_machines() -> None:
    """Each model file the CONJURE workflow loads is listed under its folder."""
    for name in ("flux1-depth-dev", "clip_l", "t5xxl_fp8_e4m3fn", "ae", "hunyuan3d-dit-v2"):
        folder = next(f for f, files in MODEL_FILES.items() if f"{name}.safetensors" in files)
        assert f"`{folder}/{name}.safetensors`" in DOC, name


def test_readme_links_the_doc() -> None:
    """The README points a new user at docs/runcomfy.md."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert "(docs/runcomfy.md)" in readme
