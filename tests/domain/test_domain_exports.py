"""The domain package's public names (re-exported from its modules)."""

from __future__ import annotations

import importlib

import conjure_actors.domain as domain

MODULES = ("describe", "decide", "errors", "events", "prices", "state", "workflow")


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
