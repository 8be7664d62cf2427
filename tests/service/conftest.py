"""Fixtures of the job service tests (helpers live in ``service_helpers``)."""

from service_helpers import sdk, sim_config

__all__ = ["sdk", "sim_config"]
