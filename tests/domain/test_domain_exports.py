"""The domain package's public names (re-exported from its modules)."""

from __future__ import annotations

import importlib

import conjure_actors.domain as domain
from conjure_actors.domain import cost_policy, decide, machines_policy

MODULES = (
    "cost_policy",
    "decide",
    "describe",
    "errors",
    "events",
    "machines_policy",
    "prices",
    "state",
    "workflow",
)


def test_package_all_names_resolve() -> None:
    """Every name in ``conjure_actors.domain.__all__`` exists and is sorted uniquely."""
    assert len(set(domain.__all__)) == len(domain.__all__)
    for name in domain.__all__:
        assert hasattr(domain, name), name


def test_module_all_names_resolve() -> None:
    """Every module's ``__all__`` names exist in it."""
    for module_name in MODULES:
        module = importlib.import_module(f"conjure_actors.domain.{module_name}")
        for name in getattr(module, "__all__", ()):
            assert hasattr(module, name), f"{module_name}.{name}"


def test_each_machine_and_cost_decision_lives_in_one_module() -> None:
    """No machine or cost policy is also defined in ``decide`` (one place per decision)."""
    policies = set(machines_policy.__all__) | set(cost_policy.__all__)
    assert sorted(policies & set(dir(decide))) == []
