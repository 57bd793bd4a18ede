"""`python -m ingest` runs the `siaga` command line (what the console script calls)."""

import sys

from siaga.cli.main import main

sys.exit(main())
