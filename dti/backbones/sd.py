"""Stable Diffusion 1.x / 2.x: one CLIP text encoder, a UNet, ε-prediction DDPM training.

SD1.5 (CLIP-L, 768) and SD2.1-base (OpenCLIP-H, 1024) differ only in their checkpoints, so one adapter serves
both. The conditioning is `StableDiffusionPipeline.encode_prompt` with `clip_skip=None`: the text encoder's last
hidden state (after its final LayerNorm). SD2.x conditions on OpenCLIP's penultimate layer, and diffusers ships its
text encoder with the last layer removed (23 of 24 layers), so its last hidden state is that layer: nothing here
depends on which checkpoint is loaded. Embedding files: the diffusers file, and A1111's `.pt` and kohya's
`emb_params` safetensors (dti.method.formats).
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTokenizer

from dti.backbones.base import (
    Backbone,
    TextEncoderSlot,
    check_tokenizer_size,
    load_scheduler_config,
    sampling_scheduler,
)
from dti.backbones.images import to_pil
from dti.backbones.objectives import NoisePrediction, mse
from dti.core import checks
from dti.core.runtime import resolve_device, resolve_dtype
from dti.method.formats import a1111_pt_file, emb_params_file, read_token_file

ENCODER_KEYS = ("clip_l", "clip_h")


class StableDiffusionBackbone(Backbone):
    name = "sd"

    def __init__(
        self, pretrained: str, revision: str | None = None, variant: str | None = None, device: str = "auto",
        dtype: str = "auto", vae_dtype: str = "float32", compile: bool = False, encoder_key: str = "clip_l",
    ):
        # names the rows in logs and checkpoints: clip_l (SD1.x's CLIP-L) or clip_h (SD2.x's OpenCLIP-H)
        encoder_key = checks.choice("model.encoder_key", encoder_key, ENCODER_KEYS)
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.vae_dtype = resolve_dtype(vae_dtype, self.device, "model.vae_dtype")
        kw = dict(revision=revision, variant=variant)
        self.tokenizer = CLIPTokenizer.from_pretrained(pretrained, subfolder="tokenizer", revision=revision)
        self.text_encoder = CLIPTextModel.from_pretrained(pretrained, subfolder="text_encoder", dtype=self.dtype, **kw)
        self.unet = UNet2DConditionModel.from_pretrained(pretrained, subfolder="unet", torch_dtype=self.dtype, **kw)
        self.vae = AutoencoderKL.from_pretrained(pretrained, subfolder="vae", torch_dtype=self.vae_dtype, **kw)
        scheduler_config = load_scheduler_config(pretrained, revision)
        self.sample_scheduler = sampling_scheduler(scheduler_config)  # PNDM for both published checkpoints
        train_scheduler = DDPMScheduler.from_config(scheduler_config)
        self.objective = NoisePrediction(
            train_scheduler.alphas_cumprod, train_scheduler.config.prediction_type, self.device
        )
        self.freeze(self.unet, self.text_encoder, self.vae, compile=compile)
        self.encoders = [TextEncoderSlot(encoder_key, self.tokenizer, self.text_encoder, "learned_embeds.safetensors",
                                         self.tokenizer.model_max_length, len(self.tokenizer))]
        check_tokenizer_size(self.encoders[0], pretrained, exact=True)
        self.vae_scale = self.vae.config.scaling_factor
        self.resolution_multiple = self.latent_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)

    def encode_pixels(self, pixels):
        dist = self.vae.encode(pixels.to(self.device, self.vae_dtype)).latent_dist
        return dist.mean * self.vae_scale, dist.std * self.vae_scale

    def encode_text(self, token_ids, augment=None):
        # as encode_prompt with clip_skip=None; no attention mask (neither checkpoint sets use_attention_mask)
        (ids,) = token_ids
        return {"prompt_embeds": self.text_encoder(ids).last_hidden_state}

    def loss(self, noisy, t, target, cond, extras, per_sample=False):
        prediction = self.unet(noisy.to(self.dtype), t, encoder_hidden_states=cond["prompt_embeds"].to(self.dtype)
                               ).sample
        return mse(prediction.float(), target, per_sample)

    # -- sampling with the loaded components ----------------------------------------------------------------
    pipeline_class = StableDiffusionPipeline
    denoiser_name = "unet"  # the pipeline component an adapter sits on
    tool_files = (a1111_pt_file, emb_params_file)
    modelspec_implementation = "https://github.com/Stability-AI/generative-models"  # kohya's for TI files

    @property
    def modelspec_architecture(self) -> str:  # kohya's ids: SD1.x, SD2.x at 512 (ε) or 768 (v)
        if self.encoders[0].key == "clip_l":
            return "stable-diffusion-v1"
        return "stable-diffusion-v2-768-v" if self.objective.prediction_type == "v_prediction" else \
            "stable-diffusion-v2-512"

    @classmethod
    def layout(cls, encoder_key: str | None = None):
        return ((encoder_key or "clip_l", "text_encoder", "learned_embeds.safetensors"),)

    def pipeline_components(self):
        return dict(vae=self.vae, text_encoder=self.text_encoder, tokenizer=self.tokenizer, unet=self.unet,
                    scheduler=self.sample_scheduler, safety_checker=None, feature_extractor=None,
                    requires_safety_checker=False)

    @classmethod
    def load_into_pipeline(cls, pipe, folder, token=None):
        """Stock diffusers loading of the diffusers file (a multi-vector `<dog>` is expanded by the pipeline)."""
        path = Path(folder) / "learned_embeds.safetensors"
        saved, rows = read_token_file(path)
        token = token or saved
        pipe.load_textual_inversion(str(path), token=token)
        return [token] + [f"{token}_{i}" for i in range(1, rows.shape[0])]

    @torch.no_grad()
    def generate(self, prompts, seeds, height, width, num_inference_steps, guidance_scale, negative_prompt=None):
        cond = self.encode_text(self.tokenize(prompts, sampling=True))
        # the pipeline's default negative prompt is the empty one, encoded like any prompt
        negative = [negative_prompt or ""] * len(prompts)
        uncond = self.encode_text(self.tokenize(negative, sampling=True))
        latents = self.pipeline(
            prompt_embeds=cond["prompt_embeds"], negative_prompt_embeds=uncond["prompt_embeds"],
            height=height, width=width, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
            output_type="latent", generator=self.generators(seeds),
        ).images
        return to_pil(self.vae.decode(latents.to(self.vae_dtype) / self.vae_scale).sample)
