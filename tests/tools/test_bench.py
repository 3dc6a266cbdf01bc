"""`python -m dti.tools.bench` as a smoke test on CPU (tiny backbones; no timing is asserted)."""

import json
import os
import subprocess
import sys

import pytest
from helpers import ROOT

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("mode,extra,keys,values", [
    ("train", [], {"median_s", "p10_s", "p90_s", "flops_per_step", "images_per_s", "peak_rss_gib"}, {"concepts": 1}),
    ("train", ["pack=2"], {"seconds_per_concept_step", "flops_per_step"}, {"concepts": 2}),
    ("sample", [], {"median_s", "flops_per_batch", "seconds_per_image", "images_per_s"}, {}),
    ("concept", ["pack=2"], {"wall_s_process_start_to_embeddings", "embeddings", "concepts_per_hour"},
     {"concepts": 2, "pack": 2}),
    ("concept", ["bench.concepts=2"], {"concepts_per_hour"}, {"concepts": 2, "pack": 1}),
])
def test_bench_command_writes_its_json(tmp_path, mode, extra, keys, values):
    out = tmp_path / f"{mode}.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-m", "dti.tools.bench", mode, "model=sdxl", "bench.steps=2",
                             "bench.warmup=1", f"bench.out={out}", "sampler.batch_size=2", "train.steps=4",
                             "train.validation.every=0", *extra], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads(out.read_text())
    assert record["model"] == "tiny_sdxl"  # no CUDA: the tiny backbone of the same family
    assert keys <= set(record) and record["mode"] == mode and record["torch"]
    assert {k: record[k] for k in values} == values
    assert json.loads(result.stdout) == record
