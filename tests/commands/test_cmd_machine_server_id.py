"""``machine down --server-id ID`` takes only what a RunComfy server id can be: the id goes
in the URL path of a DELETE (QA11 F4: "" and ``../servers`` reached the account's list, a
``/`` another route, a space read "not found: nothing bills"). A usage error, one line, exit
2, before any request (no credentials needed to hear it)."""

from __future__ import annotations

import pytest
from bad_input_support import one_line_usage_error
from hypothesis import given
from hypothesis import strategies as st

from conjure_actors.cli import main
from conjure_actors.commands.machine import _server_id

pytestmark = pytest.mark.usefixtures("no_credentials")

NOT_IDS = ["", " ", "../servers", "a/b", "x?y", "x#y", "a b", "a\x01b", "id\n", ".", "..", "a..b"]


@pytest.mark.parametrize("server_id", NOT_IDS)
def test_an_id_that_is_no_server_id_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], server_id: str
) -> None:
    with pytest.raises(SystemExit) as exit_info:  # (argparse's exit, as for any bad flag)
        main(["machine", "down", "--server-id", server_id])
    err = one_line_usage_error(int(str(exit_info.value.code)), capsys.readouterr().err)
    assert "--server-id: not a RunComfy server id: " in err, err


@pytest.mark.parametrize("server_id", ["5a9414b8-0c1f-4e0a-9d2b-0123456789ab", "gone-1", "s1"])
def test_a_plausible_id_is_taken(server_id: str) -> None:
    assert _server_id(server_id) == server_id


@given(st.text())
def test_an_id_taken_is_one_path_segment(text: str) -> None:
    """Whatever is taken names one segment of ``/servers/{id}``, never another route."""
    try:
        taken = _server_id(text)
    except Exception:  # (argparse.ArgumentTypeError: refused)
        return
    assert taken.strip(".")
    assert ".." not in taken
    assert not any(c in taken for c in "/?#%\\")
    assert taken.isprintable()
    assert not any(c.isspace() for c in taken)
