"""The paper's baselines on the tiny SDXL: CrossInit's initial rows and regulariser, LoRA/OFT adapters on the
denoiser (their files load into a stock pipeline and reproduce the trained denoiser), and the DCO objective."""

import math

import pytest
import torch
from diffusers import StableDiffusionXLPipeline
from helpers import FAST, compose_cfg, frozen_state
from safetensors.torch import load_file

import dti
from dti.method.concept import ConceptTable
from dti.method.method import ConceptMethod
from dti.offline.tiny import load_tiny_sdxl, tiny_sdxl_path
from dti.run import job


def test_crossinit_rows_are_the_encoders_final_output_at_the_words_tokens(train_run):
    _, trainer, _ = train_run("method=crossinit", "train.steps=1")
    backbone, initial = trainer.backbone, {k: t.initial for k, t in trainer.concept.tables.items()}
    fresh = load_tiny_sdxl()  # computed here without dti: the word alone, padded, the final hidden state
    for key, tokenizer, encoder in (("clip_l", fresh.tokenizer, fresh.text_encoder),
                                    ("clip_g", fresh.tokenizer_2, fresh.text_encoder_2)):
        batch = tokenizer("toy", padding="max_length", max_length=77, return_tensors="pt")
        with torch.no_grad():
            hidden = encoder(input_ids=batch.input_ids, attention_mask=batch.attention_mask).last_hidden_state
        assert torch.allclose(initial[key], hidden[0, 1:2], atol=1e-6), key  # position 1: after BOS
        vocab = encoder.get_input_embeddings().weight[tokenizer("toy", add_special_tokens=False).input_ids]
        assert not torch.allclose(initial[key], vocab)  # not TI's start
    assert backbone is trainer.backbone


def test_the_anchor_gradient_is_2_lambda_e_minus_e0_over_n_d():
    init = torch.randn(2, 8, generator=torch.Generator().manual_seed(0))
    table = ConceptTable(init, None)  # free norm: E is the weight
    with torch.no_grad():
        table.weight += 0.3
    method = ConceptMethod(anchor=1e-2)
    method.extra_loss({"a": table}).backward()
    expected = 2 * 1e-2 * (table.weight.detach() - init) / init.numel()
    assert torch.allclose(table.weight.grad, expected, atol=1e-9)


def test_crossinit_with_lambda_0_is_adamw_from_that_start(tmp_path):
    common = [*FAST, "train.steps=3"]
    job.run(compose_cfg([*common, "method=crossinit", "method.anchor=0"]), tmp_path / "a")
    job.run(compose_cfg([*common, "method=ti", "method.init=encoder_output"]), tmp_path / "b")
    for name in ("learned_embeds.safetensors", "learned_embeds_2.safetensors"):
        assert torch.equal(load_file(tmp_path / "a" / "embeddings" / name)["<toy>"],
                           load_file(tmp_path / "b" / "embeddings" / name)["<toy>"])


def unet_inputs(backbone, prompt="a photo of a <toy>"):
    with torch.no_grad():
        cond = backbone.encode_text(backbone.tokenize([prompt]))
    x = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(1))
    added = {"text_embeds": cond["pooled"], "time_ids": torch.tensor([[32.0, 32, 0, 0, 32, 32]])}
    return x, torch.tensor([400]), cond["prompt_embeds"], added


def test_a_new_lora_leaves_the_denoiser_unchanged():
    from dti.train.adapters import AdapterSettings, DenoiserAdapter

    backbone = load_tiny_sdxl()
    x, t, embeds, added = unet_inputs(backbone, "a photo of a toy")
    with torch.no_grad():
        before = backbone.unet(x, t, encoder_hidden_states=embeds, added_cond_kwargs=added).sample
        adapter = DenoiserAdapter(backbone.unet, AdapterSettings(kind="lora", rank=4))
        after = backbone.unet(x, t, encoder_hidden_states=embeds, added_cond_kwargs=added).sample
    assert torch.equal(before, after) and all(p.dtype == torch.float32 and p.requires_grad for p in adapter.params)
    adapter.remove()
    assert not any("lora" in n or "base_layer" in n for n, _ in backbone.unet.named_parameters())


