"""``run --resume LOG`` with an option of a new run (a workflow, --jobs, --log...) is one
line, exit 2: it used to drop the option and "succeed" by summing up the old run."""

from __future__ import annotations

from pathlib import Path

import pytest
from bad_input_support import one_line_usage_error

from conjure_actors.cli import main

pytestmark = pytest.mark.usefixtures("no_credentials")


@pytest.mark.parametrize(
    ("given", "named"),
    [
        (["wf.json"], "WORKFLOW.json"),
        (["--image", "a.png"], "--image"),
        (["--prompt", "a cat"], "--prompt"),
        (["--set", "3.seed=1"], "--set"),
        (["--jobs", "3"], "--jobs"),
        (["--jobs", "1"], "--jobs"),
        (["--seed", "7"], "--seed"),
        (["--priority", "0"], "--priority"),
    ],
)
def test_an_option_of_a_new_run_is_refused_with_resume(
    capsys: pytest.CaptureFixture[str], given: list[str], named: str
) -> None:
    """Each option that makes a new run's jobs is named, not dropped."""
    code = main(["run", "--resume", "x.log", *given])
    err = one_line_usage_error(code, capsys.readouterr().err)
    assert err.startswith(f"error: {named} cannot go with --resume x.log: ")


def test_another_log_is_refused_with_resume(capsys: pytest.CaptureFixture[str]) -> None:
    """run --resume X.log --log other.log wrote X.log and never other.log."""
    code = main(["run", "--resume", "x.log", "--jobs", "3", "--log", "other.log"])
    err = one_line_usage_error(code, capsys.readouterr().err)
    assert err.startswith("error: --log other.log cannot go with --resume x.log: ")
    assert not Path("other.log").exists()
