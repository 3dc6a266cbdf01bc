"""Stable Diffusion 1.5 / 2.1-base on their tiny offline variants: training with the frozen weights untouched, the
embedding files read back by a fresh stock StableDiffusionPipeline (diffusers file, A1111 .pt, kohya emb_params),
resume, packing, and a Table 2-style sweep (TI, DTI, TI-rescaled, report)."""

import csv

import pytest
import torch
from diffusers import StableDiffusionPipeline
from helpers import FAST, cli, compose_cfg, frozen_state
from safetensors.torch import load_file

import dti
from dti.method.formats import a1111_pt_file, emb_params_file
from dti.offline.tiny import tiny_path
from dti.run import job

pytestmark = pytest.mark.slow
KEY = {"tiny_sd15": "clip_l", "tiny_sd21": "clip_h"}


def test_the_tiny_variants_keep_their_checkpoints_conventions():
    from dti.offline.tiny import load_tiny

    sd15, sd21 = (load_tiny("dti.backbones.sd.StableDiffusionBackbone", m) for m in KEY)
    assert (sd15.tokenizer.pad_token, sd21.tokenizer.pad_token) == ("<|endoftext|>", "!")  # SD2: OpenCLIP's pad
    assert sd21.tokenize(["a dog"])[0][0, :5].tolist() == [49406, 320, 1929, 49407, 0]
    for b in (sd15, sd21):
        assert len(b.tokenizer) == 49408 and type(b.sample_scheduler).__name__ == "PNDMScheduler"
        assert b.objective.prediction_type == "epsilon" and b.vae_scale == 0.18215
    assert (sd15.text_encoder.config.hidden_act, sd21.text_encoder.config.hidden_act) == ("quick_gelu", "gelu")


def train(overrides, run_dir):
    """A training job in-process (as the train_run fixture): (done, trainer, run_dir)."""
    from dti.run.build import build_concept, build_subject, build_trainer

    cfg = compose_cfg([*FAST, *overrides])
    subject = build_subject(cfg)
    trainer = build_trainer(cfg, run_dir, *build_concept(cfg, subject), subject)
    trainer.resume()
    return trainer.fit(), trainer, run_dir


@pytest.fixture(scope="module", params=sorted(KEY))
def trained(request, tmp_path_factory):
    """One 4-step run per tiny variant, shared by the tests below: (model, overrides, done, trainer, run_dir)."""
    overrides = [f"model={request.param}", "data.initializer='stuffed animal'"]  # a two-vector concept
    return request.param, overrides, *train(overrides, tmp_path_factory.mktemp(request.param) / "run")


def test_trains_with_frozen_weights_and_a_fresh_stock_pipeline_reads_every_file_exactly(trained):
    from dti.run.build import build_backbone

    model, _, done, trainer, run_dir = trained
    backbone, concept, key = trainer.backbone, trainer.concept, KEY[model]
    reference, after = frozen_state(build_backbone(compose_cfg([*FAST, f"model={model}"]))), frozen_state(backbone)
    assert after.keys() == reference.keys() and all(torch.equal(after[k], reference[k]) for k in reference)
    table, rows = concept.tables[key], concept.embeddings()[key]
    assert not torch.allclose(table.weight, table.prior) and rows.shape == (2, 32) and rows.dtype == torch.float32
    vocabulary = backbone.encoders[0].input_embeddings().frozen.weight
    assert torch.allclose(rows.norm(dim=-1), vocabulary.norm(dim=-1).mean(), rtol=1e-5)  # m* = the vocabulary mean

    emb = run_dir / "embeddings"
    assert torch.equal(load_file(emb / "learned_embeds.safetensors")["<toy>"], rows)
    a1111 = torch.load(emb / "toy-dti.pt", weights_only=True)  # as diffusers reads it; A1111 reads the same keys
    assert (a1111["name"], a1111["step"], a1111["string_to_token"]) == ("<toy>", 4, {"*": 265})
    assert torch.equal(a1111["string_to_param"]["*"], rows)
    kohya = load_file(emb / "toy-dti.safetensors")
    assert list(kohya) == ["emb_params"] and torch.equal(kohya["emb_params"], rows)
    assert done["embeddings"] == ["embeddings/learned_embeds.safetensors", "embeddings/toy-dti.pt",
                                  "embeddings/toy-dti.safetensors"]

    template = "a photo of a {} on the beach"
    with torch.no_grad():
        trained = backbone.encode_text(backbone.tokenize([concept.prompt(template)]))["prompt_embeds"]
    loaders = {
        "diffusers": lambda pipe: pipe.load_textual_inversion(str(emb / "learned_embeds.safetensors")),
        "a1111 .pt": lambda pipe: pipe.load_textual_inversion(str(emb / "toy-dti.pt")),  # token: the file's name
        "emb_params": lambda pipe: pipe.load_textual_inversion(str(emb / "toy-dti.safetensors"), token="<toy>"),
        "dti.load_embeddings": lambda pipe: dti.load_embeddings(pipe, run_dir),
    }
    for name, load in loaders.items():
        pipe = StableDiffusionPipeline.from_pretrained(tiny_path(model))
        load(pipe)
        with torch.no_grad():  # the user writes the bare placeholder; diffusers expands the multi-vector one
            embeds, _ = pipe.encode_prompt(template.format("<toy>"), "cpu", 1, do_classifier_free_guidance=False)
        assert torch.equal(embeds, trained), name


