"""`python -m dti.convert IN OUT --to FORMAT --model MODEL`: an embedding between layouts (dti.tools.convert)."""

import sys

from dti.tools.convert import main

if __name__ == "__main__":
    sys.exit(main())
