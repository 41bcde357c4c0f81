"""`python -m bkit.cli`."""

import sys

from bkit.cli import main

sys.exit(main())
