"""The flags `run` and `serve` share, said by the flag the user gave: `--server-type bogus`
was "bad configuration: runcomfy.server_type: no price ..." (a key the user never wrote)."""

from __future__ import annotations

from pathlib import Path

import pytest

from conjure_actors.commands.cloud_args import load_cloud_config
from conjure_actors.errors import ConfigError, UsageError


def test_a_server_type_without_a_price_is_said_by_its_flag(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--server-type bogus: said by the flag, not by runcomfy.server_type."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError) as info:
        load_cloud_config(None, {"runcomfy.server_type": "bogus"})
    assert str(info.value).startswith("--server-type: no price for server type 'bogus'")


def test_the_same_type_in_the_file_is_said_by_its_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same type from the config file is still said by its key."""
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "c.toml"
    path.write_text('[runcomfy]\nserver_type = "bogus"\n')
    with pytest.raises(ConfigError) as info:
        load_cloud_config(str(path), {"runcomfy.server_type": None})
    assert str(info.value).startswith("bad configuration: runcomfy.server_type: no price")
