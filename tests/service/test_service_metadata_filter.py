"""A ``metadata[KEY]=VALUE`` filter with an empty key is refused saying the key is empty
(QA10 F6: it said "at most 16 non-empty keys", as if one filter were too many); too many
keys say how many, on the job list and on the multi-job event stream alike."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from extras_support import open_extras_service

from conjure_actors.service.v2_jobs import MAX_LABELS

PATHS = ["/api/v2/jobs", "/api/conjure/events"]


@pytest.mark.parametrize("path", PATHS)
async def test_an_empty_filter_key_is_refused_as_empty(
    tmp_path: Path, autojump_clock: Any, path: str
) -> None:
    async with open_extras_service(tmp_path) as run:
        answer = await run.client.get(f"{path}?metadata%5B%5D=3")
    assert answer.status_code == 422, answer.text
    error = answer.json()["error"]
    assert error["code"] == "invalid_metadata_filter"
    assert error["message"] == "metadata filter key is empty: use metadata[KEY]=VALUE"


@pytest.mark.parametrize("path", PATHS)
async def test_too_many_filter_keys_are_refused_with_their_count(
    tmp_path: Path, autojump_clock: Any, path: str
) -> None:
    query = "&".join(f"metadata%5Bk{i}%5D=v" for i in range(MAX_LABELS + 1))
    async with open_extras_service(tmp_path) as run:
        answer = await run.client.get(f"{path}?{query}")
    assert answer.status_code == 422, answer.text
    error = answer.json()["error"]
    assert error["code"] == "invalid_metadata_filter"
    assert error["message"] == f"{MAX_LABELS + 1} metadata filter keys: at most {MAX_LABELS}"