def test_single_encoder_formats_refuse_two_encoders(tmp_path):
    slots = [type("Slot", (), {"key": k})() for k in ("clip_l", "clip_g")]
    rows = {"clip_l": torch.zeros(1, 4), "clip_g": torch.zeros(1, 8)}
    for write in (a1111_pt_file, emb_params_file):
        with pytest.raises(ValueError, match="one text encoder"):
            write(rows, "<toy>", slots, tmp_path, "toy", {})


def test_resume_is_bit_identical(trained, tmp_path):
    _, overrides, _, _, straight = trained
    train([*overrides, "train.steps=2"], tmp_path / "resumed")  # checkpoint at 2 ...
    (tmp_path / "resumed" / "done.json").unlink()
    _, trainer, resumed = train(overrides, tmp_path / "resumed")  # ... resumed to 4, as the straight run
    assert trainer.step == 4
    for file in ("learned_embeds.safetensors", "toy-dti.safetensors"):
        a, b = (load_file(run / "embeddings" / file) for run in (straight, resumed))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), file


def test_packed_sd_concepts_match_separate_runs(tmp_path):
    from dti.run.build import BackboneCache
    from dti.run.job import JobContext

    context = JobContext(backbones=BackboneCache())  # one model load for the three jobs
    common = [*FAST, "model=tiny_sd21", "train.steps=2"]
    for name in ("toy", "ball"):
        job.run(compose_cfg([*common, f"data.subject={name}"]), tmp_path / "separate" / name, context)
    job.run(compose_cfg([*common, "data.subject=all", "pack=2"]), tmp_path / "packed" / "all", context)
    for name in ("toy", "ball"):
        a, b = (load_file(tmp_path / run / name / "embeddings" / "learned_embeds.safetensors")[f"<{name}>"]
                for run in ("separate", "packed"))
        assert torch.allclose(a, b, atol=1e-5), (name, (a - b).abs().max())


def test_a_table2_style_sweep_with_ti_rescaled_and_its_report(tmp_path):
    prompts = tmp_path / "two.txt"
    prompts.write_text("a photo of a {}\na {} on the beach\n")
    common = ["model=tiny_sd15", "data=synthetic", "data.subject=toy", "prompts=file", f"prompts.path={prompts}",
              "evaluator=tiny", "sampler.seeds=[0]", "sampler.num_inference_steps=2", "train.steps=2",
              "train.batch_size=1", "train.validation.enabled=false", "sweep_name=t2"]
    code, _, err = cli("-m", *common, "method=ti,dti", "pack=2", cwd=tmp_path)  # both concepts in one batch
    assert code == 0, err[-3000:]
    code, _, err = cli("-m", *common, "method=ti", "sampler.rescale=mean", "stage=[sample,evaluate]", cwd=tmp_path)
    assert code == 0, err[-3000:]
    root = tmp_path / "multirun" / "t2"
    assert len(list(root.glob("method=ti,*/toy/samples/two-rescale_mean/metrics.json"))) == 1  # no retraining
    rows = {r["key"]: r for r in csv.DictReader((root / "report.csv").open())}
    assert sorted(rows) == ["dti", "ti", "ti [rescale=mean]"]
    assert all(rows[k]["tiny_sd15/subjects"] == "1" and rows[k]["tiny_sd15/image"] for k in rows)
