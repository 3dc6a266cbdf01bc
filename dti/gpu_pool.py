"""One GPU per parallel job on a local box (`hydra/launcher=gpu_pool`, joblib workers).

Each worker process claims a GPU once, by taking an exclusive `flock` on `<lock dir>/gpu<i>.lock` (released by
the OS when the process exits, even if it crashes), and sets CUDA_VISIBLE_DEVICES before CUDA is initialised in
that process. joblib reuses its workers across jobs, so a worker keeps its GPU for all the jobs it runs.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import tempfile
import time
from pathlib import Path

_claimed: tuple[int, object] | None = None  # (physical GPU index, open lock file) for this process


def visible_gpus() -> list[str]:
    """The GPUs this box offers to jobs: CUDA_VISIBLE_DEVICES if set, else what nvidia-smi lists. CUDA is not
    initialised here (the parent of a joblib pool must not hold a CUDA context)."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g.strip() for g in env.split(",") if g.strip() and g.strip() != "-1"]
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [str(i) for i, line in enumerate(listing.splitlines()) if line.startswith("GPU ")]


def lock_dir() -> Path:
    default = Path(tempfile.gettempdir()) / f"dti-gpu-locks-{os.getuid()}"  # per user: no permission clashes
    return Path(os.environ.get("DTI_GPU_LOCK_DIR", default))


def claim_gpu(gpus: list[str] | None = None, locks: Path | None = None, timeout: float = 3600.0,
              poll: float = 1.0) -> str | None:
    """Claim a free GPU for this process (once) and make it the only one CUDA will see. None when no GPU."""
    global _claimed
    if _claimed is not None:
        return _claimed[0]
    gpus = visible_gpus() if gpus is None else gpus
    if not gpus:
        return None
    locks = locks or lock_dir()
    locks.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout
    while True:
        for gpu in gpus:
            # opened without truncating: the holder's pid stays readable until the lock is ours
            fd = os.open(locks / f"gpu{gpu}.lock", os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            os.environ["CUDA_VISIBLE_DEVICES"] = gpu
            _claimed = (gpu, fd)  # held (and locked) for the lifetime of this process
            return gpu
        if time.monotonic() > deadline:
            raise TimeoutError(f"no free GPU among {gpus} after {timeout:.0f} s (locks in {locks})")
        time.sleep(poll)


def num_gpus() -> int:
    """For the pool size: the number of GPUs, at least 1 (a CPU-only box runs one job at a time)."""
    return max(1, len(visible_gpus()))
