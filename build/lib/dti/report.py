"""`python -m dti.report`: the report of a folder of runs (dti.sweep.report)."""

import sys

from dti.sweep.report import main

if __name__ == "__main__":
    sys.exit(main())
