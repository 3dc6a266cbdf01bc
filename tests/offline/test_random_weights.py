"""Random-weight checkpoints of the real architectures (dti.offline.random_weights): the shipped configs build
networks of the published sizes, and a checkpoint written by the builder (shrunk here) loads through the ordinary
adapter and trains, with a synthetic tokenizer of the configured length."""

import pytest
from helpers import compose_cfg

# parameters of each network (billions), counted on the meta device; published sizes of these checkpoints
PUBLISHED = {
    ("sdxl", "unet"): 2.567, ("sdxl", "text_encoder"): 0.123, ("sdxl", "text_encoder_2"): 0.695,
    ("sana_1.6b", "transformer"): 1.605, ("sana_1.6b", "vae"): 0.312, ("sana_1.6b", "text_encoder"): 2.614,
    ("sana_4.8b", "transformer"): 4.722,
    ("wan_1.3b", "transformer"): 1.419, ("wan_1.3b", "vae"): 0.127, ("wan_1.3b", "text_encoder"): 5.681,
    # SD2.1's OpenCLIP-H text tower has 354M parameters with its 24 layers; diffusers ships 23 (the penultimate
    # layer is the output SD2 conditions on), 340M
    ("sd15", "unet"): 0.860, ("sd15", "text_encoder"): 0.123, ("sd15", "vae"): 0.084,
    ("sd21_base", "unet"): 0.866, ("sd21_base", "text_encoder"): 0.340, ("sd21_base", "vae"): 0.084,
}


@pytest.mark.parametrize("model", ["sdxl", "sana_1.6b", "sana_4.8b", "wan_1.3b", "sd15", "sd21_base"])
def test_shipped_configs_build_the_published_networks(model):
    from dti.offline.random_weights import build_modules

    modules = build_modules(model, device="meta")
    for (name, part), billions in PUBLISHED.items():
        if name == model:
            count = sum(p.numel() for p in modules[part].parameters()) / 1e9
            assert count == pytest.approx(billions, abs=0.0015), (model, part, count)


SHRUNK = {  # the real layer types and wiring, a few channels and layers each, a 3000-token vocabulary
    "sana_1.6b": {
        "transformer": dict(num_layers=1, num_attention_heads=2, attention_head_dim=8, num_cross_attention_heads=2,
                            cross_attention_head_dim=8, cross_attention_dim=16, caption_channels=32),
        "vae": dict(attention_head_dim=4, encoder_block_out_channels=[8, 8, 8, 8, 16, 32],
                    decoder_block_out_channels=[8, 8, 8, 8, 16, 32],
                    encoder_layers_per_block=[1] * 6, decoder_layers_per_block=[1] * 6),
        "text_encoder": dict(vocab_size=3000, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                             num_attention_heads=2, num_key_value_heads=1, head_dim=16),
    },
    "wan_1.3b": {
        "transformer": dict(num_layers=1, num_attention_heads=2, attention_head_dim=12, ffn_dim=32, text_dim=32),
        "vae": dict(base_dim=8, num_res_blocks=1),
        "text_encoder": dict(vocab_size=3000, d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=4),
    },
}


@pytest.mark.parametrize("model,tokens", [("sana_1.6b", 3000), ("wan_1.3b", 3000 - 384)])
def test_a_random_checkpoint_loads_through_the_adapter_and_trains(tmp_path, model, tokens):
    from dti.offline.random_weights import build_random
    from dti.run import job
    from dti.run.build import build_backbone

    build_random(model, tmp_path / "ckpt", SHRUNK[model])
    common = [f"model={model}", f"model.pretrained={tmp_path / 'ckpt'}", "model.max_sequence_length=32",
              "data=synthetic", "stage=[train]", "train.steps=2",
              "train.batch_size=1", "train.grad_accum=1", "train.resolution=64", "train.validation.enabled=false"]
    cfg = compose_cfg(common)
    backbone = build_backbone(cfg)
    assert len(backbone.tokenizer) == tokens  # the synthetic tokenizer has the configured length
    assert backbone.tokenizer("a photo of a toy").input_ids[-2] != backbone.tokenizer.unk_token_id
    done = job.run(cfg, tmp_path / "run")["train"]
    assert done["step"] == 2 and (tmp_path / "run" / "embeddings" / "learned_embeds.safetensors").is_file()


def test_a_random_sd_checkpoint_loads_through_the_adapter_and_trains(tmp_path):
    from dti.offline.random_weights import build_random
    from dti.run import job
    from dti.run.build import build_backbone

    build_random("sd21_base", tmp_path / "ckpt", {  # the real layer types, a few channels; the real tokenizer
        "unet": dict(block_out_channels=[8, 8, 8, 8], layers_per_block=1, attention_head_dim=[2, 2, 2, 2],
                     norm_num_groups=4, cross_attention_dim=16),
        "vae": dict(block_out_channels=[4, 4, 4, 4], layers_per_block=1, norm_num_groups=4),
        "text_encoder": dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2),
    })
    cfg = compose_cfg(["model=sd21_base", f"model.pretrained={tmp_path / 'ckpt'}", "data=synthetic", "stage=[train]",
                       "train.steps=2", "train.batch_size=1", "train.resolution=64", "train.validation.enabled=false"])
    backbone = build_backbone(cfg)
    assert backbone.tokenizer.pad_token == "!" and type(backbone.sample_scheduler).__name__ == "PNDMScheduler"
    done = job.run(cfg, tmp_path / "run")["train"]
    assert done["step"] == 2 and (tmp_path / "run" / "embeddings" / "toy-dti.pt").is_file()
