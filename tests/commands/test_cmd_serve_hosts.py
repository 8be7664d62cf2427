"""``serve --allowed-host``: a bad value is one line, exit 2, before anything starts;
``serve --help`` says what it does."""

from __future__ import annotations

from pathlib import Path

import pytest
from bad_input_support import one_line_usage_error

from conjure_actors.cli import main

pytestmark = pytest.mark.usefixtures("no_credentials")


@pytest.mark.parametrize("value", ["*", "comfy.lan:8443", "https://comfy.lan", "a/b", ""])
def test_a_bad_allowed_host_is_one_line(capsys: pytest.CaptureFixture[str], value: str) -> None:
    """--allowed-host takes a bare name: '*', a port, a URL or a path are refused."""
    code = main(["serve", "--port", "0", "--log", "s.log", "--allowed-host", value])
    err = one_line_usage_error(code, capsys.readouterr().err)
    assert "--allowed-host" in err
    assert not Path("s.log").exists()


def test_help_says_what_allowed_host_does(capsys: pytest.CaptureFixture[str]) -> None:
    """serve --help names the DNS rebinding refusal."""
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    text = " ".join(capsys.readouterr().out.split()).replace("- ", "-")  # argparse wraps at "-"
    assert "--allowed-host NAME" in text
    assert "DNS rebinding" in text
