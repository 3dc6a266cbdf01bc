"""Tiny random-weight backbones, built in code, saved with `save_pretrained` and loaded back from disk.

Tests and the demo run on these instead of hub checkpoints. They go through exactly the same `from_pretrained`
code path as a real checkpoint: the builder writes a diffusers pipeline folder once into the cache, and the
model config then points the ordinary adapter at that folder. Shapes are small, everything else is real: the
real 49 408-token CLIP tokenizer (with each checkpoint's pad token), the legacy `eos_token_id: 2` text-encoder
config of the SDXL and SD hub checkpoints, and the published scheduler configs.
"""

from __future__ import annotations

from pathlib import Path

import torch
from hydra.utils import get_class

from dti.backbones.base import sampling_scheduler
from dti.offline.cache import build_once
from dti.offline.clip_tokenizer import build_clip_tokenizer
from dti.offline.random_weights import load_config
from dti.offline.tokenizers import gemma_style_tokenizer, t5_style_tokenizer


def _tiny_clip_config(projection_dim: int, hidden_act: str = "gelu"):
    from transformers import CLIPTextConfig

    # bos/eos/pad ids as in SDXL's hub configs (eos 2 is the legacy value, see dti.backbones.sdxl.use_eos_pooling)
    return CLIPTextConfig(vocab_size=49408, hidden_size=32, intermediate_size=37, num_hidden_layers=3,
                          num_attention_heads=4, max_position_embeddings=77, projection_dim=projection_dim,
                          hidden_act=hidden_act, bos_token_id=0, eos_token_id=2, pad_token_id=1)


def _tiny_kl_vae(scaling_factor: float, force_upcast: bool):
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(16, 32), layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2, norm_num_groups=8,
        sample_size=32, scaling_factor=scaling_factor, force_upcast=force_upcast,
    )


def build_tiny_sdxl(folder: Path, seed: int = 0) -> None:
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection


    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=8, transformer_layers_per_block=(1, 1), cross_attention_dim=64,
        projection_class_embeddings_input_dim=6 * 8 + 32, norm_num_groups=8,
    )
    vae = _tiny_kl_vae(scaling_factor=0.13025, force_upcast=True)
    scheduler = EulerDiscreteScheduler(  # SDXL base's scheduler config
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
        prediction_type="epsilon", steps_offset=1, timestep_spacing="leading", interpolation_type="linear",
    )
    pipe = StableDiffusionXLPipeline(
        vae=vae, text_encoder=CLIPTextModel(_tiny_clip_config(32)), text_encoder_2=CLIPTextModelWithProjection(
            _tiny_clip_config(32)), tokenizer=build_clip_tokenizer(), tokenizer_2=build_clip_tokenizer(pad_token="!"),
        unet=unet, scheduler=scheduler,
    )
    pipe.save_pretrained(folder)


def _build_tiny_sd(folder: Path, seed: int, published: str, pad_token: str, hidden_act: str,
                   use_linear_projection: bool) -> None:
    """An SD1.x/2.x-shaped pipeline: the published checkpoint's tokenizer conventions, text activation, UNet
    projection type, VAE scale and scheduler config (dti/offline/archs/<published>.*.json); tiny shapes."""
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=use_linear_projection, cross_attention_dim=32,
        norm_num_groups=8,
    )
    scheduler = sampling_scheduler(load_config(f"{published}.scheduler"))
    StableDiffusionPipeline(
        vae=_tiny_kl_vae(scaling_factor=0.18215, force_upcast=True),
        text_encoder=CLIPTextModel(_tiny_clip_config(32, hidden_act)), tokenizer=build_clip_tokenizer(pad_token),
        unet=unet, scheduler=scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    ).save_pretrained(folder)


def build_tiny_sd15(folder: Path, seed: int = 0) -> None:
    # SD1.5: OpenAI CLIP-L (quick_gelu), padded with <|endoftext|>; conv projections in the UNet's transformers
    _build_tiny_sd(folder, seed, "sd1.5", "<|endoftext|>", "quick_gelu", use_linear_projection=False)