@pytest.mark.parametrize("method,kind", [("dco_dti", "lora"), ("oft_dti", "oft")])
def test_a_trained_adapter_loads_into_a_stock_pipeline_and_reproduces_the_denoiser(train_run, method, kind):
    reference = frozen_state(load_tiny_sdxl())
    _, trainer, run = train_run(f"method={method}", "train.steps=4")
    backbone = trainer.backbone
    assert any(kind in n and p.abs().sum() > 0 for n, p in backbone.unet.named_parameters())
    x, t, embeds, added = unet_inputs(backbone)
    with torch.no_grad():
        trained = backbone.unet(x, t, encoder_hidden_states=embeds, added_cond_kwargs=added).sample
    pipe = StableDiffusionXLPipeline.from_pretrained(tiny_sdxl_path())
    dti.load_embeddings(pipe, run)
    with torch.no_grad():
        stock_embeds, _, pooled, _ = pipe.encode_prompt("a photo of a <toy>", do_classifier_free_guidance=False,
                                                        device="cpu")
        stock = pipe.unet(x, t, encoder_hidden_states=stock_embeds,
                          added_cond_kwargs={**added, "text_embeds": pooled}).sample
    assert torch.equal(stock_embeds, embeds)
    assert torch.allclose(stock, trained, atol=1e-5), (stock - trained).abs().max()
    # the frozen weights are untouched (the adapter's own parameters aside), the vocabulary included
    after = {k: v for k, v in frozen_state(backbone).items() if "lora" not in k and "oft" not in k}
    base = {k.replace(".base_layer", ""): v for k, v in after.items()}
    assert all(torch.equal(base[k], reference[k]) for k in reference)
    trainer.adapter.remove()


def test_the_kohya_file_bundles_the_embedding_and_loads_in_diffusers(train_run):
    _, trainer, run = train_run("method=dco_dti", "train.steps=3")
    (kohya,) = (run / "adapter").glob("toy-dco_dti.safetensors")
    state = load_file(kohya)
    assert torch.equal(state["bundle_emb.<toy>.clip_l"], trainer.concept.embeddings()["clip_l"])
    assert torch.equal(state["bundle_emb.<toy>.clip_g"], trainer.concept.embeddings()["clip_g"])
    assert any(k.startswith("lora_unet_") and k.endswith(".lora_down.weight") for k in state)
    x, t, embeds, added = unet_inputs(trainer.backbone, "a photo of a toy")
    with torch.no_grad():
        trained = trainer.backbone.unet(x, t, encoder_hidden_states=embeds, added_cond_kwargs=added).sample
    pipe = StableDiffusionXLPipeline.from_pretrained(tiny_sdxl_path())
    pipe.load_lora_weights({k: v for k, v in state.items() if not k.startswith("bundle_emb.")})
    with torch.no_grad():
        stock = pipe.unet(x, t, encoder_hidden_states=embeds, added_cond_kwargs=added).sample
    assert torch.allclose(stock, trained, atol=1e-5), (stock - trained).abs().max()
    trainer.adapter.remove()


def test_dco_starts_at_log_2_with_half_beta_times_the_mse_gradient(tmp_path, monkeypatch):
    from dti.run.build import build_adapter, build_concept, build_subject, build_trainer

    cfg = compose_cfg([*FAST, "method=dco_dti", "train.steps=1"])
    backbone, subject = load_tiny_sdxl(), build_subject(cfg)
    concept = build_concept(cfg, subject, backbone)[1]
    trainer = build_trainer(cfg, tmp_path, backbone, concept, subject, None, build_adapter(cfg, backbone))
    calls, real = [], type(backbone).loss

    def spy(self, *args, **kwargs):
        lora = next(m for m in self.unet.modules() if hasattr(m, "lora_A") and hasattr(m, "disable_adapters"))
        calls.append((torch.is_grad_enabled(), lora.disable_adapters))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(type(backbone), "loss", spy)
    draw = trainer.draw(trainer.prepare())
    inputs = (draw["noisy"][:1], draw["t"][:1], draw["target"][:1])
    extras = {k: v[:1] for k, v in draw["extras"].items()}
    dco = trainer.micro_loss(inputs, backbone.encode_text([ids[:1] for ids in draw["ids"]]), extras)
    assert dco.item() == pytest.approx(math.log(2), abs=1e-6)  # B = 0: the model is its reference
    assert calls == [(False, True), (True, False)]  # the reference first: no gradient, adapter off
    dco.backward()
    dco_grad = {k: t.weight.grad.clone() for k, t in concept.tables.items()}
    for table in concept.tables.values():
        table.weight.grad = None
    backbone.loss(*inputs, backbone.encode_text([ids[:1] for ids in draw["ids"]]), extras).backward()
    for key, table in concept.tables.items():
        expected = trainer.method.dco_beta / 2 * table.weight.grad  # float32 rounding of two backward passes
        assert torch.allclose(dco_grad[key], expected, rtol=1e-3, atol=1e-5 * expected.abs().max()), key


