"""Scoring every saved step (sampler.steps) as the official protocol does, and masked reference photos
(evaluator.masks)."""

import json

import pytest
from helpers import FAST, cli, compose_cfg
from PIL import Image

from dti.core.errors import InputError
from dti.method.formats import read_token_file
from dti.run import job

ONE = ["evaluator=tiny", "sampler.seeds=[0]", "prompts=file"]


def one_prompt(tmp_path):
    path = tmp_path / "one.txt"
    path.write_text("a photo of a {}\n")
    return f"prompts.path={path}"


def test_every_saved_step_is_sampled_scored_and_plotted(tmp_path):
    run = tmp_path / "runs" / "method=dti" / "toy"
    job.run(compose_cfg([*FAST, *ONE, one_prompt(tmp_path), "stage=[train,sample,evaluate]",
                         "sampler.steps=all"]), run)
    assert sorted(p.name for p in (run / "embeddings" / "steps").iterdir()) == ["000002", "000004"]
    token, rows = read_token_file(run / "embeddings" / "steps" / "000002" / "learned_embeds.safetensors")
    assert token == "<toy>" and rows.shape == (1, 32)  # loadable like the final files
    final = json.loads((run / "samples" / "one" / "metrics.json").read_text())
    early = json.loads((run / "samples" / "one-step_000002" / "metrics.json").read_text())
    assert final["step"] is None and early["step"] == 2 and early["num_images"] == final["num_images"] == 1
    from dti.sweep.report import write_report

    summary = write_report(tmp_path / "runs")
    assert summary["records"] == 1  # the table has the final step only
    lines = (tmp_path / "runs" / "report_steps.csv").read_text().splitlines()
    assert lines[0] == "method,backbone,step,image,text,subjects" and [x.split(",")[2] for x in lines[1:]] == ["2", "4"]
    assert Image.open(tmp_path / "runs" / "report_steps.png").info["Software"].startswith("Matplotlib")


def test_a_step_that_is_not_saved_is_refused(tmp_path):
    with pytest.raises(InputError, match="sampler.steps=3"):
        job.run(compose_cfg([*FAST, *ONE, one_prompt(tmp_path), "stage=[train,sample]", "sampler.steps=[3]"]),
                tmp_path / "run")
    code, _, err = cli(*FAST, *ONE, one_prompt(tmp_path), "stage=[train,sample]", "sampler.steps=[5]", cwd=tmp_path)
    assert code == 2 and err.startswith("error: sampler.steps=5:")


def test_masks_apply_to_the_reference_photos_only_where_one_is_given(tmp_path, caplog):
    import logging

    from dti.offline.tiny_evaluators import load_tiny_evaluator

    caplog.set_level(logging.INFO, logger="dti.evaluate.scorers")
    masks = tmp_path / "masks"
    masks.mkdir()
    Image.new("L", (40, 40), 0).save(masks / "photo_a.png")  # everything masked out: a black photo
    evaluator = load_tiny_evaluator(masks=str(masks))
    references = [Image.new("RGB", (40, 40), "red"), Image.new("RGB", (40, 40), "blue")]
    out = evaluator.masked(references, "toy", ["photo_a", "photo_b"])
    assert out[0].getpixel((5, 5)) == (0, 0, 0) and out[1] is references[1]
    assert "1 of 2 reference photos of toy have no mask" in caplog.text
    with pytest.raises(InputError, match="evaluator.masks"):
        load_tiny_evaluator(masks=str(tmp_path / "none"))


def test_masked_references_change_the_subject_score(tmp_path):
    runs = {}
    masks = tmp_path / "masks"
    masks.mkdir()
    for i in range(4):  # the synthetic subject's photos are 00..03: keep only a square in the middle
        mask = Image.new("L", (96, 96), 0)
        mask.paste(255, (32, 32, 64, 64))
        mask.save(masks / f"{i:02d}.png")
    for name, extra in (("plain", []), ("masked", [f"evaluator.masks={masks}"])):
        cfg = compose_cfg([*FAST, *ONE, one_prompt(tmp_path), "stage=[train,sample,evaluate]", *extra])
        runs[name] = job.run(cfg, tmp_path / name)["metrics"]["image_sim"]
    assert runs["plain"] != pytest.approx(runs["masked"], abs=1e-6)
