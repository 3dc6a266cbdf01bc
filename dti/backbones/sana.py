"""SANA 1.5: a Gemma-2 text encoder, a linear-attention DiT, the DC-AE autoencoder, flow-matching training."""

from __future__ import annotations

import inspect

import torch
from diffusers import AutoencoderDC, SanaPipeline, SanaTransformer2DModel
from transformers import AutoTokenizer, Gemma2Model

from dti.backbones.base import (
    Backbone,
    TextEncoderSlot,
    check_tokenizer_size,
    load_scheduler_config,
    sampling_scheduler,
)
from dti.backbones.images import to_pil
from dti.backbones.objectives import FlowMatching, mse
from dti.core.errors import InputError
from dti.core.runtime import resolve_device, resolve_dtype
from dti.method.formats import onetrainer_file

STAGES = ("train", "sample")


def default_complex_human_instruction() -> list[str]:
    """The instruction SanaPipeline prepends at sampling time by default (read from diffusers, not copied)."""
    return list(inspect.signature(SanaPipeline.__call__).parameters["complex_human_instruction"].default)


def _sana_preprocess(text: str) -> str:
    return text.lower().strip()  # what SanaPipeline does to every prompt (clean_caption=False)


class SanaBackbone(Backbone):
    denoiser_name = "transformer"  # the pipeline component an adapter sits on
    name = "sana"

    def __init__(
        self, pretrained: str, revision: str | None = None, variant: str | None = None, device: str = "auto",
        dtype: str = "auto", vae_dtype: str = "auto", compile: bool = False, max_sequence_length: int = 300,
        complex_human_instruction: str | list[str] | None = None, instruction_stages: tuple = STAGES,
        zero_pad_scale: float = 0.0, zero_pad_max: int = 15, train_shift: float = 1.0, negative_prompt: str = "",
    ):
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.vae_dtype = resolve_dtype(vae_dtype, self.device, "model.vae_dtype")
        kw = dict(revision=revision, variant=variant)
        self.tokenizer = AutoTokenizer.from_pretrained(pretrained, subfolder="tokenizer", revision=revision)
        self.tokenizer.padding_side = "right"  # as SanaPipeline
        self.text_encoder = Gemma2Model.from_pretrained(pretrained, subfolder="text_encoder", dtype=self.dtype, **kw)
        self.transformer = SanaTransformer2DModel.from_pretrained(pretrained, subfolder="transformer",
                                                                  torch_dtype=self.dtype, **kw)
        self.vae = AutoencoderDC.from_pretrained(pretrained, subfolder="vae", torch_dtype=self.vae_dtype, **kw)
        scheduler_config = load_scheduler_config(pretrained, revision)
        self.sample_scheduler = sampling_scheduler(scheduler_config)
        self.objective = FlowMatching.from_scheduler_config(scheduler_config, train_shift, self.device)
        self.freeze(self.transformer, self.text_encoder, self.vae, compile=compile)

        if complex_human_instruction == "default":
            complex_human_instruction = default_complex_human_instruction()
        unknown = set(instruction_stages) - set(STAGES)
        if unknown:
            raise InputError("model.instruction_stages", list(instruction_stages), f"choose from {STAGES}")
        self.instruction = "\n".join(complex_human_instruction) if complex_human_instruction else ""
        self.instruction_stages = tuple(instruction_stages)
        self.max_sequence_length = max_sequence_length
        if not 0 <= zero_pad_scale:
            raise InputError("model.zero_pad_scale", zero_pad_scale, "must be >= 0 (0 disables zero-pad)")
        if not (isinstance(zero_pad_max, int) and zero_pad_max >= 0):
            raise InputError("model.zero_pad_max", zero_pad_max, "must be an integer >= 0")
        self.zero_pad_scale, self.zero_pad_max = zero_pad_scale, zero_pad_max
        self.negative_prompt = negative_prompt
        self.encoders = [TextEncoderSlot("gemma2", self.tokenizer, self.text_encoder, "learned_embeds.safetensors",
                                         max_sequence_length, len(self.tokenizer), _sana_preprocess)]
        check_tokenizer_size(self.encoders[0], pretrained)
        self.vae_scale = self.vae.config.scaling_factor
        self.latent_factor = 2 ** (len(self.vae.config.encoder_block_out_channels) - 1)
        self.resolution_multiple = self.latent_factor * self.transformer.config.patch_size

    def encode_pixels(self, pixels):
        # DC-AE is deterministic: no posterior to sample
        return self.vae.encode(pixels.to(self.device, self.vae_dtype)).latent * self.vae_scale, None

    # -- conditioning: SanaPipeline.encode_prompt, with the instruction where the config asks for it ------------
    def tokenize(self, prompts, sampling=False):
        stage = "sample" if sampling else "train"
        return self._tokenize(prompts, self.instruction if stage in self.instruction_stages else "")

    def _tokenize(self, prompts: list[str], instruction: str) -> list[torch.Tensor]:
        texts = [instruction + _sana_preprocess(p) for p in prompts]
        tokenizer = self.encoders[0].tokenizer
        length = self.max_sequence_length
        if instruction:
            length = len(tokenizer.encode(instruction)) + self.max_sequence_length - 2
        ids = tokenizer(texts, padding="max_length", max_length=length, truncation=True,
                             add_special_tokens=True, return_tensors="pt").input_ids
        return [ids.to(self.device)]

    def text_augmentation(self, batch_size, generator):
        """Zero-pad: k = floor(clip(Exp(scale), 0, max)) zero vectors inserted after BOS (the official code prepends
        zero-vector pad tokens to the prompt text, which the tokenizer puts after its BOS)."""
        if not self.zero_pad_scale:
            return {}
        k = torch.empty(batch_size, device=self.device).exponential_(1 / self.zero_pad_scale, generator=generator)
        return {"zero_pad": k.floor().clamp(0, self.zero_pad_max).long()}

    def encode_text(self, token_ids, augment=None):
        (ids,) = token_ids
        mask = (ids != self.tokenizer.pad_token_id).long()
        if augment and "zero_pad" in augment:
            embeds, mask = _prepend_zeros(self.text_encoder.get_input_embeddings()(ids), mask, augment["zero_pad"])
            hidden = self.text_encoder(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
        else:
            hidden = self.text_encoder(ids, attention_mask=mask).last_hidden_state
        # keep the first token and the last max_sequence_length-1 (identity without an instruction)
        tail = self.max_sequence_length - 1
        return {"prompt_embeds": torch.cat([hidden[:, :1], hidden[:, -tail:]], dim=1),
                "mask": torch.cat([mask[:, :1], mask[:, -tail:]], dim=1)}

    def loss(self, noisy, t, target, cond, extras, per_sample=False):
        prediction = self.transformer(
            noisy.to(self.dtype), encoder_hidden_states=cond["prompt_embeds"].to(self.dtype),
            encoder_attention_mask=cond["mask"], timestep=t * self.transformer.config.timestep_scale,
            return_dict=False,
        )[0]
        return mse(prediction.float(), target, per_sample)

    pipeline_class = SanaPipeline
    tool_files = (onetrainer_file,)  # OneTrainer's SANA embedding: {"gemma": rows}
    modelspec_architecture = "sana"  # as OneTrainer's resources/sd_model_spec/sana-embedding.json
    modelspec_implementation = "https://github.com/NVlabs/Sana"
    encoder_layout = (("gemma2", "text_encoder", "learned_embeds.safetensors"),)

    @torch.no_grad()
    def generate(self, prompts, seeds, height, width, num_inference_steps, guidance_scale, negative_prompt=None):
        negative_prompt = self.negative_prompt if negative_prompt is None else negative_prompt
        cond = self.encode_text(self.tokenize(prompts, sampling=True))
        # SanaPipeline encodes the negative prompt without the instruction
        uncond = self.encode_text(self._tokenize([negative_prompt] * len(prompts), instruction=""))
        latents = self.pipeline(
            prompt_embeds=cond["prompt_embeds"], prompt_attention_mask=cond["mask"],
            negative_prompt=None, negative_prompt_embeds=uncond["prompt_embeds"],
            negative_prompt_attention_mask=uncond["mask"],
            height=height, width=width, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
            generator=self.generators(seeds), output_type="latent",
            use_resolution_binning=False,
        ).images
        return to_pil(self.vae.decode(latents.to(self.vae_dtype) / self.vae_scale).sample)


def _prepend_zeros(embeds: torch.Tensor, mask: torch.Tensor, count: torch.Tensor):
    """Insert `count` zero vectors (attended) after the first token of each row; the length is kept, so the
    row's last `count` positions (padding, for prompts shorter than the maximum) drop off."""
    length = embeds.shape[1]
    position = torch.arange(length, device=embeds.device)[None]
    source = torch.where(position == 0, position, position - count[:, None])
    valid = (source > 0) | (position == 0)
    index = source.clamp(min=0)
    shifted = embeds.gather(1, index[..., None].expand(-1, -1, embeds.shape[-1])) * valid[..., None]
    return shifted, torch.where(valid, mask.gather(1, index), torch.ones_like(mask))