def test_resume_with_an_adapter_is_bit_identical(train_run, tmp_path):
    _, straight, _ = train_run("method=dco_dti", "train.steps=4", run_dir=tmp_path / "straight")
    a = {k: v.clone() for k, v in straight.adapter.weights().items()}
    straight.adapter.remove()
    _, first, _ = train_run("method=dco_dti", "train.steps=2", run_dir=tmp_path / "resumed")
    first.adapter.remove()
    (tmp_path / "resumed" / "done.json").unlink()
    _, resumed, _ = train_run("method=dco_dti", "train.steps=4", run_dir=tmp_path / "resumed")
    b = resumed.adapter.weights()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for name in ("learned_embeds.safetensors", "learned_embeds_2.safetensors"):
        assert torch.equal(load_file(tmp_path / "straight" / "embeddings" / name)["<toy>"],
                           load_file(tmp_path / "resumed" / "embeddings" / name)["<toy>"])
    resumed.adapter.remove()


def test_packing_trains_adapter_methods_on_their_own(tmp_path, caplog):
    import logging

    caplog.set_level(logging.INFO)
    job.run(compose_cfg([*FAST, "method=lora_dti", "adapter.rank=2", "adapter.alpha=2", "data.subject=all",
                         "pack=2", "train.steps=2"]), tmp_path / "all")
    assert "not packed (an adapter trains per concept)" in caplog.text
    assert all((tmp_path / name / "adapter" / "pytorch_lora_weights.safetensors").is_file() for name in ("toy", "ball"))


BASELINES = {  # method: (optimizer, lr, weight decay, kappa, magnitude, steps, adapter, rank, alpha, objective)
    "crossinit": ("AdamW", 0.02, 0.01, 0.0, "Free", 400, "none", 4, 4.0, "mse"),
    "dco_ti": ("AdamW", 5e-5, 0.01, 0.0, "Free", 250, "lora", 4, 4.0, "dco"),
    "dco_dti": ("RiemannianSGD", 0.04, None, 1e-4, "VocabNorm", 250, "lora", 4, 4.0, "dco"),
    "oft": ("AdamW", 0.02, 0.01, 0.0, "Free", 150, "oft", 4, 4.0, "mse"),
    "oft_ti": ("AdamW", 5e-5, 0.01, 0.0, "Free", 150, "oft", 4, 4.0, "mse"),
    "oft_dti": ("RiemannianSGD", 0.04, None, 1e-4, "VocabNorm", 150, "oft", 4, 4.0, "mse"),
    "lora_ti": ("AdamW", 0.02, 0.01, 0.0, "Free", 400, "lora", 32, 32.0, "mse"),
    "lora_dti": ("RiemannianSGD", 0.04, None, 1e-4, "VocabNorm", 400, "lora", 32, 32.0, "mse"),
}


@pytest.mark.parametrize("method", sorted(BASELINES))
def test_baselines_compose_with_the_official_hyper_parameters(method):
    cfg = compose_cfg([f"method={method}", "model=sdxl"])
    o, a = cfg.optimizer, cfg.adapter
    got = (o._target_.rsplit(".", 1)[-1], o.lr, o.get("weight_decay"), o.kappa, cfg.magnitude._target_.rsplit(
        ".", 1)[-1], cfg.train.steps, a.kind, a.rank, a.alpha, cfg.method.objective)
    assert got == BASELINES[method]
    assert (a.lr, a.weight_decay, a.start_step, list(a.targets)) == (5e-5, 0.01, 2, ["to_q", "to_k", "to_v"])
    assert cfg.method.dco_beta == 1000.0
    experiments = {"table8": "dco_ti,dco_dti", "fig11": "lora_ti,lora_dti", "oft": "oft,oft_ti,oft_dti"}
    for name, methods in experiments.items():
        assert compose_cfg([f"+experiment={name}"], hydra=True).hydra.sweeper.params.method == methods
    assert compose_cfg(["+experiment=table2"], hydra=True).hydra.sweeper.params.method == "ti,dti,crossinit"
