"""The settings `run` and `serve` share: which cloud, which machines, what budget.

Both commands take the same flags for them and map them onto the config's keys the same way
(defaults < TOML file < environment < flags: :func:`conjure_actors.config.load_config`).
"""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_cloud_arguments", "cloud_flags"]


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
