"""Protocol sampling and evaluation on the tiny backbones and tiny random-weight DINOv2/SigLIP."""

import json

import numpy as np
import pytest
import torch
from helpers import FAST, compose_cfg
from PIL import Image

from dti.core.errors import InputError
from dti.evaluate.prompts import COMPLEX_LIVE, COMPLEX_OBJECT, complex_prompts, dreambooth_prompts, file_prompts
from dti.offline.tiny_evaluators import load_tiny_evaluator
from dti.run import job

pytestmark = pytest.mark.slow
SAMPLE = ["prompts=complex", "evaluator=tiny", "sampler.seeds=[0,1]", "sampler.batch_size=3"]


def full_run(run_dir, *overrides, stage="[train,sample,evaluate]"):
    return job.run(compose_cfg([*FAST, *SAMPLE, f"stage={stage}", *overrides]), run_dir)


def pngs(folder):
    return {str(p.relative_to(folder)): p for p in sorted(folder.rglob("*.png"))}


def test_train_sample_evaluate_then_rescore_without_retraining(tmp_path):
    run = tmp_path / "run"
    first = full_run(run)
    samples = run / "samples" / "complex"
    images = pngs(samples)
    assert len(images) == 22 * 2 and first["metrics"]["num_images"] == 44
    metrics = json.loads((samples / "metrics.json").read_text())
    assert set(metrics) >= {"image_sim", "text_sim", "text_sim_official", "per_image", "per_prompt", "per_subject",
                            "config", "subject", "num_images", "seeds", "models"}
    assert metrics["seeds"] == [0, 1] and len(metrics["per_prompt"]) == 22
    assert {"prompt_index", "seed", "path", "dinov2", "siglip", "siglip_official"} <= set(metrics["per_image"][0])
    assert metrics["config"]["sampler"]["seeds"] == [0, 1]
    prompts = json.loads((samples / "prompts.json").read_text())
    assert prompts["0"]["prompt"].count("<toy>") == 1 and "<toy>" not in prompts["0"]["class_prompt"]
    assert prompts["0"]["class_prompt"] == COMPLEX_OBJECT[0].format("toy")
    mean = np.mean([r["dinov2"] for r in metrics["per_image"]])
    assert metrics["image_sim"] == pytest.approx(mean)

    stamps = {k: p.stat().st_mtime_ns for k, p in images.items()}
    assert full_run(run, stage="[sample,evaluate]") == {"skipped": True}  # complete, same settings: nothing to do
    # re-score with other evaluation settings: nothing retrained, nothing resampled, the same scores
    again = full_run(run, "evaluator.batch_size=5", stage="[sample,evaluate]")
    assert {k: p.stat().st_mtime_ns for k, p in pngs(samples).items()} == stamps
    assert again["metrics"] == pytest.approx(first["metrics"]) and "train" not in again
    only_eval = full_run(run, "evaluator.batch_size=7", stage="[evaluate]")
    assert only_eval["metrics"] == pytest.approx(first["metrics"])


def test_sampling_resumes_only_missing_images(tmp_path):
    run = tmp_path / "run"
    full_run(run, stage="[train,sample]")
    images = pngs(run / "samples" / "complex")
    victim = next(iter(images))
    original = images[victim].read_bytes()
    stamps = {k: p.stat().st_mtime_ns for k, p in images.items() if k != victim}
    images[victim].unlink()
    full_run(run, stage="[sample]")
    after = pngs(run / "samples" / "complex")
    assert after.keys() == images.keys()
    assert {k: p.stat().st_mtime_ns for k, p in after.items() if k != victim} == stamps
    assert after[victim].read_bytes() == original
    assert not list((run / "samples").rglob("*.tmp"))


