"""SANA 1.5 and Wan2.1 adapters on their tiny offline variants: training, frozen rows, export round trip."""

import pytest
import torch
from helpers import FAST
from safetensors.torch import load_file

import dti
from dti.backbones.sana import _prepend_zeros, default_complex_human_instruction
from dti.offline.tiny import tiny_path
from dti.offline.tokenizers import gemma_style_tokenizer, t5_style_tokenizer

pytestmark = pytest.mark.slow
DIM = {"tiny_sana": 32, "tiny_wan": 32}
KEY = {"tiny_sana": "gemma2", "tiny_wan": "umt5xxl"}


def test_offline_tokenizers_have_the_expected_structure():
    gemma, t5 = gemma_style_tokenizer(), t5_style_tokenizer()
    assert len(gemma) == 693 and (gemma.pad_token_id, gemma.eos_token_id, gemma.bos_token_id) == (0, 1, 2)
    assert gemma("a photo of a dog").input_ids[0] == 2  # Gemma adds <bos>
    assert len(t5) == 209 and (t5.pad_token_id, t5.eos_token_id) == (0, 1)
    assert t5("a dog").input_ids[-1] == 1  # T5 appends </s>
    assert len(gemma("toy", add_special_tokens=False).input_ids) == 1


@pytest.mark.parametrize("model", ["tiny_sana", "tiny_wan"])
@pytest.mark.parametrize("optimizer,magnitude", [("rsgd", "mean"), ("adamw_proj", "mean"), ("adamw", "none")])
def test_each_optimizer_trains_and_keeps_the_vocabulary_frozen(train_run, model, optimizer, magnitude):
    from helpers import frozen_state

    from dti.run.build import build_backbone

    done, trainer, run_dir = train_run(f"model={model}", f"optimizer={optimizer}", f"magnitude={magnitude}")
    reference = frozen_state(build_backbone(trainer_cfg(model)))
    after = frozen_state(trainer.backbone)
    assert after.keys() == reference.keys() and all(torch.equal(after[k], reference[k]) for k in reference)
    rows = load_file(run_dir / "embeddings" / "learned_embeds.safetensors")["<toy>"]
    assert rows.shape == (1, DIM[model]) and rows.dtype == torch.float32
    file_key = {"tiny_sana": "gemma", "tiny_wan": "umt5xxl"}[model]  # OneTrainer's SANA key; ComfyUI's UMT5 one
    assert torch.equal(load_file(run_dir / "embeddings" / "toy-dti.safetensors")[file_key], rows)
    table = trainer.concept.tables[KEY[model]]
    assert not torch.allclose(table.weight, table.prior)
    if magnitude == "mean":  # over the rows the tokenizer can produce (UMT5's table has 64 spare rows)
        slot = trainer.backbone.encoders[0]
        vocab = slot.input_embeddings().frozen.weight[: len(gemma_style_tokenizer() if model == "tiny_sana"
                                                             else t5_style_tokenizer())]
        assert torch.allclose(rows.norm(dim=-1), vocab.norm(dim=-1).mean(), rtol=1e-5)
    assert done["step"] == 4


def trainer_cfg(model):
    from helpers import compose_cfg

    return compose_cfg([*FAST, f"model={model}"])


@pytest.mark.parametrize("model", ["tiny_sana", "tiny_wan"])
def test_fresh_stock_pipeline_reproduces_the_training_prompt_encoding(train_run, model):
    from diffusers import SanaPipeline, WanPipeline

    _, trainer, run_dir = train_run(f"model={model}")
    backbone = trainer.backbone
    prompt = "a photo of a <toy> on the beach"
    with torch.no_grad():
        trained = backbone.encode_text(backbone.tokenize([prompt], sampling=True))
    pipe = (SanaPipeline if model == "tiny_sana" else WanPipeline).from_pretrained(tiny_path(model))
    assert dti.load_embeddings(pipe, run_dir) == ["<toy>"]
    # under no_grad, as in the pipeline's __call__ (with autograd on, CPU SDPA may pick another kernel: ~5e-7)
    with torch.no_grad():
        embeds, mask = stock_encoding(pipe, model, prompt)
    if mask is not None:
        assert torch.equal(mask, trained["mask"])
    assert torch.equal(embeds, trained["prompt_embeds"])


def stock_encoding(pipe, model, prompt, instruction=None):
    if model == "tiny_sana":
        embeds, mask, _, _ = pipe.encode_prompt(prompt, do_classifier_free_guidance=False, device="cpu",
                                                max_sequence_length=128, complex_human_instruction=instruction)
        return embeds, mask
    embeds, _ = pipe.encode_prompt(prompt, do_classifier_free_guidance=False, device="cpu", max_sequence_length=128)
    return embeds, None


