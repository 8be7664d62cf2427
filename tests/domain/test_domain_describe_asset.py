"""The timeline line of an asset's record: its subject is said once."""

from __future__ import annotations

from conjure_actors.domain import service_events as se
from conjure_actors.domain.describe import describe


def test_asset_recorded_names_the_asset_once() -> None:
    """The subject column already says ``asset <id>``: the summary does not repeat it."""
    event = se.AssetRecorded(
        asset_id="e328aa",
        hash="blake3:" + "4" * 64,
        size=100,
        content_type="image/png",
        file_path="m1.png",
        at=1.0,
    )
    subject, summary = describe(event)
    assert subject == "asset e328aa"
    assert summary == "recorded: m1.png (100 bytes, blake3:444444444444)"
    assert "e328aa" not in summary


def test_a_jobs_output_recorded_names_its_asset() -> None:
    """Said under its job ("job J  recorded: m1.png ..."), the line named no asset: which
    one the output became was nowhere on it."""
    event = se.AssetRecorded(
        asset_id="e328aa",
        hash="blake3:" + "4" * 64,
        size=100,
        content_type="image/png",
        file_path="m1.png",
        job_id="j1",
        node_id="9",
        at=1.0,
    )
    assert describe(event) == (
        "job j1",
        "output recorded as asset e328aa: m1.png (100 bytes, blake3:444444444444)",
    )
