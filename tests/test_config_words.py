"""A config file's mistakes are said in one line that names the file, the section and the
setting, with the closest right name: it said "bad configuration: runcomfy: unknown key(s)
server_typ" (which file? which names are there?) and "config: unknown key(s) runcomfyy";
a binary file was a UnicodeDecodeError traceback; a directory named ./conjure.toml was
skipped without a word."""

from __future__ import annotations

from pathlib import Path

import pytest

from conjure_actors.config import load_config
from conjure_actors.errors import ConfigError


def _error(tmp_path: Path, text: str | bytes) -> str:
    path = tmp_path / "conjure.toml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(config_file=path, env={})
    message = str(info.value)
    assert "\n" not in message
    return message.replace(str(path), "FILE")


def test_a_typo_in_a_setting_names_the_file_section_and_closest_setting(tmp_path: Path) -> None:
    """A misspelt setting: the file, its [section] and the closest setting's name."""
    assert _error(tmp_path, '[runcomfy]\nserver_typ = "medium"\n') == (
        "config file FILE: [runcomfy] has no setting 'server_typ' (did you mean 'server_type'?)"
    )


def test_a_setting_far_from_any_lists_those_of_a_small_section(tmp_path: Path) -> None:
    """No close name: the settings of a small section are listed."""
    assert _error(tmp_path, "[budget]\nlimit = 5\n") == (
        "config file FILE: [budget] has no setting 'limit' (one of: 'usd', 'warn_fraction')"
    )


def test_a_typo_in_a_section_names_the_closest_section(tmp_path: Path) -> None:
    """A misspelt section: the closest section (it said 'config: unknown key(s) runcomfyy')."""
    assert _error(tmp_path, "[runcomfyy]\nx = 1\n") == (
        "config file FILE: unknown section [runcomfyy] (did you mean [runcomfy]?)"
    )


def test_a_section_setting_at_the_top_says_which_section_it_goes_in(tmp_path: Path) -> None:
    """A section's setting written above every section: which section it goes in."""
    assert _error(tmp_path, "max_machines = 2\n") == (
        "config file FILE: unknown top-level setting 'max_machines' (it goes in [pool])"
    )


def test_a_binary_file_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    """A file that is not UTF-8: one line (it was a UnicodeDecodeError traceback)."""
    assert _error(tmp_path, b"\xff\xfe[pool]\n") == (
        "config file FILE is not valid TOML: not UTF-8 text (byte 0)"
    )


def test_a_directory_given_as_the_config_says_so(tmp_path: Path) -> None:
    """--config DIR: said to be a directory, with what to pass instead."""
    with pytest.raises(ConfigError) as info:
        load_config(config_file=tmp_path, env={})
    assert str(info.value) == (
        f"config file {tmp_path} is a directory: pass a TOML file (--config PATH)"
    )


def test_a_directory_named_conjure_toml_in_the_cwd_is_not_skipped(tmp_path: Path) -> None:
    """./conjure.toml that is a directory is an error, not silently no config."""
    (tmp_path / "conjure.toml").mkdir()
    with pytest.raises(ConfigError, match=r"conjure\.toml is a directory"):
        load_config(env={}, cwd=tmp_path)


def test_an_empty_file_is_the_defaults(tmp_path: Path) -> None:
    """An empty config file is the defaults (no error)."""
    path = tmp_path / "conjure.toml"
    path.write_text("")
    assert load_config(config_file=path, env={}) == load_config(env={}, cwd=tmp_path / "none")


def test_an_env_var_far_from_any_setting_says_where_they_are_listed() -> None:
    """An unknown CONJURE_* variable with no close name points at the list of settings."""
    with pytest.raises(ConfigError) as info:
        load_config(env={"CONJURE_ZORK": "1"}, cwd=Path("/nonexistent-dir-for-test"))
    assert str(info.value) == (
        "environment variable CONJURE_ZORK: unknown setting (docs/config.md lists every setting)"
    )


def test_a_bad_value_from_the_environment_names_its_variable(tmp_path: Path) -> None:
    """It said "bad configuration: pool.max_machines: ..." and no more: a user looked for
    that key in the config file."""
    with pytest.raises(ConfigError) as info:
        load_config(env={"CONJURE_POOL_MAX_MACHINES": "many"}, cwd=tmp_path)
    assert str(info.value) == (
        "bad configuration: pool.max_machines: expected an integer, got 'many'"
        " (set by environment variable CONJURE_POOL_MAX_MACHINES)"
    )


def test_a_bad_value_from_the_file_names_the_file(tmp_path: Path) -> None:
    """A bad value from the file names the file."""
    path = tmp_path / "conjure.toml"
    path.write_text("[pool]\nmax_machines = 0\n")
    with pytest.raises(ConfigError) as info:
        load_config(env={}, cwd=tmp_path)
    assert str(info.value) == (
        f"bad configuration: pool.max_machines: must be > 0, got 0 (set in config file {path})"
    )


def test_a_bad_value_the_environment_overrides_in_the_file_is_fine(tmp_path: Path) -> None:
    """A bad value in the file that the environment overrides is no error (attribution only)."""
    path = tmp_path / "conjure.toml"
    path.write_text("[pool]\nmax_machines = 0\n")
    config = load_config(env={"CONJURE_POOL_MAX_MACHINES": "2"}, cwd=tmp_path)
    assert config.pool.max_machines == 2


def test_a_bad_base_url_names_its_variable_once(tmp_path: Path) -> None:
    """It said "(RUNCOMFY_API_BASE_URL in the environment, if set)": a guess."""
    with pytest.raises(ConfigError) as info:
        load_config(env={"RUNCOMFY_API_BASE_URL": "notaurl"}, cwd=tmp_path)
    message = str(info.value)
    assert message.endswith("(set by environment variable RUNCOMFY_API_BASE_URL)")
    assert message.count("RUNCOMFY_API_BASE_URL") == 1
    assert "notaurl" not in message
