"""A bad value ``serve``'s command line gave is said by its flag, not the config key."""

from __future__ import annotations

from pathlib import Path

import pytest
from bad_input_support import one_line_usage_error

from conjure_actors.cli import main

pytestmark = pytest.mark.usefixtures("no_credentials")


@pytest.mark.parametrize(
    ("argv", "flag", "key"),
    [
        (["--max-machines", "0"], "--max-machines", "pool.max_machines"),
        (["--budget", "-1"], "--budget", "budget.usd"),
        (["--idle-timeout", "-1"], "--idle-timeout", "pool.idle_timeout"),
    ],
)
def test_a_bad_flag_is_named_as_the_flag(
    capsys: pytest.CaptureFixture[str], argv: list[str], flag: str, key: str
) -> None:
    """serve --max-machines 0 said ``pool.max_machines: must be > 0``: a key the user never
    wrote. Now the flag, and nothing started."""
    code = main(["serve", "--port", "0", "--log", "s.log", *argv])
    err = one_line_usage_error(code, capsys.readouterr().err)
    assert err.startswith(f"error: {flag}: ")
    assert key not in err
    assert not Path("s.log").exists()


def test_a_bad_key_of_the_config_file_is_still_named_as_the_key(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The same value from conjure.toml: the key is what the user wrote."""
    Path("c.toml").write_text("[pool]\nmax_machines = 0\n")
    code = main(["serve", "--port", "0", "--log", "s.log", "--config", "c.toml"])
    assert "pool.max_machines: must be > 0" in one_line_usage_error(code, capsys.readouterr().err)


def test_run_says_a_bad_flag_by_its_flag_too(capsys: pytest.CaptureFixture[str]) -> None:
    """run and serve share the flags and their words (run said pool.max_machines)."""
    code = main(["run", "--max-machines", "0"])
    err = one_line_usage_error(code, capsys.readouterr().err)
    assert err == "error: --max-machines: must be > 0, got 0\n"
