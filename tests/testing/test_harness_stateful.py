"""The stateful property test of the whole simulated system (issue 7)."""

from __future__ import annotations

from conjure_actors.testing import ConjureStateMachine, stateful_settings

ConjureStateMachine.TestCase.settings = stateful_settings()
TestConjureStateMachine = ConjureStateMachine.TestCase
