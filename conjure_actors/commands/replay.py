"""``python -m conjure_actors replay LOG``: the debugger, the audit trail and the bill.

Without options it prints the timeline (seq, time, job or machine, one-line summary).

- ``--at SEQ`` / ``--at TIME`` prints the whole state at that point (jobs, machines,
  ledger, budget, pending intents, actors); TIME is ISO-8601 (UTC unless it says) or epoch
  seconds, compared with the events' own time (record numbers start at 1: ``--at -1`` or
  ``0`` is refused, not read as a time in 1970; a SEQ past the log's end shows its last
  state, said on stderr); ``--job ID`` narrows to one job;
- ``--json`` prints the state as JSON, with the bill as of that point (``billed``, what the
  text view's "cost so far" and "billed by" show; schema in ``docs/replay-json.md``);
- ``--follow`` tails a live log until its run has stopped (``SystemStopped``) and closed the
  log, after its last record (the actors' ``stopped`` records come after the run's), or
  until Ctrl-C. A log that no process writes although its run has not stopped (its writer
  crashed or was killed: a ``kill -9``, an OOM kill) is not waited on for ever: once its
  lock is free (at start, or after a quiet poll), its last records are printed, then one
  line names the process that was writing it, says it is gone and what finishes the log
  (``serve --log LOG`` or ``run --resume LOG``, as ``status LOG`` says it), exit 1; a
  restart that took the log up meanwhile is followed on, a later one is not (follow again).
  A copy of a log that a live process writes is said so, exit 1. A run started on another
  host is followed on, said once on stderr (its process and lock are not seen from here);
- ``--check`` verifies seq contiguity, that folding twice gives equal states, and that the
  snapshots a restart starts from (``LOG.snapshots/``, and ``LOG.snapshot`` if any) agree
  with the records, saying how many it checked; exit 1 naming the first divergence. On a
  log a run or serve is writing it checks the records written when it read the log, and
  says so;
- ``--diff OTHER`` prints where two logs' states first differ (exit 1 if they do);
- ``--follow --json`` writes one JSON object per record (as ``run --json`` writes events),
  ``--check --json`` its verdict as one object, also of a log it could not check (with its
  torn tail, if any: docs/replay-json.md). An option the chosen
  mode would not use (``--diff --json``, ``--follow --at``) is refused, not ignored.

A log without a record (0 bytes, or a header only) is refused in one line (exit 2) by every
mode but ``--follow``, which waits for a run's first record as it waits for a log that does
not exist yet. A torn tail (a crash mid-append) is reported on stderr and the replay goes on
up to it; damage in the middle of the log exits 1 with its byte offset, never a traceback
(``status LOG`` exits 1 too), but ``--at`` a point before the damage answers from the intact
records before it, the damage said on stderr.
A record a newer conjure_actors wrote is refused in one line (exit 2: upgrade conjure_actors):
before anything is printed by the modes that fold or check the log; the timeline, a stream,
prints the records before it (as before damage), then says it stops there (refusing first
would read the whole log before its first line; ``--follow`` stops so where it meets one).

The CLI imports this module to build the parser (``replay --help`` included), so it imports
nothing but argparse: the work, with eventlog, the domain and msgspec, is in
:mod:`conjure_actors.commands.replay_impl`, imported when the command runs.
"""

from __future__ import annotations

import argparse

HELP = "replay an event log: timeline, state at any point, JSON, follow, check, diff"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("log", metavar="LOG", help="the event log of a run")
    parser.add_argument(
        "--at",
        metavar="SEQ|TIME",
        help="print the state after record SEQ, or as of TIME (ISO-8601, or epoch seconds >= 1e9)",
    )
    parser.add_argument("--job", metavar="ID", help="only this job (timeline and state)")
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the state as JSON (--follow: one object per record; --check: the verdict)",
    )
    parser.add_argument(
        "--follow",
        action="store_true",
        help="tail a live log until its run stops and closes it (or Ctrl-C); exit 1,"
        " saying what finishes it, once its writer is gone with its run not stopped"
        " (crashed or killed)",
    )
    parser.add_argument(
        "--poll", type=float, default=0.2, metavar="SECONDS", help="--follow poll interval"
    )
    parser.add_argument("--check", action="store_true", help="verify the log; exit 1 if not")
    parser.add_argument(
        "--snapshot",
        metavar="PATH",
        help="snapshot to verify with --check (default: those a restart starts from, in"
        " LOG.snapshots/, and LOG.snapshot if it exists)",
    )
    parser.add_argument("--diff", metavar="OTHER", help="where this log and OTHER first differ")


def main(args: argparse.Namespace) -> int:
    from conjure_actors.commands import replay_impl

    return replay_impl.main(args)
