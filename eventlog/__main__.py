"""``python -m eventlog``: look at a log, or salvage one, without knowing its event types.

``inspect LOG``          one line saying what LOG holds (exit 0; 1 if it is corrupt; 2 if it
                         is missing, not a log, or from a newer eventlog)
``salvage SRC DST``      copy the intact records of SRC into the new log DST (payloads as
                         they are, each with its seq and time: the seqs lost are gaps) and
                         say what was skipped and which seqs were lost
"""

from __future__ import annotations

import argparse
import sys

from .errors import EventLogError
from .reader import inspect
from .salvage import salvage

EXIT_OK = 0
EXIT_CORRUPT = 1
EXIT_USAGE = 2


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = argparse.ArgumentParser(prog="python -m eventlog", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    look = commands.add_parser("inspect", help="say what a log file holds")
    look.add_argument("log")
    save = commands.add_parser("salvage", help="copy the intact records into a new log")
    save.add_argument("src")
    save.add_argument("dst")
    args = parser.parse_args(argv)
    if args.command == "inspect":
        status = inspect(args.log)
        print(status.message)
        if status.state == "corrupt":
            return EXIT_CORRUPT
        if status.state in ("missing", "not-a-log", "newer-version"):
            return EXIT_USAGE
        return EXIT_OK
    try:
        report = salvage(args.src, args.dst, None)
    except (EventLogError, OSError) as exc:
        print(f"salvage failed: {exc}", file=sys.stderr)
        return EXIT_USAGE
    skipped = sum(length for _, length in report.skipped)
    lost = _ranges(report.lost_seqs) or "none"
    if report.damaged_tail:
        lost += f" (and any after seq {report.last_source_seq}, in the damaged bytes at the end)"
    print(
        f"salvaged {report.copied} records of {args.src} into {args.dst}, each with its seq;"
        f" skipped {skipped} damaged bytes in {len(report.skipped)} place(s); lost seqs: {lost}"
    )
    return EXIT_OK


def _ranges(seqs: list[int]) -> str:
    """``[1, 2, 3, 7]`` -> ``"1-3, 7"``."""
    out: list[str] = []
    for seq in seqs:
        if out and seq == int(out[-1].rpartition("-")[2]) + 1:
            out[-1] = f"{out[-1].partition('-')[0]}-{seq}"
        else:
            out.append(str(seq))
    return ", ".join(out)


if __name__ == "__main__":
    sys.exit(main())
