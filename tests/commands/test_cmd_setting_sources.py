"""A bad setting is said by where the user set it: ``comfyui_url`` from the config file or
``CONJURE_COMFYUI_URL`` (it was said as ``--comfyui-url``, a flag nobody gave), and half a
credential set by the variable the user set (``CONJURE_RUNCOMFY_API_TOKEN``, not
``RUNCOMFY_API_TOKEN``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from bad_input_support import one_line_usage_error

from conjure_actors.cli import main

pytestmark = pytest.mark.usefixtures("no_credentials")


@pytest.mark.parametrize("command", [["run"], ["status"], ["serve", "--port", "0"]])
def test_a_bad_comfyui_url_in_the_config_file_names_the_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, command: list[str]
) -> None:
    """comfyui_url = "localhost:8188" in c.toml: the line names c.toml, not --comfyui-url."""
    (tmp_path / "c.toml").write_text('comfyui_url = "localhost:8188"\n')
    err = one_line_usage_error(main([*command, "--config", "c.toml"]), capsys.readouterr().err)
    assert "comfyui_url: not an http:// or https:// URL with a host" in err, err
    assert "(set in config file c.toml)" in err, err
    assert "--comfyui-url" not in err, err


@pytest.mark.parametrize("command", [["run"], ["status"], ["serve", "--port", "0"]])
def test_a_bad_comfyui_url_in_the_environment_names_the_variable(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, command: list[str]
) -> None:
    """CONJURE_COMFYUI_URL=localhost:8188: the line names the variable."""
    monkeypatch.setenv("CONJURE_COMFYUI_URL", "localhost:8188")
    err = one_line_usage_error(main(command), capsys.readouterr().err)
    assert "(set by environment variable CONJURE_COMFYUI_URL)" in err, err
    assert "--comfyui-url" not in err, err


@pytest.mark.parametrize("command", [["run"], ["status"]])
def test_a_bad_comfyui_url_flag_is_still_said_by_the_flag(
    capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    """--comfyui-url localhost:8188 is said as the flag, with no "bad configuration"."""
    err = one_line_usage_error(
        main([*command, "--comfyui-url", "localhost:8188"]), capsys.readouterr().err
    )
    assert err.startswith("error: --comfyui-url: not an http:// or https:// URL"), err


@pytest.mark.parametrize(
    ("name", "said", "wanted"),
    [
        ("CONJURE_RUNCOMFY_API_TOKEN", "CONJURE_RUNCOMFY_API_TOKEN", "RUNCOMFY_USER_ID"),
        ("CONJURE_RUNCOMFY_USER_ID", "CONJURE_RUNCOMFY_USER_ID", "RUNCOMFY_API_TOKEN"),
        ("RUNCOMFY_API_TOKEN", "RUNCOMFY_API_TOKEN", "RUNCOMFY_USER_ID"),
    ],
)
def test_half_a_credential_set_names_the_variable_the_user_set(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    said: str,
    wanted: str,
) -> None:
    """CONJURE_RUNCOMFY_API_TOKEN=x alone was said "RUNCOMFY_API_TOKEN is set": a variable
    the user did not set. The value is never shown."""
    monkeypatch.setenv(name, "x-secret-x")
    err = one_line_usage_error(main(["run"]), capsys.readouterr().err)
    assert err.startswith(f"error: {said} is set but "), err
    assert wanted in err.split(" is set but ", 1)[1], err
    assert "x-secret-x" not in err


def test_half_a_credential_set_in_the_config_file_names_the_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """[runcomfy] user_id in c.toml without a token: the key and the file are named."""
    (tmp_path / "c.toml").write_text('[runcomfy]\nuser_id = "u1"\n')
    err = one_line_usage_error(main(["status", "--config", "c.toml"]), capsys.readouterr().err)
    assert err.startswith("error: runcomfy.user_id (in config file c.toml) is set but"), err
    assert "runcomfy.api_token is not" in err, err
