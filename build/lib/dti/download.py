"""`python -m dti.download`: the DreamBooth dataset download (dti.tools.download)."""

import sys

from dti.tools.download import main

if __name__ == "__main__":
    sys.exit(main())
