"""`python -m bkit.venue`: the runnable paper-trading venue (see `bkit.venue.cli`)."""

from bkit.venue.cli import main

raise SystemExit(main())
