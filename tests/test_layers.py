"""The import contracts of pyproject.toml (DESIGN.md "Layout"), checked by import-linter."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _contracts() -> dict[str, dict[str, Any]]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return {c["id"]: c for c in config["tool"]["importlinter"]["contracts"]}


@pytest.mark.slow
def test_import_contracts_are_kept() -> None:
    """``lint-imports`` finds every contract kept (layers, pure domain, generic runtime...)."""
    lint_imports = Path(sys.executable).parent / "lint-imports"
    done = subprocess.run(
        [str(lint_imports), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert " 0 broken." in done.stdout, done.stdout


def test_domain_contract_forbids_io_libraries() -> None:
    """The pure-domain contract names the I/O and nondeterminism libraries and the upper layers."""
    forbidden = set(_contracts()["domain-pure"]["forbidden_modules"])
    needed = {"httpx", "trio", "socket", "random", "time", "conjure_actors.runtime"}
    needed |= {"conjure_actors.actors", "conjure_actors.clients", "conjure_actors.sim"}
    assert needed <= forbidden, needed - forbidden


def test_start_path_contract_forbids_simulator_and_harness() -> None:
    """actors/ and the CLI may not import sim/, testing/, hypothesis or pytest."""
    contract = _contracts()["no-sim-in-production"]
    assert {"conjure_actors.actors", "conjure_actors.cli"} <= set(contract["source_modules"])
    assert {"conjure_actors.sim", "conjure_actors.testing"} <= set(contract["forbidden_modules"])
