"""`python -m dti.bench`: benchmarks (dti.tools.bench)."""

import sys

from dti.tools.bench import main

if __name__ == "__main__":
    sys.exit(main())