def build_tiny_sd21(folder: Path, seed: int = 0) -> None:
    # SD2.1-base: OpenCLIP-H (gelu), padded with "!" (its tokenizer's special_tokens_map); linear projections
    _build_tiny_sd(folder, seed, "sd2.1_base", "!", "gelu", use_linear_projection=True)


def build_tiny_sana(folder: Path, seed: int = 0) -> None:
    from diffusers import AutoencoderDC, DPMSolverMultistepScheduler, SanaPipeline, SanaTransformer2DModel
    from transformers import Gemma2Config, Gemma2Model


    torch.manual_seed(seed)
    tokenizer = gemma_style_tokenizer()
    # Gemma-2's ids (pad 0, eos 1, bos 2); head_dim is explicit, as in the real config (heads x head_dim != hidden)
    text_encoder = Gemma2Model(Gemma2Config(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, head_dim=8, pad_token_id=0, eos_token_id=1, bos_token_id=2,
    ))
    transformer = SanaTransformer2DModel(
        patch_size=1, in_channels=4, out_channels=4, num_layers=1, num_attention_heads=2, attention_head_dim=4,
        num_cross_attention_heads=2, cross_attention_head_dim=4, cross_attention_dim=8, caption_channels=32,
        sample_size=32,
    )
    vae = AutoencoderDC(
        in_channels=3, latent_channels=4, attention_head_dim=2, encoder_block_types=("ResBlock", "EfficientViTBlock"),
        decoder_block_types=("ResBlock", "EfficientViTBlock"), encoder_block_out_channels=(8, 8),
        decoder_block_out_channels=(8, 8), encoder_qkv_multiscales=((), (5,)), decoder_qkv_multiscales=((), (5,)),
        encoder_layers_per_block=(1, 1), decoder_layers_per_block=(1, 1), downsample_block_type="conv",
        upsample_block_type="interpolate", decoder_norm_types="rms_norm", decoder_act_fns="silu",
        scaling_factor=0.41407,
    )
    scheduler = DPMSolverMultistepScheduler(  # SANA 1.5's sampling scheduler config
        algorithm_type="dpmsolver++", prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0,
        final_sigmas_type="zero", solver_order=2, num_train_timesteps=1000,
    )
    SanaPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer,
                 scheduler=scheduler).save_pretrained(folder)


def build_tiny_wan(folder: Path, seed: int = 0) -> None:
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel


    torch.manual_seed(seed)
    tokenizer = t5_style_tokenizer()
    # like UMT5-XXL, the embedding table has spare rows beyond the tokenizer's vocabulary
    text_encoder = UMT5EncoderModel(UMT5Config(
        vocab_size=len(tokenizer) + 64, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    ))
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=16, out_channels=16,
        text_dim=32, freq_dim=256, ffn_dim=32, num_layers=2, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32,
    )
    vae = AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True])
    scheduler = UniPCMultistepScheduler(  # Wan2.1's sampling scheduler config
        prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0, num_train_timesteps=1000,
        solver_order=2, solver_type="bh2", final_sigmas_type="zero",
    )
    WanPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer,
                scheduler=scheduler).save_pretrained(folder)


BUILDERS = {"tiny_sdxl": build_tiny_sdxl, "tiny_sana": build_tiny_sana, "tiny_wan": build_tiny_wan,
            "tiny_sd15": build_tiny_sd15, "tiny_sd21": build_tiny_sd21}


def tiny_path(name: str, cache_dir: str | None = None) -> Path:
    return build_once(name, BUILDERS[name], cache_dir)


def tiny_sdxl_path(cache_dir: str | None = None) -> Path:
    return tiny_path("tiny_sdxl", cache_dir)


def load_tiny(adapter: str, tiny_name: str, cache_dir: str | None = None, **kwargs):
    """`model=tiny_*`: build (once) and load through the same adapter and path as the real model, e.g.
    `load_tiny("dti.backbones.sana.SanaBackbone", "tiny_sana")`."""
    return get_class(adapter)(pretrained=str(tiny_path(tiny_name, cache_dir)), **kwargs)


def load_tiny_sdxl(cache_dir: str | None = None, **kwargs):
    return load_tiny("dti.backbones.sdxl.SDXLBackbone", "tiny_sdxl", cache_dir, **kwargs)
