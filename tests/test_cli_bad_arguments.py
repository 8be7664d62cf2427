"""A bad argument is one line, ``error: ...`` and where to look, exit 2: for every command
and sub-command (before: argparse's usage, up to seven lines, came first)."""

from __future__ import annotations

import pytest

from conjure_actors.cli import COMMANDS, main


def _bad(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    err = captured.err
    assert err.startswith("error: "), err
    assert err.count("\n") == 1, err
    assert "usage:" not in err
    return err


@pytest.mark.parametrize(
    ("argv", "says", "help_of"),
    [
        (["run", "--jobs", "abc"], "--jobs: invalid int value: 'abc'", "run"),
        (["machine", "up", "--duration", "-5"], "--duration", "machine up"),
        (["machine"], "ACTION", "machine"),
        ([], "COMMAND", ""),
        (["nope"], "invalid choice: 'nope'", ""),
    ],
    ids=["type", "sub-command-type", "missing-action", "missing-command", "unknown-command"],
)
def test_a_bad_argument_is_one_line_pointing_at_the_help(
    argv: list[str], says: str, help_of: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The line names the argument and the ``--help`` to read."""
    err = _bad(argv, capsys)
    assert says in err
    assert f"`{' '.join(['python -m conjure_actors', help_of]).strip()} --help`" in err


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_an_unknown_flag_of_any_command_is_one_line(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every command's unknown flag (or the positional it misses first) is one line
    pointing at that command's help."""
    err = _bad([command, "--no-such-flag"], capsys)
    assert f"`python -m conjure_actors {command} --help`" in err


@pytest.mark.parametrize(
    ("argv", "help_of"),
    [
        (["machine", "down", "--bogus"], "machine down"),
        (["machine", "status", "--server-id", "x"], "machine status"),
        (["machine", "up", "--no-such-flag"], "machine up"),
    ],
    ids=["down", "status", "up"],
)
def test_an_unknown_flag_of_a_sub_command_points_at_its_own_help(
    argv: list[str], help_of: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``machine down --bogus``: argparse reports it from the top parser; the line points
    at ``machine down --help`` (which lists down's options), not at ``machine --help``."""
    err = _bad(argv, capsys)
    assert "unrecognized arguments" in err
    assert f"(see `python -m conjure_actors {help_of} --help`)" in err