def test_an_image_does_not_depend_on_its_batch(train_run):
    _, trainer, _ = train_run()
    backbone, concept = trainer.backbone, trainer.concept
    prompts = [concept.prompt(t) for t in COMPLEX_OBJECT[:4]]
    batch = backbone.generate(prompts, [7, 8, 9, 10], 32, 32, 3, 5.0)
    for i in (0, 3):
        alone = backbone.generate([prompts[i]], [7 + i], 32, 32, 3, 5.0)[0]
        diff = np.abs(np.asarray(alone, dtype=int) - np.asarray(batch[i], dtype=int))
        assert diff.max() <= 1  # same generator draws; a batched matmul may round one uint8 level differently
    assert (np.asarray(batch[0]) != np.asarray(batch[1])).any()


def test_rescale_changes_the_norm_and_nothing_else(tmp_path):
    run = tmp_path / "run"
    full_run(run, "magnitude=init", stage="[train]")
    from dti.evaluate.sampler import Sampler, load_trained_embeddings
    from dti.run.build import build_concept, build_sampler_settings, build_subject

    cfg = compose_cfg([*FAST, *SAMPLE, "magnitude=init", "sampler.rescale=2.5"])
    subject = build_subject(cfg)
    backbone, concept = build_concept(cfg, subject)
    load_trained_embeddings(concept, backbone, run / "embeddings")
    before = {k: t.embeddings().detach().clone() for k, t in concept.tables.items()}
    frozen = {s.key: s.input_embeddings().frozen.weight.clone() for s in backbone.encoders}
    Sampler(backbone, concept, build_sampler_settings(cfg), subject.class_word).rescale()
    for key, table in concept.tables.items():
        after = table.embeddings().detach()
        assert torch.allclose(after.norm(dim=-1), torch.tensor(2.5))
        assert torch.allclose(torch.nn.functional.normalize(after, dim=-1),
                              torch.nn.functional.normalize(before[key], dim=-1), atol=1e-6)
    assert all(torch.equal(s.input_embeddings().frozen.weight, frozen[s.key]) for s in backbone.encoders)
    # and through the recipe: a separate samples/<set>-rescale_mean folder beside the plain one
    result = full_run(run, "sampler.rescale=mean", stage="[sample,evaluate]")
    assert result["samples"].endswith("samples/complex-rescale_mean")


def test_metric_values_on_constructed_inputs(tmp_path):
    evaluator = load_tiny_evaluator()
    images = [Image.fromarray(np.random.default_rng(i).integers(0, 255, (32, 32, 3), dtype=np.uint8))
              for i in range(2)]
    samples = tmp_path / "samples"
    for i, image in enumerate(images):
        (samples / f"0{i}_p").mkdir(parents=True)
        image.save(samples / f"0{i}_p" / "0.png")
    prompts = {str(i): {"template": "a {}", "prompt": "a <x>", "class_prompt": "a toy", "folder": f"0{i}_p"}
               for i in range(2)}
    (samples / "prompts.json").write_text(json.dumps(prompts))
    same = evaluator.evaluate(samples, [images[0]], "x", tmp_path / "cache")  # sample 0 is the reference
    assert same["per_image"][0]["dinov2"] == pytest.approx(1.0, abs=1e-5)
    assert same["per_image"][1]["dinov2"] < 0.999
    # orthogonal features score 0: replace the feature extractor by a known one
    basis, real = torch.eye(4), evaluator._image_features

    def fake(key, ims):
        if key != "dinov2":
            return real(key, ims)
        return basis[[0 if im.getpixel((0, 0)) == images[0].getpixel((0, 0)) else 1 for im in ims]]

    evaluator._image_features = fake
    ortho = evaluator.evaluate(samples, [images[1]], "x", tmp_path / "cache2")
    assert ortho["per_image"][0]["dinov2"] == pytest.approx(0.0)
    assert ortho["per_image"][1]["dinov2"] == pytest.approx(1.0)
    cos = torch.tensor([r["siglip"] for r in ortho["per_image"]])
    model = evaluator.models["siglip"]
    official = torch.sigmoid(cos * model.logit_scale.exp() + model.logit_bias)
    assert torch.allclose(official, torch.tensor([r["siglip_official"] for r in ortho["per_image"]]), atol=1e-5)


