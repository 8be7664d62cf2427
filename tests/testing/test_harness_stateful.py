"""The stateful property test of the whole simulated system (issue 7)."""

from __future__ import annotations

import pytest

from conjure_actors.testing import ConjureStateMachine, stateful_settings

# Runs the whole system through dozens of steps per example (about 10 s on an idle machine):
# `just test-slow` and CI run it, the inner loop does not.
pytestmark = pytest.mark.slow

ConjureStateMachine.TestCase.settings = stateful_settings()
TestConjureStateMachine = ConjureStateMachine.TestCase
