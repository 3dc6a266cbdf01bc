"""Download the DreamBooth dataset (github.com/google/dreambooth, folder `dataset/`) for `data=dreambooth`.

    python -m dti.tools.download --dest data/dreambooth

Fetches the repository archive, extracts only `dataset/`, and moves it into place in one rename: an interrupted
download leaves nothing at `--dest`. Needs internet; not run in tests (they use a local archive).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import urllib.request
import zipfile
from pathlib import Path

DREAMBOOTH_URL = "https://github.com/google/dreambooth/archive/refs/heads/main.zip"


def download_dreambooth(dest: str | Path, url: str = DREAMBOOTH_URL, force: bool = False) -> Path:
    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()) and not force:
        print(f"{dest} already exists; nothing to do (--force to replace it)")
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".dreambooth-", dir=dest.parent) as tmp:
        archive = Path(tmp) / "dreambooth.zip"
        with urllib.request.urlopen(url) as response, open(archive, "wb") as out:
            shutil.copyfileobj(response, out)
        staged = Path(tmp) / "dataset"
        with zipfile.ZipFile(archive) as zf:
            members = [m for m in zf.infolist() if "/dataset/" in f"/{m.filename}" and not m.is_dir()]
            if not members:
                raise RuntimeError(f"{url}: the archive has no dataset/ folder")
            for member in members:
                relative = Path(member.filename.split("dataset/", 1)[1])
                if relative.is_absolute() or ".." in relative.parts:
                    raise RuntimeError(f"{url}: unsafe path in archive: {member.filename}")
                target = staged / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(member) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst)
        if dest.exists():
            shutil.rmtree(dest)
        staged.rename(dest)
    print(f"DreamBooth dataset in {dest} ({sum(1 for p in dest.iterdir() if p.is_dir())} subjects)")
    return dest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", default="data/dreambooth", help="where the subject folders go (data.root)")
    parser.add_argument("--url", default=DREAMBOOTH_URL, help="archive of the dreambooth repository")
    parser.add_argument("--force", action="store_true", help="replace an existing --dest")
    args = parser.parse_args(argv)
    try:
        download_dreambooth(args.dest, args.url, args.force)
    except Exception as err:  # noqa: BLE001
        print(f"error: download failed: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
