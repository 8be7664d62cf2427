"""The CLI's start path imports only the dispatched command (issue 16: start time)."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

import eventlog
from conjure_actors import cli
from conjure_actors.domain.events import Event, SystemStarted

ROOT = Path(__file__).resolve().parent.parent

# Runs ``python -m conjure_actors ARGS`` in this interpreter (its help text discarded) and
# prints, as JSON, the names of every module loaded by then.
PROBE = """
import contextlib, io, json, runpy, sys
sys.argv = ["conjure_actors", *json.loads(sys.argv[1])]
with contextlib.redirect_stdout(io.StringIO()):
    try:
        runpy.run_module("conjure_actors", run_name="__main__", alter_sys=True)
    except SystemExit:
        pass
print(json.dumps(sorted(sys.modules)))
"""

# Never needed to print help: the simulator, the test harness and test libraries.
NEVER = ("conjure_actors.sim", "conjure_actors.testing", "pytest", "hypothesis")


def _modules_loaded_by(*args: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return list(json.loads(done.stdout))


def _under(modules: list[str], packages: tuple[str, ...]) -> list[str]:
    return [m for m in modules if any(m == p or m.startswith(p + ".") for p in packages)]


@pytest.mark.slow
def test_help_imports_no_command_and_no_io_library() -> None:
    """``--help`` loads no command module, no simulator or harness, no trio, httpx or rich."""
    loaded = _modules_loaded_by("--help")
    heavy = (*NEVER, "conjure_actors.commands.run", "conjure_actors.actors", "trio", "httpx")
    assert _under(loaded, (*heavy, "rich", "conjure_actors.runtime")) == []


@pytest.mark.slow
def test_replay_help_imports_replay_only() -> None:
    """``replay --help`` loads the replay command's parser alone: no other command, simulator
    or harness, and not the command's work (replay_impl) with eventlog, trio, msgspec and the
    domain, which load when the command runs."""
    loaded = _modules_loaded_by("replay", "--help")
    assert "conjure_actors.commands.replay" in loaded
    others = tuple(cli.command_module_name(n) for n in cli.COMMANDS if n != "replay")
    assert _under(loaded, (*NEVER, *others, "conjure_actors.actors", "httpx", "rich")) == []
    work = ("conjure_actors.commands.replay_impl", "conjure_actors.domain", "eventlog")
    assert _under(loaded, (*work, "trio", "msgspec", "attrs", "conjure_actors.runtime")) == []


@pytest.mark.slow
def test_replay_at_imports_no_trio(tmp_path: Path) -> None:
    """``replay LOG --at SEQ`` reads and folds without trio (eventlog loads its journal only
    when it is used, and ``follow`` imports trio only when it first waits)."""
    log = tmp_path / "run.log"
    with eventlog.open_writer(log, Event, sync="none") as writer:
        writer.append(SystemStarted(run_id="r", version="0", mode="simulated", at=1.0))
    loaded = _modules_loaded_by("replay", str(log), "--at", "1")
    assert "conjure_actors.commands.replay_impl" in loaded
    assert _under(loaded, ("trio", "eventlog.journal", "httpx")) == []


def test_listed_helps_match_the_command_modules() -> None:
    """Each one-line help that ``--help`` lists is the command module's own ``HELP``."""
    for name, help_text in cli.COMMANDS.items():
        module = importlib.import_module(cli.command_module_name(name))
        assert help_text == module.HELP, name


def test_dispatched_command_is_the_first_word_not_an_option() -> None:
    """The command is found after top-level flags; an unknown word or none gives no command."""
    assert cli.dispatched_command(["--debug", "replay", "--json", "x.log"]) == "replay"
    assert cli.dispatched_command(["--help"]) is None
    assert cli.dispatched_command(["nonsense", "--help"]) is None


def test_parser_for_every_command_by_default() -> None:
    """``build_parser()`` knows every command's arguments; ``build_parser("")`` none of them."""
    args = cli.build_parser().parse_args(["replay", "--json", "run.log"])
    assert args.json
    with pytest.raises(SystemExit):
        cli.build_parser("").parse_args(["replay", "--json", "run.log"])


def test_ctrl_c_while_the_command_loads_is_interrupted(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A Ctrl-C while the dispatched command's modules import (the first ~0.5 s) was a
    KeyboardInterrupt traceback: cli.main caught it around the command's main only."""

    def ctrl_c(name: str) -> object:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli.importlib, "import_module", ctrl_c)
    assert cli.main(["run"]) == cli.EXIT_INTERRUPTED
    assert capsys.readouterr().err == "interrupted\n"
    with pytest.raises(KeyboardInterrupt):
        cli.main(["--debug", "run"])


@pytest.mark.slow
def test_ctrl_c_while_python_m_loads_is_no_traceback(tmp_path: Path) -> None:
    """The same through ``python -m conjure_actors`` (the CLI's own import included): an
    import hook raises KeyboardInterrupt as the run command's module loads."""
    import os
    import textwrap

    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        textwrap.dedent(
            """
            import sys
            class _CtrlC:
                def find_spec(self, name, path=None, target=None):
                    if name in ("conjure_actors.commands.run", "conjure_actors.cli"):
                        raise KeyboardInterrupt
                    return None
            sys.meta_path.insert(0, _CtrlC())
            """
        )
    )
    done = subprocess.run(
        [sys.executable, "-m", "conjure_actors", "run"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": f"{hook}{os.pathsep}{ROOT}"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "Traceback" not in done.stderr, done.stderr
    assert done.stderr == "interrupted\n"
    assert done.returncode == 130
