"""Stable Diffusion XL: two CLIP text encoders, a UNet with micro-conditioning, ε-prediction DDPM training."""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    DDPMScheduler,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

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
from dti.method.formats import file_metadata, read_token_file


def use_eos_pooling(text_encoder: torch.nn.Module, eos_token_id: int) -> None:
    """Pool CLIP's output at the EOS position, also for checkpoints with the legacy `eos_token_id: 2` config.

    With that config transformers pools at argmax(input_ids), which is the *placeholder* as soon as a token is
    added to the vocabulary (its id is larger than EOS). SDXL's hub configs are legacy, so stock diffusers
    textual inversion on SDXL conditions on the new token's hidden state instead of EOS's.
    """
    text_encoder.config.eos_token_id = eos_token_id
    text_encoder.text_model.eos_token_id = eos_token_id


POOLINGS = ("eos", "placeholder")


def time_ids(extras: dict[str, torch.Tensor]) -> torch.Tensor:
    """SDXL's micro-conditioning per sample: original size, crop top-left (in resized pixels), target size."""
    return torch.cat([extras["original_size"], extras["crop_top_left"], extras["target_size"]], dim=-1)


class SDXLBackbone(Backbone):
    denoiser_name = "unet"  # the pipeline component an adapter sits on
    name = "sdxl"

    def __init__(
        self, pretrained: str, revision: str | None = None, variant: str | None = None, vae: str | None = None,
        device: str = "auto", dtype: str = "auto", vae_dtype: str = "float32", compile: bool = False,
        pooling: str = "eos",
    ):
        self.pooling = checks.choice("model.pooling", pooling, POOLINGS)
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.vae_dtype = resolve_dtype(vae_dtype, self.device, "model.vae_dtype")
        kw = dict(revision=revision, variant=variant)
        self.tokenizer = CLIPTokenizer.from_pretrained(pretrained, subfolder="tokenizer", revision=revision)
        self.tokenizer_2 = CLIPTokenizer.from_pretrained(pretrained, subfolder="tokenizer_2", revision=revision)
        self.text_encoder = CLIPTextModel.from_pretrained(pretrained, subfolder="text_encoder", dtype=self.dtype, **kw)
        self.text_encoder_2 = CLIPTextModelWithProjection.from_pretrained(
            pretrained, subfolder="text_encoder_2", dtype=self.dtype, **kw
        )
        self.unet = UNet2DConditionModel.from_pretrained(pretrained, subfolder="unet", torch_dtype=self.dtype, **kw)
        # the SDXL VAE overflows in fp16 (its config sets force_upcast); fp32 costs little since latents are cached
        self.vae = AutoencoderKL.from_pretrained(vae or pretrained, subfolder=None if vae else "vae",
                                                 torch_dtype=self.vae_dtype, **({} if vae else kw))
        scheduler_config = load_scheduler_config(pretrained, revision)
        self.sample_scheduler = sampling_scheduler(scheduler_config)
        train_scheduler = DDPMScheduler.from_config(scheduler_config)
        self.objective = NoisePrediction(
            train_scheduler.alphas_cumprod, train_scheduler.config.prediction_type, self.device
        )
        self.freeze(self.unet, self.text_encoder, self.text_encoder_2, self.vae, compile=compile)
        use_eos_pooling(self.text_encoder_2, self.tokenizer_2.eos_token_id)
        self.encoders = [
            TextEncoderSlot("clip_l", self.tokenizer, self.text_encoder, "learned_embeds.safetensors",
                            self.tokenizer.model_max_length, len(self.tokenizer)),
            TextEncoderSlot("clip_g", self.tokenizer_2, self.text_encoder_2, "learned_embeds_2.safetensors",
                            self.tokenizer_2.model_max_length, len(self.tokenizer_2)),
        ]
        for slot in self.encoders:
            check_tokenizer_size(slot, pretrained, exact=True)
        self.vae_scale = self.vae.config.scaling_factor
        self.resolution_multiple = self.latent_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)

    # -- data -----------------------------------------------------------------------------------------------
    def encode_pixels(self, pixels):
        dist = self.vae.encode(pixels.to(self.device, self.vae_dtype)).latent_dist
        return dist.mean * self.vae_scale, dist.std * self.vae_scale

    # -- conditioning ---------------------------------------------------------------------------------------
    def encode_text(self, token_ids, augment=None):
        ids_1, ids_2 = token_ids
        hidden_1 = self.text_encoder(ids_1, output_hidden_states=True).hidden_states[-2]
        out_2 = self.text_encoder_2(ids_2, output_hidden_states=True)
        if self.pooling == "eos":
            where = (ids_2 == self.tokenizer_2.eos_token_id).int().argmax(dim=-1)
        else:  # as the official code and stock diffusers: argmax(token id), the placeholder once one is added
            where = ids_2.int().argmax(dim=-1)
        rows = torch.arange(len(where), device=where.device)
        pooled = self.text_encoder_2.text_projection(out_2.last_hidden_state[rows, where])
        return {"prompt_embeds": torch.cat([hidden_1, out_2.hidden_states[-2]], dim=-1), "pooled": pooled}

    # -- training -------------------------------------------------------------------------------------------
    def loss(self, noisy, t, target, cond, extras, per_sample=False):
        prediction = self.unet(
            noisy.to(self.dtype), t, encoder_hidden_states=cond["prompt_embeds"].to(self.dtype),
            added_cond_kwargs={"text_embeds": cond["pooled"].to(self.dtype),
                               "time_ids": time_ids(extras).to(self.dtype)},
        ).sample
        return mse(prediction.float(), target, per_sample)

    # -- sampling with the loaded components ----------------------------------------------------------------
    pipeline_class = StableDiffusionXLPipeline
    modelspec_architecture = "stable-diffusion-xl-v1-base"
    modelspec_implementation = "https://github.com/Stability-AI/generative-models"  # kohya's for TI files
    encoder_layout = (("clip_l", "text_encoder", "learned_embeds.safetensors"),
                      ("clip_g", "text_encoder_2", "learned_embeds_2.safetensors"))

    def pipeline_components(self):
        return dict(vae=self.vae, text_encoder=self.text_encoder, text_encoder_2=self.text_encoder_2,
                    tokenizer=self.tokenizer, tokenizer_2=self.tokenizer_2, unet=self.unet,
                    scheduler=self.sample_scheduler)

    def embedding_metadata(self) -> dict[str, str]:
        return {"dti.pooling": self.pooling}

    @classmethod
    def load_into_pipeline(cls, pipe, folder, token=None):
        """Stock diffusers loading of both files, and the pooled embedding taken where training took it: stock
        diffusers pools at the placeholder (argmax of the token ids, SDXL's legacy config); a run trained with
        model.pooling=eos (recorded in its files) gets EOS pooling set."""
        folder = Path(folder)
        saved, rows = read_token_file(folder / "learned_embeds.safetensors")
        token = token or saved
        pipe.load_textual_inversion(str(folder / "learned_embeds.safetensors"), token=token,
                                    text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer)
        pipe.load_textual_inversion(str(folder / "learned_embeds_2.safetensors"), token=token,
                                    text_encoder=pipe.text_encoder_2, tokenizer=pipe.tokenizer_2)
        if file_metadata(folder / "learned_embeds_2.safetensors").get("dti.pooling", "eos") == "eos":
            use_eos_pooling(pipe.text_encoder_2, pipe.tokenizer_2.eos_token_id)
        return [token] + [f"{token}_{i}" for i in range(1, rows.shape[0])]

    @torch.no_grad()
    def generate(self, prompts, seeds, height, width, num_inference_steps, guidance_scale, negative_prompt=None):
        cond = self.encode_text(self.tokenize(prompts, sampling=True))
        if negative_prompt is None:  # SDXL base zeroes the unconditional embedding (force_zeros_for_empty_prompt)
            uncond = {k: torch.zeros_like(v) for k, v in cond.items()}
        else:
            uncond = self.encode_text(self.tokenize([negative_prompt] * len(prompts), sampling=True))
        latents = self.pipeline(
            prompt_embeds=cond["prompt_embeds"], pooled_prompt_embeds=cond["pooled"],
            negative_prompt_embeds=uncond["prompt_embeds"], negative_pooled_prompt_embeds=uncond["pooled"],
            height=height, width=width, num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale, output_type="latent",
            generator=self.generators(seeds),
        ).images
        return to_pil(self.vae.decode(latents.to(self.vae_dtype) / self.vae_scale).sample)

