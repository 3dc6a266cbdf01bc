"""model.pretrained as one checkpoint file in the original Stable Diffusion layout (an A1111/ComfyUI-style SD1.5 or
SDXL fine-tune): the tiny SD1.5 and SDXL are written in that layout (diffusers has no writer, so the renaming is
done here, the reverse of diffusers' conversion tables), then loaded through the run's own path; every weight must
come back."""

import re

import pytest
import torch
from diffusers.loaders.single_file_utils import DIFFUSERS_TO_LDM_MAPPING
from helpers import compose_cfg
from safetensors.torch import save_file

from dti.core.errors import InputError
from dti.offline.tiny import tiny_path
from dti.run.build import build_backbone
from dti.run.validate import check_model

RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "norm2": "out_layers.0", "conv2": "out_layers.3",
          "time_emb_proj": "emb_layers.1", "conv_shortcut": "skip_connection"}
VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _rename(rest: str, table: dict) -> str:
    """The module name right after the block index, in the original's words."""
    for new, old in table.items():
        if rest.startswith(new + "."):
            return old + rest[len(new):]
    return rest


def ldm_unet_key(key: str, config) -> str:
    """A diffusers UNet key under its original name (input_blocks / middle_block / output_blocks)."""
    layers = DIFFUSERS_TO_LDM_MAPPING["unet"]["layers"]  # conv_in, time embedding, conv_out: diffusers -> original
    if key in layers:
        return layers[key]
    per = config.layers_per_block + 1  # resnets per level in the original layout (one is the down/upsampler)
    if m := re.match(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)", key):
        block, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        index = block * per + j + 1
        return f"input_blocks.{index}." + ("0." + _rename(rest, RESNET) if kind == "resnets" else "1." + rest)
    if m := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", key):
        return f"input_blocks.{(int(m[1]) + 1) * per}.0.op.{m[2]}"
    if m := re.match(r"mid_block\.resnets\.(\d+)\.(.*)", key):
        return f"middle_block.{2 * int(m[1])}.{_rename(m[2], RESNET)}"
    if m := re.match(r"mid_block\.attentions\.0\.(.*)", key):
        return f"middle_block.1.{m[1]}"
    if m := re.match(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)", key):
        block, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        return f"output_blocks.{block * per + j}." + ("0." + _rename(rest, RESNET) if kind == "resnets"
                                                      else "1." + rest)
    if m := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)", key):
        block = int(m[1])
        has_attention = config.up_block_types[block].startswith("CrossAttn")
        return f"output_blocks.{block * per + per - 1}.{2 if has_attention else 1}.conv.{m[2]}"
    raise KeyError(key)


