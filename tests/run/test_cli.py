"""launch.py as a user runs it: the demo end to end (a subprocess), with its summary, a sweep of every optimizer
and magnitude kind, and the help page. Bad input is tests/run/test_bad_input.py."""

import json
import re
import time

import pytest
from helpers import cli, launch


@pytest.mark.slow
def test_demo_end_to_end(tmp_path):
    started = time.perf_counter()
    result = launch("+experiment=demo", cwd=tmp_path)
    elapsed = time.perf_counter() - started
    assert result.returncode == 0, result.stderr[-2000:]
    run = tmp_path / "outputs" / "+experiment=demo" / "toy"
    for name in (".hydra/config.yaml", "train_log.jsonl", "done.json", "embeddings/learned_embeds.safetensors",
                 "embeddings/learned_embeds_2.safetensors", "embeddings/toy-dti.safetensors", "train_curves.png"):
        assert (run / name).is_file(), name
    done = json.loads((run / "done.json").read_text())
    assert sorted(p.name for p in (run / "validation").iterdir())[-1] == f"step_{done['step']:06d}.png"
    assert (run / "checkpoints" / f"step_{done['step']:06d}.pt").is_file()
    metrics = json.loads((run / "samples" / "complex" / "metrics.json").read_text())
    assert metrics["num_images"] == 22 * 4 and len(list((run / "samples" / "complex").rglob("*.png"))) == 88
    assert 0 < metrics["image_sim"] <= 1 and -1 <= metrics["text_sim"] <= 1
    # the summary at the end: where the embeddings are, |e| against the vocabulary, the scores, the pictures
    summary = result.stdout[result.stdout.index("done: "):].splitlines()
    assert summary[0] == "done: outputs/+experiment=demo/toy" and len(summary) == 6
    norms = done["norms"]["clip_l"]
    assert f"clip_l {norms['embedding']:.4f} (vocabulary mean {norms['vocabulary_mean']:.4f})" in summary[2]
    assert f"image {metrics['image_sim']:.3f}" in summary[3] and "88 images" in summary[3]
    assert summary[4].endswith(f"validation/step_{done['step']:06d}.png") and summary[5].endswith("train_curves.png")
    print(f"demo wall time {elapsed:.1f}s")  # not asserted: timing is not a test


@pytest.mark.slow
def test_launch_sweeps_every_optimizer_and_magnitude(tmp_path):
    """launch.py's main -m over optimizers x magnitude kinds (in this process: the subprocess path is the demo's),
    and plain TI; min and max are mean's statistic switched (every pair composes: tests/run/test_configs.py)."""
    tiny = ["model=tiny_sdxl", "data=synthetic", "stage=[train]", "train.steps=2", "train.batch_size=1",
            "train.log_every=1", "train.validation.every=0", "train.validation.seeds=[0]",
            "train.validation.num_inference_steps=1"]
    code, _, err = cli("-m", *tiny, "optimizer=rsgd,adamw_proj", "magnitude=mean,float,init", cwd=tmp_path)
    assert code == 0, err[-3000:]
    code, _, err = cli(*tiny, "method=ti", cwd=tmp_path)
    assert code == 0, err[-3000:]
    runs = sorted(p.parent for p in tmp_path.rglob("done.json"))
    assert len(runs) == 7
    names = {str(r.relative_to(tmp_path)) for r in runs}
    settings = "train.batch_size=1,train.steps=2"  # logging/validation settings do not name directories
    assert f"multirun/default/magnitude=float,model=tiny_sdxl,optimizer=adamw_proj,{settings}/toy" in names
    assert f"outputs/method=ti,model=tiny_sdxl,{settings}/toy" in names
    for run in runs:
        for name in ("learned_embeds.safetensors", "learned_embeds_2.safetensors"):
            assert (run / "embeddings" / name).is_file()
        assert len(list((run / "embeddings").glob("toy-*.safetensors"))) == 1  # toy-<method>: toy-dti, toy-ti
        assert (run / ".hydra" / "config.yaml").is_file() and (run / "validation" / "step_000002.png").is_file()


def test_help_lists_every_group_with_its_options_and_the_manual_exists(tmp_path):
    from helpers import CONF

    code, out, err = cli("--help", cwd=tmp_path)
    assert code == 0, err[-2000:]
    lines = dict(line.split(": ", 1) for line in out.splitlines() if ": " in line and "=" not in line)
    for group in (p for p in CONF.iterdir() if p.is_dir() and p.name not in ("hydra", "__pycache__")):
        options = sorted(f.stem for f in group.glob("*.yaml"))
        if options:  # a folder of folders (recipes/) lists each folder as its own group
            assert lines.get(group.name) == ", ".join(options), group.name
    # every page the help and the README point to is there
    root = CONF.parent
    for page in set(re.findall(r"docs/[\w-]+\.md", out + (root / "README.md").read_text())):
        assert (root / page).is_file(), page
