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
        ({"pool": {"nope": 1}}, "[pool] has no setting 'nope'"),
        ({"pool": {"max_machines": 0}}, "pool.max_machines: must be > 0"),
        ({"budget": {"usd": -1}}, "budget.usd: must be a number from 0 to 1000000"),
        ({"zzz": 1}, "unknown top-level setting 'zzz'"),
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
    with pytest.raises(
        ConfigError,
        match=r"^environment variable CONJURE_POOL_MAX_MACHINEZ: unknown setting \(did you mean"
        r" CONJURE_POOL_MAX_MACHINES\?\)$",
    ):
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


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("CONJURE_POOL_LEASE_SECONDS", "inf", "pool.lease_seconds: must be a finite number"),
        ("CONJURE_POOL_LEASE_SECONDS", "1e308", "pool.lease_seconds: must be at most 86400"),
        ("CONJURE_POOL_READY_TIMEOUT", "inf", "pool.ready_timeout: must be a finite number"),
        ("CONJURE_POOL_POLL_INTERVAL", "inf", "pool.poll_interval: must be a finite number"),
        ("CONJURE_POOL_IDLE_TIMEOUT", "1e308", "pool.idle_timeout: must be at most 2.592e+06"),
        ("CONJURE_RETRY_TOTAL_TIMEOUT", "inf", "retry.total_timeout: must be a finite number"),
        ("CONJURE_RETRY_FACTOR", "1e300", "retry.factor: must be at most 10"),
        ("CONJURE_BUDGET_USD", "1e300", "budget.usd: must be a number from 0 to 1000000"),
        ("CONJURE_BUDGET_USD", "inf", "budget.usd: must be a number from 0 to 1000000"),
    ],
)
def test_an_endless_or_huge_number_names_its_setting(name: str, value: str, expected: str) -> None:
    """Infinity passes every lower bound and a huge number overflows a deadline or a cost in
    integer micros, far from the setting (a crash loop of the actors): refused at load."""
    with pytest.raises(ConfigError) as info:
        load_config(env={name: value}, cwd=Path("/nonexistent"))
    assert expected in str(info.value)


def test_the_largest_budget_is_the_http_routes() -> None:
    """--budget and budget.usd take what PUT /api/conjure/budget takes: up to $1,000,000."""
    from conjure_actors.domain.prices import MAX_BUDGET_USD

    env = {"CONJURE_BUDGET_USD": str(MAX_BUDGET_USD)}
    assert load_config(env=env, cwd=Path("/nonexistent")).budget.usd == MAX_BUDGET_USD


@pytest.mark.parametrize("token", ["tok-123\n", " tok-123", "tok 123", "tök-123", "tok\x00"])
def test_a_token_that_cannot_go_in_a_header_is_refused_unsaid(token: str) -> None:
    """A pasted token with a newline (or a non-ASCII one) would fail every request deep in
    HTTP, retried as "connection lost": refused at once, naming the variable, not the value."""
    env = {"RUNCOMFY_USER_ID": "u1", "RUNCOMFY_API_TOKEN": token}
    with pytest.raises(ConfigError) as info:
        load_config(env=env, cwd=Path("/nonexistent"))
    message = str(info.value)
    assert "RUNCOMFY_API_TOKEN" in message
    assert "tok" not in message.replace("api_token", "").replace("API_TOKEN", "")
    assert "\n" not in message


def test_a_user_id_with_whitespace_is_refused() -> None:
    """The user id goes into every request's path: a trailing newline is refused too."""
    env = {"RUNCOMFY_USER_ID": "u1\n", "RUNCOMFY_API_TOKEN": "tok"}
    with pytest.raises(ConfigError, match=r"runcomfy\.user_id: .* RUNCOMFY_USER_ID"):
        load_config(env=env, cwd=Path("/nonexistent"))


def test_a_token_of_the_wrong_type_is_not_echoed(tmp_path: Path) -> None:
    """api_token = 12345 in the TOML: 'expected a string', without the value."""
    with pytest.raises(ConfigError) as info:
        structure_config({"runcomfy": {"api_token": 12345}})
    assert "12345" not in str(info.value)


@pytest.mark.parametrize("url", ["notaurl", "ftp://x", "http://", "http://h:99999", "http://h /"])
def test_a_base_url_that_is_not_http_is_refused_at_once(url: str) -> None:
    """RUNCOMFY_API_BASE_URL=notaurl was retried ~30 s as 'connection lost'."""
    with pytest.raises(ConfigError, match=r"runcomfy.base_url: not an http:// or https:// URL"):
        load_config(env={"RUNCOMFY_API_BASE_URL": url}, cwd=Path("/nonexistent"))


@given(st.floats(min_value=1, max_value=86400))
def test_any_lease_up_to_a_day_loads(lease: float) -> None:
    """Every finite lease from 1 s to a day is a valid setting (with a renewal margin and a
    poll interval that fit in it: tests/test_config_pairs.py)."""
    env = {
        "CONJURE_POOL_LEASE_SECONDS": repr(lease),
        "CONJURE_POOL_RENEW_MARGIN": repr(lease / 3),
        "CONJURE_POOL_POLL_INTERVAL": repr(lease / 4),
    }
    assert load_config(env=env, cwd=Path("/nonexistent")).pool.lease_seconds == lease


def test_serve_token_variable_is_not_a_setting(tmp_path: Path) -> None:
    """CONJURE_TOKEN is serve's --token: load_config called it an unknown setting, so the
    documented `CONJURE_TOKEN=... serve` exited 2 before it started."""
    env = {"CONJURE_TOKEN": "t0k", "CONJURE_HARNESS_FAILURES": str(tmp_path)}
    assert load_config(env=env, cwd=tmp_path) == Config()
