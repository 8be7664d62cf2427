"""The settings `run` and `serve` share: which cloud, which machines, what budget.

Both commands take the same flags for them and map them onto the config's keys the same way
(defaults < TOML file < environment < flags: :func:`conjure_actors.config.load_config`).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import trio

from conjure_actors.config import (
    Config,
    load_config,
    require_both_credentials,
    require_priced_server_type,
)
from conjure_actors.errors import ConfigError, UsageError

if TYPE_CHECKING:
    from conjure_actors.clients.comfyui import ComfyUIClient
    from conjure_actors.domain.preflight import PromptRefusal
    from conjure_actors.domain.workflow import Catalog

__all__ = [
    "VersionCatalogue",
    "add_cloud_arguments",
    "cloud_flags",
    "load_cloud_config",
    "version_catalogue",
]


def add_cloud_arguments(parser: argparse.ArgumentParser) -> None:
    """The cloud, machine and budget flags, and ``--config``."""
    parser.add_argument("--comfyui-url", metavar="URL", help="a ComfyUI you run (no machines)")
    parser.add_argument("--server-type", help="RunComfy server type (default medium)")
    parser.add_argument("--workflow-version", help="RunComfy workflow version id")
    parser.add_argument("--max-machines", type=int, help="machines at most at once")
    parser.add_argument("--budget", type=float, metavar="USD", help="spending limit")
    parser.add_argument(
        "--idle-timeout", type=float, metavar="S", help="stop a machine idle this long"
    )
    parser.add_argument("--config", metavar="PATH", help="TOML config (default ./conjure.toml)")


def cloud_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The config keys those flags set (``None``: not given, the lower layers decide)."""
    return {
        "comfyui_url": args.comfyui_url,
        "runcomfy.server_type": args.server_type,
        "runcomfy.workflow_version": args.workflow_version,
        "pool.max_machines": args.max_machines,
        "budget.usd": args.budget,
        "pool.idle_timeout": args.idle_timeout,
    }


def load_cloud_config(config_file: str | None, flags: dict[str, Any]) -> Config:
    """The config (``load_config``) with ``flags`` on top; a bad value a flag gave is said by
    that flag (``--max-machines: must be > 0, got 0``), not by the key it sets
    (``pool.max_machines``), which the same value in the file is still said by."""
    sources: dict[str, str] = {}
    try:
        config = load_config(config_file=config_file, flags=flags, sources=sources)
        if not config.comfyui_url:  # half a credential set: named as the user set it
            require_both_credentials(config.runcomfy, sources)
        if config.mode != "comfyui":  # (run and serve check it again: the same answer)
            require_priced_server_type(config)  # --server-type bogus: said by the flag
    except ConfigError as exc:
        raise _named_by_flag(exc, flags) from None
    return config


def _named_by_flag(exc: Exception, flags: dict[str, Any]) -> Exception:
    """A bad value the command line gave, said by its flag (``--max-machines 0``), not by
    the config key it sets (``pool.max_machines``): flags win over the file, so a key a
    given flag sets holds the flag's value. Any other configuration error as it is."""
    text = str(exc)
    for key, value in flags.items():
        prefix = f"bad configuration: {key}: "
        if value is not None and text.startswith(prefix):
            flag = (
                "--budget" if key == "budget.usd" else "--" + key.split(".")[-1].replace("_", "-")
            )
            return UsageError(f"{flag}: {text.removeprefix(prefix)}")
    return exc


# RunComfy's API cannot list the nodes of a workflow version; a running machine of it can
# (its ComfyUI's /object_info). `machine up` records the catalogue from the dev machine; a
# run (or serve) records it from its own first machine: the first prompt about to be
# submitted fetches it from the machine it goes to, keeps it where `machine up` does, and
# every prompt of the run is checked against it before its POST. So a workflow the version
# cannot run fails with the pre-flight's line without the GPU running it, and the next runs
# refuse it before launching anything. A kept catalogue is checked too: the machine is the
# truth for its version, so one that differs from it (kept by an older run, or the version's
# image changed) is replaced at once, and the run's prompts are checked against the
# machine's. The fetch failing fails no job: said once, the run goes on with the kept
# catalogue if there is one, else unchecked, as before.


