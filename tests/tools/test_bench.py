"""`python -m dti.bench` as a smoke test on CPU (tiny backbones; no timing is asserted)."""

import json

import pytest

from dti.tools.bench import main

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("mode,extra,keys,values", [
    ("train", [], {"median_s", "p10_s", "p90_s", "flops_per_step", "images_per_s", "peak_rss_gib"}, {"concepts": 1}),
    ("train", ["pack=2"], {"seconds_per_concept_step", "flops_per_step"}, {"concepts": 2}),
    ("sample", [], {"median_s", "flops_per_batch", "seconds_per_image", "images_per_s"}, {}),
    ("concept", ["pack=2"], {"wall_s_process_start_to_embeddings", "embeddings", "concepts_per_hour"},
     {"concepts": 2, "pack": 2}),
    ("concept", ["bench.concepts=2"], {"concepts_per_hour"}, {"concepts": 2, "pack": 1}),
])
def test_bench_command_writes_its_json(tmp_path, monkeypatch, capsys, mode, extra, keys, values):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / f"{mode}.json"
    assert main([mode, "model=sdxl", "bench.steps=2", "bench.warmup=1", f"bench.out={out}", "sampler.batch_size=2",
                 "train.steps=4", "train.validation.every=0", *extra]) == 0
    record = json.loads(out.read_text())
    assert record["model"] == "tiny_sdxl"  # no CUDA: the tiny backbone of the same family
    assert keys <= set(record) and record["mode"] == mode and record["torch"]
    assert {k: record[k] for k in values} == values
    assert json.loads(capsys.readouterr().out) == record


@pytest.mark.parametrize("override,line", [
    ("bench.stepz=2", "error: bench.stepz='2': unknown key (known: concepts, out, profile, steps, warmup)"),
    ("bench.steps=many", "error: bench.steps='many': must be an integer"),
    ("train.steps=0", "error: train.steps=0: must be an integer in [1, 10000000]"),
])
def test_bad_bench_settings_are_one_line_and_exit_2(tmp_path, monkeypatch, capsys, override, line):
    monkeypatch.chdir(tmp_path)
    assert main(["train", override]) == 2
    assert capsys.readouterr().err.strip() == line and not list(tmp_path.iterdir())


def test_every_command_of_the_gpu_check_script_composes(tmp_path, monkeypatch):
    """benchmarks/gpu_check.sh runs where a GPU is: each of its commands must at least be valid settings here."""
    import re
    import shlex

    from helpers import ROOT

    from dti.tools.bench import MODES, bench_config

    monkeypatch.chdir(tmp_path)
    script = (ROOT / "benchmarks" / "gpu_check.sh").read_text()
    commands = [shlex.split(line.split("#")[0])[1:] for line in script.splitlines() if re.match(r"bench \w+ ", line)]
    assert len(commands) >= 8
    for name, mode, *overrides in commands:
        assert mode in MODES, name
        cfg, _ = bench_config([*overrides, "model.random_init=true"])  # raises InputError on a bad setting
        model = next(o.split("=", 1)[1] for o in overrides if o.startswith("model="))
        assert cfg.model.name in (model, f"tiny_{model.split('_')[0]}", "tiny_sd15"), name  # no CUDA: the tiny one
