"""Print the command lines of README.md's first ```bash block, one per line (comments and blank lines dropped):
the set-up a new user runs, which .ci/run runs as is."""

import re
import sys
from pathlib import Path


def readme_commands(readme: Path) -> list[str]:
    block = re.search(r"^```bash\n(.*?)^```", readme.read_text(encoding="utf-8"), re.S | re.M)
    if block is None:
        raise SystemExit(f"{readme}: no ```bash block")
    lines = [line.split(" #")[0].strip() for line in block.group(1).splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


if __name__ == "__main__":
    print("\n".join(readme_commands(Path(sys.argv[1] if len(sys.argv) > 1 else "README.md"))))
