"""Wan2.1 text-to-video, used for images: each image is a one-frame video. UMT5 text encoder, a 3-D DiT, the Wan
VAE with per-channel latent normalisation, flow-matching training."""

from __future__ import annotations

import torch
from diffusers import AutoencoderKLWan, WanPipeline, WanTransformer3DModel
from diffusers.pipelines.wan.pipeline_wan import prompt_clean
from transformers import AutoTokenizer, UMT5EncoderModel

from dti.backbones.base import (
    Backbone,
    TextEncoderSlot,
    check_tokenizer_size,
    load_scheduler_config,
    sampling_scheduler,
)
from dti.backbones.images import to_pil
from dti.backbones.objectives import FlowMatching, mse
from dti.core.runtime import resolve_device, resolve_dtype


class WanBackbone(Backbone):
    denoiser_name = "transformer"  # the pipeline component an adapter sits on
    name = "wan"

    def __init__(
        self, pretrained: str, revision: str | None = None, variant: str | None = None, device: str = "auto",
        dtype: str = "auto", vae_dtype: str = "float32", compile: bool = False, max_sequence_length: int = 512,
        train_shift: float = 1.0, negative_prompt: str = "", batch_cfg: bool = True,
    ):
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.vae_dtype = resolve_dtype(vae_dtype, self.device, "model.vae_dtype")
        kw = dict(revision=revision, variant=variant)
        self.tokenizer = AutoTokenizer.from_pretrained(pretrained, subfolder="tokenizer", revision=revision)
        self.text_encoder = UMT5EncoderModel.from_pretrained(pretrained, subfolder="text_encoder", dtype=self.dtype,
                                                             **kw)
        self.transformer = WanTransformer3DModel.from_pretrained(pretrained, subfolder="transformer",
                                                                 torch_dtype=self.dtype, **kw)
        self.vae = AutoencoderKLWan.from_pretrained(pretrained, subfolder="vae", torch_dtype=self.vae_dtype, **kw)
        scheduler_config = load_scheduler_config(pretrained, revision)
        self.sample_scheduler = sampling_scheduler(scheduler_config)
        self.objective = FlowMatching.from_scheduler_config(scheduler_config, train_shift, self.device)
        self.freeze(self.transformer, self.text_encoder, self.vae, compile=compile)
        # UMT5's table has more rows than the tokenizer has tokens: m* is taken over the rows it can produce
        self.encoders = [TextEncoderSlot("umt5xxl", self.tokenizer, self.text_encoder, "learned_embeds.safetensors",
                                         max_sequence_length, len(self.tokenizer), prompt_clean)]
        check_tokenizer_size(self.encoders[0], pretrained)
        shape = (1, self.vae.config.z_dim, 1, 1, 1)
        self.latents_mean = torch.tensor(self.vae.config.latents_mean, device=self.device).view(shape)
        self.latents_std = torch.tensor(self.vae.config.latents_std, device=self.device).view(shape)
        self.negative_prompt = negative_prompt
        self.batch_cfg = batch_cfg
        self.latent_factor = 2 ** len(self.vae.config.temperal_downsample)
        self.resolution_multiple = self.latent_factor * self.transformer.config.patch_size[1]

    def encode_pixels(self, pixels):
        dist = self.vae.encode(pixels.unsqueeze(2).to(self.device, self.vae_dtype)).latent_dist  # a 1-frame video
        return (dist.mean.float() - self.latents_mean) / self.latents_std, dist.std.float() / self.latents_std

    def encode_text(self, token_ids, augment=None):
        (ids,) = token_ids
        mask = (ids != self.tokenizer.pad_token_id).long()
        hidden = self.text_encoder(ids, attention_mask=mask).last_hidden_state
        # WanPipeline cuts each prompt to its real length and pads with zeros: the same as zeroing the padding
        return {"prompt_embeds": hidden * mask[..., None].to(hidden.dtype)}

    def loss(self, noisy, t, target, cond, extras, per_sample=False):
        prediction = self.transformer(noisy.to(self.dtype), timestep=t,
                                      encoder_hidden_states=cond["prompt_embeds"].to(self.dtype),
                                      return_dict=False)[0]
        return mse(prediction.float(), target, per_sample)

    pipeline_class = WanPipeline
    modelspec_architecture = "wan-2.1-t2v"  # no published ModelSpec id for Wan: dti's own
    modelspec_implementation = "https://github.com/Wan-Video/Wan2.1"
    encoder_layout = (("umt5xxl", "text_encoder", "learned_embeds.safetensors"),)

    @torch.no_grad()
    def generate(self, prompts, seeds, height, width, num_inference_steps, guidance_scale, negative_prompt=None):
        negative_prompt = self.negative_prompt if negative_prompt is None else negative_prompt
        cond = self.encode_text(self.tokenize(prompts, sampling=True))
        uncond = self.encode_text(self.tokenize([negative_prompt] * len(prompts), sampling=True))
        pipe = self.pipeline
        if self.batch_cfg and guidance_scale > 1 and not pipe.config.expand_timesteps:
            latents = self._denoise(cond["prompt_embeds"], uncond["prompt_embeds"], seeds, height, width,
                                    num_inference_steps, guidance_scale)
        else:
            latents = pipe(
                prompt_embeds=cond["prompt_embeds"], negative_prompt_embeds=uncond["prompt_embeds"], height=height,
                width=width, num_frames=1, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                generator=self.generators(seeds), output_type="latent",
            ).frames
        latents = latents.float() * self.latents_std + self.latents_mean
        video = self.vae.decode(latents.to(self.vae_dtype)).sample  # (B, 3, 1, H, W)
        return to_pil(video[:, :, 0])

    def _denoise(self, cond: torch.Tensor, uncond: torch.Tensor, seeds: list[int], height: int, width: int,
                 num_inference_steps: int, guidance_scale: float) -> torch.Tensor:
        """WanPipeline's sampling loop (same latents, timesteps, guidance and scheduler steps, in the same dtypes)
        with the conditional and unconditional passes in one denoiser call per step instead of two."""
        pipe, scheduler = self.pipeline, self.pipeline.scheduler
        scheduler.set_timesteps(num_inference_steps, device=self.device)
        scheduler.set_begin_index(0)
        latents = pipe.prepare_latents(len(seeds), self.transformer.config.in_channels, height, width, 1,
                                       torch.float32, self.device, self.generators(seeds))
        embeds = torch.cat([cond, uncond]).to(self.dtype)
        for t in scheduler.timesteps:
            x = latents.to(self.dtype)
            both = self.transformer(hidden_states=torch.cat([x, x]), timestep=t.expand(2 * len(x)),
                                    encoder_hidden_states=embeds, return_dict=False)[0]
            noise_cond, noise_uncond = both.chunk(2)
            guided = noise_uncond + guidance_scale * (noise_cond - noise_uncond)
            latents = scheduler.step(guided, t, latents, return_dict=False)[0]
        return latents