def test_sana_instruction_is_one_value_used_where_configured(train_run):
    from diffusers import SanaPipeline

    _, trainer, run_dir = train_run("model=tiny_sana", "model.complex_human_instruction=default",
                                    "model.instruction_stages=[sample]")  # the official train/sample mismatch
    b = trainer.backbone
    train_ids, sample_ids = b.tokenize(["a photo of a <toy>"])[0], b.tokenize(["a photo of a <toy>"], True)[0]
    assert train_ids.shape[1] == 128 and sample_ids.shape[1] > 128
    pipe = SanaPipeline.from_pretrained(tiny_path("tiny_sana"))
    dti.load_embeddings(pipe, run_dir)
    with torch.no_grad():
        embeds, mask = stock_encoding(pipe, "tiny_sana", "a photo of a <toy>", default_complex_human_instruction())
        ours = b.encode_text([sample_ids])
    assert torch.equal(embeds, ours["prompt_embeds"]) and torch.equal(mask, ours["mask"])


def test_zero_pad_inserts_zero_vectors_after_bos_and_keeps_length():
    embeds = torch.arange(1, 17, dtype=torch.float32).view(2, 4, 2)  # row 1: BOS [9,10], then [11,12], ...
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0]])
    shifted, new_mask = _prepend_zeros(embeds, mask, torch.tensor([0, 2]))
    assert torch.equal(shifted[0], embeds[0]) and torch.equal(new_mask[0], mask[0])
    assert shifted[1].tolist() == [[9.0, 10.0], [0.0, 0.0], [0.0, 0.0], [11.0, 12.0]]
    assert new_mask[1].tolist() == [1, 1, 1, 1]


def test_sana_trains_with_zero_pad(train_run):
    done, trainer, _ = train_run("model=tiny_sana", "model.zero_pad_scale=2")
    counts = trainer.backbone.text_augmentation(1000, torch.Generator().manual_seed(0))["zero_pad"]
    assert counts.min() == 0 and counts.max() <= 15 and 1.0 < counts.float().mean() < 2.0  # E[floor(Exp(2))]≈1.54
    assert done["step"] == 4


@pytest.mark.parametrize("model", ["tiny_sana", "tiny_wan"])
def test_gradient_accumulation_matches_one_big_batch(train_run, tmp_path, model):
    _, big, _ = train_run(f"model={model}", "train.batch_size=4", "train.grad_accum=1", run_dir=tmp_path / "big")
    _, acc, _ = train_run(f"model={model}", "train.batch_size=2", "train.grad_accum=2", run_dir=tmp_path / "acc")
    key = KEY[model]
    assert torch.allclose(big.concept.tables[key].weight, acc.concept.tables[key].weight, atol=1e-5)


@pytest.mark.parametrize("model", ["tiny_sana", "tiny_wan"])
def test_resume_is_bit_identical(train_run, tmp_path, model):
    _, _, straight = train_run(f"model={model}", "train.steps=6", run_dir=tmp_path / "straight")
    train_run(f"model={model}", "train.steps=4", run_dir=tmp_path / "resumed")  # checkpoint at 4 ...
    (tmp_path / "resumed" / "done.json").unlink()
    _, trainer, resumed = train_run(f"model={model}", "train.steps=6", run_dir=tmp_path / "resumed")  # ... to 6
    assert trainer.step == 6
    a = load_file(straight / "embeddings" / "learned_embeds.safetensors")["<toy>"]
    b = load_file(resumed / "embeddings" / "learned_embeds.safetensors")["<toy>"]
    assert torch.equal(a, b)


@pytest.mark.parametrize("model", ["tiny_sana", "tiny_wan"])
def test_validation_images(train_run, model):
    from PIL import Image

    _, _, run_dir = train_run(f"model={model}", "train.validation.enabled=true", "train.validation.seeds=[0,1]")
    assert Image.open(run_dir / "validation" / "step_000004.png").size == (64, 64)  # 2 seeds x 2 prompts


def test_sana_multi_vector_concept_from_a_two_word_initializer(train_run):
    _, trainer, run_dir = train_run("model=tiny_sana", "data.initializer='stuffed animal'")
    slot = trainer.backbone.encoders[0]
    in_prompt = slot.tokenizer("a stuffed animal", add_special_tokens=False).input_ids[1:]  # as inside a prompt
    assert len(trainer.concept.tokens) == len(in_prompt)
    vocab = slot.input_embeddings().frozen.weight
    assert torch.allclose(trainer.concept.tables["gemma2"].prior,
                          torch.nn.functional.normalize(vocab[in_prompt].float(), dim=-1))
    assert load_file(run_dir / "embeddings" / "learned_embeds.safetensors")["<toy>"].shape[0] == len(in_prompt)
