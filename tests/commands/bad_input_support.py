"""Shared by the bad-input tests of ``run`` and ``serve``: the check of a one-line usage
error (their ``no_credentials`` fixture is in this folder's conftest)."""

from __future__ import annotations


def one_line_usage_error(code: int, err: str) -> str:
    """``err`` is one ``error: ...`` line, no traceback, and the exit code is 2."""
    assert "Traceback" not in err, err
    assert err.startswith("error: "), err
    assert err.count("\n") == 1, err
    assert code == 2, (code, err)
    return err
