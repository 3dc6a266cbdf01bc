"""`python -m dti.bench` as a smoke test on CPU (tiny backbones; no timing is asserted)."""

import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("mode,keys", [
    ("train", {"median_s", "p10_s", "p90_s", "flops_per_step", "images_per_s", "peak_rss_gib"}),
    ("sample", {"median_s", "flops_per_batch", "seconds_per_image", "images_per_s"}),
    ("concept", {"wall_s_process_start_to_embeddings", "embeddings"}),
])
def test_bench_command_writes_its_json(tmp_path, mode, keys):
    out = tmp_path / f"{mode}.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-m", "dti.bench", mode, "model=sdxl", "bench.steps=2",
                             "bench.warmup=1", f"bench.out={out}", "sampler.batch_size=2", "train.steps=4",
                             "train.validation.every=0"], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads(out.read_text())
    assert record["model"] == "tiny_sdxl"  # no CUDA: the tiny backbone of the same family
    assert keys <= set(record) and record["mode"] == mode and record["torch"]
    assert json.loads(result.stdout) == record
