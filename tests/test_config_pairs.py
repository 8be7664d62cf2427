"""Settings valid each alone that contradict each other are refused at start, in one line
naming each and where it was set (QA11 findings 9, 9b): ``pool.renew_margin`` at or above
``pool.lease_seconds`` was accepted, and every poll renewed every machine's lease (a
RunComfy request each, the account's 1 request/s spent on them); a ``pool.poll_interval``
longer than the lease let machines run out their first lease before a poll saw them
(billed, never used, launched again each poll)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conjure_actors.cli import main
from conjure_actors.config import load_config
from conjure_actors.errors import ConfigError

WORKFLOW = Path(__file__).resolve().parents[1] / "conjure_actors" / "workflows" / "invert_save.json"


def _refused(tmp_path: Path, toml: str = "", env: dict[str, str] | None = None) -> str:
    path = tmp_path / "conjure.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as info:
        load_config(config_file=path, env=env or {})
    message = str(info.value)
    assert "\n" not in message
    return message.replace(str(path), "FILE")


def test_a_renew_margin_at_or_above_the_lease_is_refused_naming_both(tmp_path: Path) -> None:
    """QA11 9: renew_margin 700 over a lease of 600, both from the file."""
    message = _refused(tmp_path, "[pool]\nrenew_margin = 700\nlease_seconds = 600\n")
    assert message.startswith(
        "bad configuration: pool.renew_margin = 700 (set in config file FILE) is not less"
        " than pool.lease_seconds = 600 (set in config file FILE): "
    )
    assert "every poll would renew every machine's lease" in message


def test_a_lease_shorter_than_the_default_margin_says_the_margin_is_the_default(
    tmp_path: Path,
) -> None:
    """Only the lease set (120 s, from the environment) against the default margin (180 s):
    the line says which one the user set and that the other is the default."""
    message = _refused(tmp_path, env={"CONJURE_POOL_LEASE_SECONDS": "120"})
    assert message.startswith(
        "bad configuration: pool.renew_margin = 180 (the default) is not less than"
        " pool.lease_seconds = 120 (set by environment variable CONJURE_POOL_LEASE_SECONDS)"
    )


def test_polls_further_apart_than_the_lease_less_its_margin_are_refused(tmp_path: Path) -> None:
    """QA11 9b: lease 60, margin 20, poll 70: machines ran out their first lease unseen."""
    message = _refused(
        tmp_path, "[pool]\nlease_seconds = 60\nrenew_margin = 20\npoll_interval = 70\n"
    )
    assert message.startswith(
        "bad configuration: pool.poll_interval = 70 (set in config file FILE) is not less"
        " than pool.lease_seconds - pool.renew_margin = 40, with pool.lease_seconds = 60 (set"
        " in config file FILE) and pool.renew_margin = 20 (set in config file FILE): "
    )
    assert "first lease can end before a poll sees it Ready" in message


def test_polls_further_apart_than_the_margin_are_refused(tmp_path: Path) -> None:
    """poll 200 against the default margin (180): a poll finding 181 s left does not renew,
    and the next comes after the lease ended, under the job."""
    message = _refused(tmp_path, env={"CONJURE_POOL_POLL_INTERVAL": "200"})
    assert message.startswith(
        "bad configuration: pool.poll_interval = 200 (set by environment variable"
        " CONJURE_POOL_POLL_INTERVAL) is not less than pool.renew_margin = 180 (the default): "
    )
    assert "run out between two polls" in message


_DURATION = st.floats(min_value=0.01, max_value=86400, allow_nan=False)


@given(lease=_DURATION, margin=_DURATION, poll=_DURATION)
def test_a_loaded_config_renews_each_lease_in_time_and_not_at_every_poll(
    lease: float, margin: float, poll: float
) -> None:
    """Whatever the three: either they load, and then a poll that finds more than the margin
    left is followed by one before the lease ends (poll < margin) and a lease just renewed
    is not renewed again at the next poll (poll < lease - margin); or the line names the
    setting at fault. Nothing else is refused."""
    env = {
        "CONJURE_POOL_LEASE_SECONDS": repr(lease),
        "CONJURE_POOL_RENEW_MARGIN": repr(margin),
        "CONJURE_POOL_POLL_INTERVAL": repr(poll),
    }
    sound = poll < margin and poll < lease - margin
    if not sound:
        with pytest.raises(ConfigError, match=r"^bad configuration: pool\."):
            load_config(env=env, cwd=Path("/nonexistent"))
        return
    pool = load_config(env=env, cwd=Path("/nonexistent")).pool
    assert (pool.lease_seconds, pool.renew_margin, pool.poll_interval) == (lease, margin, poll)


def test_run_refuses_it_in_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`run --config` with QA11 9's file: exit 2, one line, before anything runs."""
    config = tmp_path / "c1.toml"
    config.write_text("[pool]\nrenew_margin = 700\nlease_seconds = 600\n")
    monkeypatch.chdir(tmp_path)
    for name in ("RUNCOMFY_USER_ID", "RUNCOMFY_API_TOKEN", "RUNCOMFY_API_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    code = main(["run", str(WORKFLOW), "--config", str(config), "--log", str(tmp_path / "x.log")])
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert "pool.renew_margin = 700" in err
    assert "pool.lease_seconds = 600" in err
    assert not (tmp_path / "x.log").exists()
