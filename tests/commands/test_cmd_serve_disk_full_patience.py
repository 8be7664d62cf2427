"""``serve --disk-full-patience``: how long a full disk under the log may hold the journal
before serve stops; parsed, and a value that is no number of seconds refused in one line."""

from __future__ import annotations

from pathlib import Path

import pytest
from bad_input_support import one_line_usage_error

from conjure_actors.cli import build_parser, main
from conjure_actors.commands.serve import DISK_FULL_PATIENCE

pytestmark = pytest.mark.usefixtures("no_credentials")


def test_the_patience_defaults_to_two_minutes() -> None:
    """Without the flag serve holds a full disk's appends for 120 s (under the idle timeout
    and the lease renewal margin: a hold delays their decisions)."""
    args = build_parser("serve").parse_args(["serve"])
    assert args.disk_full_patience == DISK_FULL_PATIENCE == 120.0


@pytest.mark.parametrize("value", ["-1", "nan", "inf"])
def test_a_patience_that_is_no_number_of_seconds_is_refused_in_one_line(
    capsys: pytest.CaptureFixture[str], value: str
) -> None:
    """A negative, NaN or infinite patience: one usage line naming the flag, exit 2, no log."""
    code = main(["serve", "--port", "0", "--log", "s.log", "--disk-full-patience", value])
    err = one_line_usage_error(code, capsys.readouterr().err)
    assert err.startswith(f"error: --disk-full-patience {float(value):g}: use a number of"), err
    assert not Path("s.log").exists()
