"""``serve`` holds the host-wide lock of its log's identity (its first record, which every
copy keeps) while it writes it, from the first record of a new log on: a second serve on a
copy taken meanwhile is refused at its journal's opening (as ``serve --log`` refuses it
before, QA9 F1), and the lock goes when serving ends."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from service_helpers import serving

from conjure_actors.commands.live_copy import log_identity
from conjure_actors.commands.run import one_line_error
from conjure_actors.errors import UsageError
from conjure_actors.runtime import process


@pytest.mark.slow  # (just test <= 30 s: CI and just check run it)
async def test_a_copy_of_a_served_log_is_refused_at_its_journals_opening(
    sim_config: Any, tmp_path: Path
) -> None:
    """The copy's serve ends in one line and drives nothing; once the first serve ends,
    its lock is free."""
    async with serving(sim_config, tmp_path, log="a.log"):
        shutil.copyfile(tmp_path / "a.log", tmp_path / "c.log")
        identity = log_identity(tmp_path / "c.log")
        assert identity is not None
        assert process.lock_holder(identity) == process.os.getpid()
        with pytest.raises(BaseExceptionGroup) as refused:  # (the journal's nursery's)
            async with serving(sim_config, tmp_path, log="c.log"):
                pass
        error = one_line_error(refused.value)
        assert isinstance(error, UsageError)
        assert re.match(r"--log \S+c\.log: process \d+ on this host is still writing", str(error))
    assert process.lock_holder(identity) is None
