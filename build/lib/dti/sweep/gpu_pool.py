"""One GPU per parallel job on a local box (`hydra/launcher=gpu_pool`, joblib workers).

Each worker process claims a GPU once, by taking an exclusive `flock` on `<lock dir>/gpu<i>.lock` (released by
the OS when the process exits, even if it crashes), and sets CUDA_VISIBLE_DEVICES before CUDA is initialised in
that process. joblib reuses its workers across jobs, so a worker keeps its GPU for all the jobs it runs.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
import time
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from dti.core.runtime import visible_gpus

_claimed: tuple[int, object] | None = None  # (physical GPU index, open lock file) for this process


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


class ClaimGPU(Callback):
    """Hydra callback: before a job of a parallel local launcher (joblib workers) starts, its worker process
    claims a GPU of its own. Other launchers run every job in one process (packed) or get their GPU from SLURM."""

    def on_job_start(self, config: DictConfig, **kwargs) -> None:
        if "joblib" in str(OmegaConf.select(config, "hydra.launcher._target_", default="")).lower():
            claim_gpu()
