"""Saved embeddings in a *fresh* stock diffusers pipeline reproduce the training-time conditioning exactly."""

import pytest
import torch
from diffusers import StableDiffusionXLPipeline

import dti
from dti.offline.tiny import tiny_sdxl_path

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("initializer,n,pooling", [("toy", 1, "eos"), ("stuffed animal", 2, "eos"),
                                                    ("toy", 1, "placeholder"), ("stuffed animal", 2, "placeholder")])
def test_fresh_pipeline_reproduces_training_prompt_embeddings(train_run, initializer, n, pooling):
    _, trainer, run_dir = train_run(f"data.initializer='{initializer}'", f"model.pooling={pooling}")
    concept, backbone = trainer.concept, trainer.backbone
    assert len(concept.tokens) == n
    template = "a photo of a {} on the beach"
    with torch.no_grad():
        trained = backbone.encode_text(backbone.tokenize([concept.prompt(template)]))

    pipe = StableDiffusionXLPipeline.from_pretrained(tiny_sdxl_path())
    emb = run_dir / "embeddings"
    pipe.load_textual_inversion(str(emb / "learned_embeds.safetensors"), token="<toy>",
                                text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer)
    pipe.load_textual_inversion(str(emb / "learned_embeds_2.safetensors"), token="<toy>",
                                text_encoder=pipe.text_encoder_2, tokenizer=pipe.tokenizer_2)
    prompt = template.format("<toy>")  # the user writes the bare placeholder; diffusers expands multi-vector ones
    embeds, _, pooled, _ = pipe.encode_prompt(prompt, do_classifier_free_guidance=False, device="cpu")
    assert torch.equal(embeds, trained["prompt_embeds"])
    # SDXL's legacy eos_token_id=2 config makes stock transformers pool at argmax(id) = the new token: what the
    # official recipe trains with (model.pooling=placeholder), not what a model.pooling=eos run trained with ...
    assert torch.equal(pooled, trained["pooled"]) == (pooling == "placeholder")
    # ... dti.load_embeddings reads the run's pooling from its files and sets EOS pooling where it trained so
    fresh = StableDiffusionXLPipeline.from_pretrained(tiny_sdxl_path())
    assert dti.load_embeddings(fresh, run_dir) == concept.tokens
    embeds, _, pooled, _ = fresh.encode_prompt(prompt, do_classifier_free_guidance=False, device="cpu")
    assert torch.equal(embeds, trained["prompt_embeds"]) and torch.equal(pooled, trained["pooled"])


def test_a1111_comfyui_file_loads_through_diffusers(train_run):
    from safetensors.torch import load_file

    _, trainer, run_dir = train_run()
    state = load_file(run_dir / "embeddings" / "toy-dti.safetensors")
    assert {k: (tuple(v.shape), v.dtype) for k, v in state.items()} == {
        "clip_l": ((1, 32), torch.float32), "clip_g": ((1, 32), torch.float32)}
    pipe = StableDiffusionXLPipeline.from_pretrained(tiny_sdxl_path())
    pipe.load_textual_inversion(state["clip_l"], token="<toy>", text_encoder=pipe.text_encoder,
                                tokenizer=pipe.tokenizer)
    pipe.load_textual_inversion(state["clip_g"], token="<toy>", text_encoder=pipe.text_encoder_2,
                                tokenizer=pipe.tokenizer_2)
    new_id = pipe.tokenizer.convert_tokens_to_ids("<toy>")
    assert torch.equal(pipe.text_encoder.get_input_embeddings().weight[new_id], state["clip_l"][0])
    assert torch.equal(trainer.concept.embeddings()["clip_g"], state["clip_g"])
