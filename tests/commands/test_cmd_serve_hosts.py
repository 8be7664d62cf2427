"""``serve --allowed-host`` and ``--forwarded-allow-ips``: a bad value is one line, exit 2,
before anything starts; ``serve --help`` says what each does."""

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


@pytest.mark.parametrize("value", ["proxy.lan", "127.0.0.1/33", "*"])
def test_a_bad_forwarded_allow_ips_is_one_line(
    capsys: pytest.CaptureFixture[str], value: str
) -> None:
    """--forwarded-allow-ips takes addresses or networks, nothing else."""
    code = main(["serve", "--port", "0", "--log", "s.log", "--forwarded-allow-ips", value])
    err = one_line_usage_error(code, capsys.readouterr().err)
    assert "--forwarded-allow-ips" in err
    assert not Path("s.log").exists()


def test_help_says_what_the_host_flags_do(capsys: pytest.CaptureFixture[str]) -> None:
    """serve --help names the DNS rebinding refusal and the proxy headers trusted."""
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    text = " ".join(capsys.readouterr().out.split()).replace("- ", "-")  # argparse wraps at "-"
    assert "--allowed-host NAME" in text
    assert "DNS rebinding" in text
    assert "--forwarded-allow-ips IPS" in text
    assert "X-Forwarded-Proto" in text
