"""``python -m conjure_actors``: the command line."""

from conjure_actors.cli import main

raise SystemExit(main())
