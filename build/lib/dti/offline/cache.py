"""The cache folder ($DTI_CACHE, default ~/.cache/dti) where offline stand-ins are built once."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

TINY_VERSION = 3  # bump when a builder changes, so stale caches are rebuilt


def cache_root(cache_dir: str | None = None) -> Path:
    root = cache_dir or os.environ.get("DTI_CACHE") or Path.home() / ".cache" / "dti"
    return Path(root)


def build_once(name: str, build, cache_dir: str | None, marker: str = "model_index.json") -> Path:
    """Build into a temporary folder and rename it into place, so concurrent or killed builds leave no half model."""
    target = cache_root(cache_dir) / f"{name}-v{TINY_VERSION}"
    if (target / marker).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    try:
        build(tmp)
        try:
            os.replace(tmp, target)
        except OSError:  # another process won the race
            if not (target / marker).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
