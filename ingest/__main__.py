"""`python -m ingest` runs the `siaga` command line (what the console script calls)."""

import sys

from ingest.cli import main

sys.exit(main())