class VersionCatalogue:
    """The node catalogue of RunComfy workflow ``version``: the one ``kept`` (an earlier
    run's) until the version's first machine of this run gave its own, then that one
    (``refusal`` is the actors' ``PromptCheck``). ``note`` says a failed fetch, once, and a
    kept catalogue the machine's replaced."""

    def __init__(
        self,
        path: Path,
        version: str,
        note: Callable[[str], None],
        kept: dict[str, Any] | None = None,
    ) -> None:
        from conjure_actors.domain.workflow import catalog_from_object_info

        self.path = path
        self.version = version
        self._note = note
        self._kept = kept
        self._catalog: Catalog | None = catalog_from_object_info(kept) if kept else None
        self._fetched = False
        self._given_up = False
        self._lock = trio.Lock()

    def __repr__(self) -> str:
        return f"VersionCatalogue({self.version!r}, fetched={self._fetched})"

    @property
    def fetched(self) -> bool:
        """Whether a machine of the version gave its catalogue in this run."""
        return self._fetched

    @property
    def catalog(self) -> Catalog | None:
        """The catalogue prompts are checked against: the machine's once fetched, else the
        kept one (None: neither)."""
        return self._catalog

    async def refusal(self, client: ComfyUIClient, prompt: dict[str, Any]) -> PromptRefusal | None:
        """None to submit ``prompt``; else why the version's catalogue refuses it."""
        from conjure_actors.domain.preflight import check_prompt

        async with self._lock:  # one fetch, whatever the jobs waiting on it
            if not self._fetched and not self._given_up:
                await self._fetch(client)
        if self._catalog is None:
            return None
        refused = check_prompt(prompt, self._catalog)
        if refused is None:
            return None
        source = "from its machine" if self._fetched else "kept from an earlier run"
        by = f"workflow version {self.version}'s node catalogue ({source})"
        return attrs.evolve(refused, by=by)

    async def _fetch(self, client: ComfyUIClient) -> None:
        from conjure_actors.clients.errors import ClientError
        from conjure_actors.commands.validate import write_catalogue
        from conjure_actors.domain.workflow import catalog_from_object_info

        fallback = (
            "the jobs are checked against the one kept from an earlier run"
            if self._catalog is not None
            else "the jobs run without that check"
        )
        try:
            info = await client.object_info()
            catalog = catalog_from_object_info(info)
        except (ClientError, ValueError, TypeError, KeyError) as exc:
            self._given_up = True
            why = (
                client.scrub(str(exc))[:200] if isinstance(exc, ClientError) else "not a catalogue"
            )
            self._note(
                f"workflow version {self.version}: its machine did not give its node catalogue"
                f" ({why}); {fallback}"
            )
            return
        if not catalog:
            self._given_up = True
            self._note(
                f"workflow version {self.version}: its machine's node catalogue is empty;"
                f" {fallback}"
            )
            return
        if info != self._kept:
            await trio.to_thread.run_sync(write_catalogue, self.path, info)
            if self._kept is not None:
                self._note(
                    f"workflow version {self.version}: its machine's node catalogue differs"
                    " from the one kept from an earlier run; the machine's replaces it (jobs"
                    " are checked against it)"
                )
        self._kept = None  # not needed any more
        self._catalog = catalog
        self._fetched = True


def version_catalogue(config: Config, note: Callable[[str], None]) -> VersionCatalogue | None:
    """For a RunComfy run: the check against the version's catalogue, the kept one (if any)
    until the run's first machine gives its own (None: another target, or no version)."""
    from conjure_actors.commands.validate import catalogue_path, read_catalogue

    version = config.runcomfy.workflow_version
    if config.mode != "runcomfy" or not version:
        return None
    path = catalogue_path(config, version)
    return VersionCatalogue(path, version, note, read_catalogue(path))
