"""Configuration precedence, validation messages and secret redaction."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conjure_actors.config import Config, Secret, load_config, structure_config
from conjure_actors.errors import ConfigError


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "conjure.toml"
    path.write_text(text)
    return path


def test_defaults_without_any_source(tmp_path: Path) -> None:
    """No file, no environment, no flags: the documented defaults and simulated mode."""
    config = load_config(env={}, cwd=tmp_path)
    assert config == Config()
    assert config.mode == "simulated"


def test_precedence_file_then_env_then_flags(tmp_path: Path) -> None:
    """A flag beats the environment, which beats the TOML file, which beats the default."""
    path = _write(tmp_path, "[pool]\nmax_machines = 2\nidle_timeout = 30\n[budget]\nusd = 1.0\n")
    env = {"CONJURE_POOL_MAX_MACHINES": "3", "CONJURE_BUDGET_USD": "4"}
    config = load_config(config_file=path, env=env, flags={"budget.usd": 9.5})
    assert config.pool.max_machines == 3
    assert config.pool.idle_timeout == 30.0
    assert config.budget.usd == 9.5


def test_default_file_in_cwd_is_read(tmp_path: Path) -> None:
    """``./conjure.toml`` is read when no ``--config`` is given."""
    _write(tmp_path, '[runcomfy]\nserver_type = "large"\n')
    assert load_config(env={}, cwd=tmp_path).runcomfy.server_type == "large"


def test_runcomfy_env_vars_select_runcomfy_mode(tmp_path: Path) -> None:
    """RUNCOMFY_USER_ID + RUNCOMFY_API_TOKEN switch to RunComfy; the base URL is overridable."""
    env = {
        "RUNCOMFY_USER_ID": "u1",
        "RUNCOMFY_API_TOKEN": "tok-123",
        "RUNCOMFY_API_BASE_URL": "http://127.0.0.1:9/",
    }
    config = load_config(env=env, cwd=tmp_path)
    assert config.mode == "runcomfy"
    assert config.runcomfy.base_url == "http://127.0.0.1:9/"
    assert config.runcomfy.api_token.reveal() == "tok-123"


def test_token_never_in_repr(tmp_path: Path) -> None:
    """The token appears in no repr or str of the config."""
    config = load_config(env={"RUNCOMFY_USER_ID": "u", "RUNCOMFY_API_TOKEN": "sekrit-xyz"})
    assert "sekrit-xyz" not in repr(config)
    assert "sekrit-xyz" not in str(config.runcomfy.api_token)
    assert "sekrit-xyz" not in f"{config.runcomfy}"


@pytest.mark.parametrize(
    ("tree", "expected"),
    [
        ({"pool": {"max_machines": "many"}}, "pool.max_machines: expected an integer"),
        ({"pool": {"nope": 1}}, "pool: unknown key(s) nope"),
        ({"pool": {"max_machines": 0}}, "pool.max_machines: must be > 0"),
        ({"budget": {"usd": -1}}, "budget.usd: must be >= 0"),
        ({"zzz": 1}, "config: unknown key(s) zzz"),
        ({"runcomfy": {"plan": "gold"}}, "runcomfy.plan: must be one of hobby, pro"),
        ({"pool": 3}, "pool: expected a table"),
    ],
)
def test_bad_value_names_the_key(tree: dict[str, object], expected: str) -> None:
    """Each bad key or value is one line naming it."""
    with pytest.raises(ConfigError) as info:
        structure_config(tree)
    message = str(info.value)
    assert expected in message
    assert "\n" not in message


def test_unknown_conjure_env_var_is_an_error(tmp_path: Path) -> None:
    """A misspelt CONJURE_* variable is reported, not ignored."""
    with pytest.raises(ConfigError, match=r"pool: unknown key\(s\) max_machinez"):
        load_config(env={"CONJURE_POOL_MAX_MACHINEZ": "2"}, cwd=tmp_path)


def test_invalid_toml_is_one_line(tmp_path: Path) -> None:
    """A TOML syntax error names the file."""
    path = _write(tmp_path, "[pool\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(config_file=path, env={})


def test_missing_config_file(tmp_path: Path) -> None:
    """An explicit --config that does not exist is an error."""
    with pytest.raises(ConfigError, match="not found"):
        load_config(config_file=tmp_path / "absent.toml", env={})


@given(st.text(min_size=1, max_size=30))
def test_secret_repr_hides_any_value(value: str) -> None:
    """Whatever the token, repr and str show only stars."""
    secret = Secret(value)
    assert repr(secret) == "Secret('***')"
    assert secret.reveal() == value


@given(st.integers(min_value=1, max_value=1000))
def test_env_integer_round_trips(n: int) -> None:
    """Any positive integer given as text in the environment structures to that integer."""
    config = load_config(env={"CONJURE_POOL_JOBS_PER_MACHINE": str(n)}, cwd=Path("/nonexistent"))
    assert config.pool.jobs_per_machine == n


def _config_keys(cls: type = Config, prefix: str = "") -> set[str]:
    import attrs

    keys: set[str] = set()
    for field in attrs.fields(cls):
        if isinstance(field.type, type) and attrs.has(field.type) and field.type is not Secret:
            keys |= _config_keys(field.type, prefix + field.name + ".")
        else:
            keys.add(prefix + field.name)
    return keys


def test_docs_list_every_setting_and_only_real_ones() -> None:
    """docs/config.md's table names every setting there is, and nothing else."""
    import re

    doc = (Path(__file__).resolve().parents[1] / "docs" / "config.md").read_text()
    documented = set(re.findall(r"^\| `([a-z_.]+)` \|", doc, flags=re.MULTILINE))
    assert documented == _config_keys()


def test_documented_example_toml_is_valid(tmp_path: Path) -> None:
    """The example conjure.toml in docs/config.md loads."""
    doc = (Path(__file__).resolve().parents[1] / "docs" / "config.md").read_text()
    example = doc.split("```toml\n", 1)[1].split("```", 1)[0]
    config = load_config(config_file=_write(tmp_path, example), env={})
    assert (config.pool.max_machines, config.budget.usd) == (3, 5.0)