def ldm_vae_key(key: str, num_blocks: int) -> str:
    fixed = DIFFUSERS_TO_LDM_MAPPING["vae"]  # conv_in/out, norm_out, quant convs: diffusers -> original
    if key in fixed:
        return fixed[key]
    if m := re.match(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.*)", key):
        return f"{m[1]}.mid.block_{int(m[2]) + 1}.{m[3].replace('conv_shortcut', 'nin_shortcut')}"
    if m := re.match(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.*)", key):
        return f"{m[1]}.mid.attn_1.{_rename(m[2], VAE_ATTENTION)}"
    if m := re.match(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", key):
        return f"encoder.down.{m[1]}.block.{m[2]}.{m[3].replace('conv_shortcut', 'nin_shortcut')}"
    if m := re.match(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", key):
        return f"encoder.down.{m[1]}.downsample.conv.{m[2]}"
    if m := re.match(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", key):  # the original counts upward
        return f"decoder.up.{num_blocks - 1 - int(m[1])}.block.{m[2]}.{m[3].replace('conv_shortcut', 'nin_shortcut')}"
    if m := re.match(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)", key):
        return f"decoder.up.{num_blocks - 1 - int(m[1])}.upsample.conv.{m[2]}"
    raise KeyError(key)


def clip_keys(encoder) -> dict:
    """transformers' CLIP under its original names (text_model.*; transformers 5 drops that prefix)."""
    return {f"text_model.{k.removeprefix('text_model.')}": v for k, v in encoder.state_dict().items()}


def open_clip_keys(encoder) -> dict:
    """SDXL's second text encoder in OpenCLIP's layout: resblocks, q/k/v packed into in_proj, the projection
    transposed (the reverse of diffusers' convert_open_clip_checkpoint)."""
    names = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj",
             "self_attn.out_proj": "attn.out_proj"}
    ends = {"text_model.embeddings.position_embedding.weight": "positional_embedding",
            "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
            "text_model.final_layer_norm.weight": "ln_final.weight",
            "text_model.final_layer_norm.bias": "ln_final.bias"}
    state, out = clip_keys(encoder), {}
    for key, value in state.items():
        if key in ends:
            out[ends[key]] = value
        elif key == "text_model.text_projection.weight" or key == "text_projection.weight":
            out["text_projection"] = value.T
        elif m := re.match(r"text_model\.encoder\.layers\.(\d+)\.(.*)", key):
            layer, rest = m[1], m[2]
            if qkv := re.match(r"self_attn\.q_proj\.(weight|bias)", rest):
                kind = qkv[1]
                parts = [state[f"text_model.encoder.layers.{layer}.self_attn.{x}_proj.{kind}"] for x in "qkv"]
                out[f"transformer.resblocks.{layer}.attn.in_proj_{kind}"] = torch.cat(parts)
            elif not re.match(r"self_attn\.[kv]_proj\.", rest):
                out[f"transformer.resblocks.{layer}.{_rename(rest, names)}"] = value
        else:
            raise KeyError(key)
    return out


def write_single_file(pipeline_class, folder, path):
    """A tiny pipeline folder as one original-layout file: model.diffusion_model.* (UNet), first_stage_model.*
    (VAE), and the text encoders: SD1's is transformers' CLIP under cond_stage_model.transformer.; SDXL's are
    CLIP under conditioner.embedders.0.transformer. and OpenCLIP under conditioner.embedders.1.model."""
    pipe = pipeline_class.from_pretrained(folder, **({"safety_checker": None} if "safety_checker" in
                                                     pipeline_class._optional_components else {}))
    unet = pipe.unet.config
    extra = DIFFUSERS_TO_LDM_MAPPING["unet"]["addition_embed_type"] if unet.addition_embed_type else {}
    state = {f"model.diffusion_model.{extra[k] if k in extra else ldm_unet_key(k, unet)}": v
             for k, v in pipe.unet.state_dict().items()}
    blocks = len(pipe.vae.config.block_out_channels)
    state |= {f"first_stage_model.{ldm_vae_key(k, blocks)}": v for k, v in pipe.vae.state_dict().items()}
    if hasattr(pipe, "text_encoder_2"):
        state |= {f"conditioner.embedders.0.transformer.{k}": v for k, v in clip_keys(pipe.text_encoder).items()}
        state |= {f"conditioner.embedders.1.model.{k}": v for k, v in open_clip_keys(pipe.text_encoder_2).items()}
    else:
        state |= {f"cond_stage_model.transformer.{k}": v for k, v in clip_keys(pipe.text_encoder).items()}
    save_file({k: fine_tuned(v).contiguous() for k, v in state.items()}, str(path))
    return pipe


def sdxl_with_distinct_encoder_widths(folder, out):
    """The tiny SDXL with a wider second text encoder (48, not 32), saved to `out`. diffusers tells SDXL's two
    encoders apart in a single file by their widths (768 and 1280 in the real model); at equal widths it would
    read the CLIP-L weights for both."""
    from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModelWithProjection

    pipe = StableDiffusionXLPipeline.from_pretrained(folder)
    torch.manual_seed(0)
    config = pipe.text_encoder_2.config
    config.hidden_size, config.intermediate_size = 48, 53
    pipe.text_encoder_2 = CLIPTextModelWithProjection(config)
    pipe.unet = UNet2DConditionModel.from_config({**pipe.unet.config, "cross_attention_dim": 32 + 48})
    pipe.save_pretrained(out)
    return out


def write_sd15_single_file(folder, path):
    from diffusers import StableDiffusionPipeline

    return write_single_file(StableDiffusionPipeline, folder, path)


def fine_tuned(weight: torch.Tensor) -> torch.Tensor:
    """The file's weights differ from the folder's (which the loader also reads, for the configs): a weight that
    came from the folder instead of the file would be caught."""
    return weight + 0.5 if weight.is_floating_point() else weight


@pytest.mark.parametrize("model,tiny,pipeline,encoders", [
    ("sd15", "tiny_sd15", "StableDiffusionPipeline", ("text_encoder",)),
    ("sdxl", "tiny_sdxl", "StableDiffusionXLPipeline", ("text_encoder", "text_encoder_2")),
])
def test_a_single_file_loads_with_every_weight(model, tiny, pipeline, encoders, tmp_path):
    import diffusers

    folder = tiny_path(tiny)
    if model == "sdxl":
        folder = sdxl_with_distinct_encoder_widths(folder, tmp_path / "base")
    path = tmp_path / "finetune.safetensors"
    pipe = write_single_file(getattr(diffusers, pipeline), folder, path)
    cfg = compose_cfg([f"model={model}", f"model.pretrained={path}", f"model.single_file_config={folder}",
                       "model.device=cpu", "stage=[train]", "data=synthetic"])
    check_model(cfg)  # the run's checks before any stage accept it
    backbone = build_backbone(cfg)
    for name in ("unet", "vae", *encoders):
        expected, got = getattr(pipe, name).state_dict(), getattr(backbone, name).state_dict()
        assert got.keys() == expected.keys(), name
        assert all(torch.equal(got[k], fine_tuned(expected[k])) for k in expected), name
    assert backbone.tokenizer.get_vocab() == pipe.tokenizer.get_vocab()
    assert dict(backbone.sample_scheduler.config) == dict(pipe.scheduler.config)


@pytest.mark.parametrize("overrides,field", [
    (["model.pretrained=/no/such/finetune.safetensors"], "model.pretrained="),
    (["model.pretrained=/no/such/finetune.ckpt", "model.single_file_config=/no/such/folder"], "model.pretrained="),
])
def test_single_file_problems_are_one_line_before_loading(overrides, field, tmp_path):
    cfg = compose_cfg(["model=sd15", "model.device=cpu", "stage=[train]", "data=synthetic", *overrides])
    with pytest.raises(InputError, match=re.escape(field)):
        check_model(cfg)


def test_single_file_config_needs_a_folder_with_model_index(tmp_path):
    path = tmp_path / "finetune.safetensors"
    path.write_bytes(b"")
    cfg = compose_cfg(["model=sd15", f"model.pretrained={path}", f"model.single_file_config={tmp_path}",
                       "model.device=cpu", "stage=[train]", "data=synthetic"])
    with pytest.raises(InputError, match="model.single_file_config=.*model_index.json"):
        check_model(cfg)


def test_a_single_file_without_configs_offline_is_one_line(tmp_path):
    path = tmp_path / "finetune.safetensors"
    write_sd15_single_file(tiny_path("tiny_sd15"), path)
    cfg = compose_cfg(["model=sd15", f"model.pretrained={path}", "model.device=cpu", "stage=[train]",
                       "data=synthetic"])  # the hub is off in the tests: diffusers cannot fetch SD1.5's configs
    with pytest.raises(InputError, match="model.single_file_config=None: diffusers found no configs"):
        build_backbone(cfg)
