"""``python -m conjure_actors``: the command line."""

import sys

try:  # a Ctrl-C while the CLI itself loads: "interrupted" (130), as cli.main says it later
    from conjure_actors.cli import main

    code = main()
except KeyboardInterrupt:
    if "--debug" in sys.argv[1:]:
        raise
    print("interrupted", file=sys.stderr)
    code = 130

raise SystemExit(code)
