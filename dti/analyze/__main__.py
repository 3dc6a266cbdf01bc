"""`python -m dti.analyze <analysis> [overrides]` (dti.analyze.cli)."""

import sys

from dti.analyze.cli import main

if __name__ == "__main__":
    sys.exit(main())