def test_reference_features_are_cached(tmp_path):
    evaluator = load_tiny_evaluator()
    refs = [Image.new("RGB", (40, 40), c) for c in ("red", "blue")]
    first = evaluator.reference_features(refs, tmp_path)
    evaluator._image_features = lambda *a: (_ for _ in ()).throw(AssertionError("recomputed"))
    assert torch.equal(evaluator.reference_features(refs, tmp_path), first)
    assert len(list(tmp_path.glob("dinov2_*.safetensors"))) == 1


def test_prompt_sets(tmp_path):
    assert len(COMPLEX_OBJECT) >= 20 and len(COMPLEX_LIVE) >= 20
    assert complex_prompts(live=True).templates == COMPLEX_LIVE
    table = tmp_path / "prompts_and_classes.txt"
    object_lines = ["'a {0} {1} in the jungle'.format(unique_token, class_token),",
                    "'a red {0} {1}'.format(unique_token, class_token)"]
    live_lines = ["'a {0} {1} wearing a santa hat'.format(unique_token, class_token),",
                  "'a {0} {1} in a chef outfit'.format(unique_token, class_token)"]
    table.write_text("Classes\n\nsubject_name,class\ndog,dog\n\nPrompts\n\nObject Prompts\n\nprompt_list = [\n"
                     + "\n".join(object_lines) + "\n]\n\nLive Subject Prompts\n\nprompt_list = [\n"
                     + "\n".join(live_lines) + "\n]\n")
    assert dreambooth_prompts(str(table)).templates == ["a {} in the jungle", "a red {}"]
    assert dreambooth_prompts(str(table), live=True).templates == ["a {} wearing a santa hat", "a {} in a chef outfit"]
    txt = tmp_path / "mine.txt"
    txt.write_text("# my prompts\na photo of {} at noon\n\n{} on the moon\n")
    assert file_prompts(str(txt)).templates == ["a photo of {} at noon", "{} on the moon"]
    assert file_prompts(str(txt)).name == "mine"
    js = tmp_path / "official.json"
    js.write_text(json.dumps({"object": ["an {} object"], "live": ["a {} running"]}))
    assert file_prompts(str(js), live=True).templates == ["a {} running"]
    bad = tmp_path / "bad.txt"
    bad.write_text("no placeholder here\n")
    with pytest.raises(InputError, match="prompts"):
        file_prompts(str(bad))


def test_stage_errors_before_anything_is_written(tmp_path):
    with pytest.raises(InputError, match="stage"):
        full_run(tmp_path / "a", stage="[sample]")  # nothing trained there
    with pytest.raises(InputError, match="stage"):
        full_run(tmp_path / "b", stage="[evaluate]")
    with pytest.raises(InputError, match="stage"):
        full_run(tmp_path / "c", stage="[paint]")
    with pytest.raises(InputError, match="sampler.rescale"):
        full_run(tmp_path / "d", "sampler.rescale=huge")
    with pytest.raises(InputError, match="prompts.path"):
        full_run(tmp_path / "e", "prompts=file", "prompts.path=/no/such.txt")
    assert not any((tmp_path / x).exists() for x in "bcde")


def test_changed_sampler_settings_need_their_own_tag(tmp_path):
    run = tmp_path / "run"
    full_run(run, stage="[train,sample]")
    with pytest.raises(InputError, match="sampler.tag"):
        full_run(run, "sampler.guidance_scale=2.0", stage="[sample]")
    result = full_run(run, "sampler.guidance_scale=2.0", "sampler.tag=cfg2", stage="[sample]")
    assert result["samples"].endswith("samples/cfg2")


@pytest.mark.parametrize("model", ["tiny_sana", "tiny_wan"])
def test_other_backbones_sample_and_evaluate(tmp_path, model):
    result = full_run(tmp_path / "run", f"model={model}", "sampler.seeds=[0]")
    assert result["metrics"]["num_images"] == 22
