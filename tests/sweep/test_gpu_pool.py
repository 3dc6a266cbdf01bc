"""One GPU per parallel local job: exclusive claims, released when the holder dies."""

import os
import subprocess
import sys
import textwrap

from helpers import ROOT


def test_gpu_claims_are_exclusive_and_released_on_exit(tmp_path):
    script = textwrap.dedent(f"""
        import os, sys, time
        from pathlib import Path
        from dti.sweep.gpu_pool import claim_gpu
        try:
            gpu = claim_gpu(["0", "1"], Path({str(tmp_path)!r}), timeout=float(sys.argv[1]), poll=0.05)
        except TimeoutError:
            print("timeout", flush=True); sys.exit(0)
        print(gpu, os.environ["CUDA_VISIBLE_DEVICES"], claim_gpu() == gpu, flush=True)
        time.sleep(float(sys.argv[2]))
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    holders = [subprocess.Popen([sys.executable, "-c", script, "5", "30"], stdout=subprocess.PIPE, text=True,
                                env=env) for _ in range(2)]
    claims = sorted(h.stdout.readline().split() for h in holders)
    assert claims == [["0", "0", "True"], ["1", "1", "True"]]  # distinct GPUs, env set, claimed once
    third = subprocess.run([sys.executable, "-c", script, "0.3", "0"], capture_output=True, text=True, env=env)
    assert third.stdout.strip() == "timeout"  # both busy
    holders[1].kill()
    holders[1].wait()
    freed = subprocess.run([sys.executable, "-c", script, "5", "0"], capture_output=True, text=True, env=env)
    assert freed.stdout.split()[0] in ("0", "1")  # the killed holder's lock was released by the OS
    holders[0].kill()


def test_no_gpu_means_no_claim(tmp_path, monkeypatch):
    from omegaconf import OmegaConf

    from dti.core.runtime import visible_gpus
    from dti.sweep import gpu_pool

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert visible_gpus() == [] and OmegaConf.create({"n": "${dti.num_gpus:}"}).n == 1  # the pool size
    assert gpu_pool.claim_gpu(locks=tmp_path) is None
