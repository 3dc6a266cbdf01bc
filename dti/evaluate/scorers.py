"""The `evaluator=` group: subject fidelity (DINOv2) and text fidelity (SigLIP) of a folder of samples.

- `dinov2`: cosine between the CLS token of each generated image and of each reference photo, averaged over the
  references. Reference features are computed once per model and cached in the run directory.
- `siglip`: cosine between the image embedding and the *class prompt* (the template with the class word where
  the concept goes, as the official evaluation does); `siglip_official` is sigmoid(cos·exp(t) + b) with SigLIP's
  own logit scale and bias, the variant the official numbers use.
- `clip_i` / `clip_t` (optional, open_clip): the same two measures with a CLIP model.
Everything runs batched, in eval mode, without gradients; in fp32 by default (`evaluator.dtype`): the models are
small, and bf16 would round SigLIP's logit scale and bias, shifting `siglip_official`.
"""

from __future__ import annotations

import hashlib
import logging
import statistics
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from dti.backbones.images import image_files, image_key
from dti.core import checks, io
from dti.core.errors import InputError, NonFiniteError
from dti.core.io import read_json
from dti.core.runtime import resolve_device, resolve_dtype

log = logging.getLogger(__name__)


def _features(output) -> torch.Tensor:
    return getattr(output, "pooler_output", output)  # transformers v5 returns a ModelOutput, v4 a tensor


def check_settings(batch_size: int = 16, device: str = "auto", dtype: str = "float32", masks: str | None = None,
                   **models) -> None:
    """The evaluator's settings, checked before any stage runs (no model is loaded here)."""
    checks.integer("evaluator.batch_size", batch_size, minimum=1, maximum=4096)
    if masks and not Path(masks).is_dir():
        raise InputError("evaluator.masks", masks, "folder does not exist (one mask image per reference photo)")
    resolve_dtype(dtype, resolve_device(device, "evaluator.device"), "evaluator.dtype")
    for key, name in models.items():
        if key in ("dinov2", "siglip", "clip") and name is not None and (not isinstance(name, str) or not name):
            raise InputError(f"evaluator.{key}", name, "must be a model id or folder, or null")


class Evaluator:
    def __init__(self, dinov2: str | None = "facebook/dinov2-base",
                 siglip: str | None = "google/siglip-base-patch16-512", clip: str | None = None,
                 batch_size: int = 16, device: str = "auto", dtype: str = "float32", masks: str | None = None):
        from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

        check_settings(batch_size, device, dtype, masks, dinov2=dinov2, siglip=siglip, clip=clip)
        self.masks = Path(masks) if masks else None
        self.device = resolve_device(device, "evaluator.device")
        self.dtype = resolve_dtype(dtype, self.device, "evaluator.dtype")
        self.batch_size, self.names = batch_size, {"dinov2": dinov2, "siglip": siglip, "clip": clip}
        self.models, self.processors, self.tokenizer = {}, {}, None
        for key, name in (("dinov2", dinov2), ("siglip", siglip)):
            if not name:
                continue
            try:
                self.processors[key] = AutoImageProcessor.from_pretrained(name)
                model = AutoModel.from_pretrained(name, dtype=self.dtype)
                self.models[key] = model.requires_grad_(False).to(self.device).eval()
                if key == "siglip":
                    self.tokenizer = AutoTokenizer.from_pretrained(name)
            except Exception as err:  # noqa: BLE001  (missing files, an unknown model type, a broken config)
                first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                raise InputError(f"evaluator.{key}", name, f"cannot be loaded ({type(err).__name__}: {first})") \
                    from None
        self.clip = _OpenClip(clip, self.device) if clip else None

    # -- features -------------------------------------------------------------------------------------------
    @torch.no_grad()
    def _image_features(self, key: str, images: list[Image.Image]) -> torch.Tensor:
        out = []
        for start in range(0, len(images), self.batch_size):
            pixels = self.processors[key](images=images[start:start + self.batch_size], return_tensors="pt")
            pixels = pixels["pixel_values"].to(self.device, self.dtype)
            if key == "dinov2":
                feats = self.models[key](pixel_values=pixels).last_hidden_state[:, 0]  # CLS token
            else:
                feats = _features(self.models[key].get_image_features(pixel_values=pixels))
            out.append(F.normalize(feats.float(), dim=-1).cpu())
        return torch.cat(out)

    @torch.no_grad()
    def _text_features(self, texts: list[str]) -> torch.Tensor:
        # SigLIP was trained on max-length padded text (64 tokens)
        ids = self.tokenizer(texts, padding="max_length", truncation=True, return_tensors="pt",
                             max_length=self.models["siglip"].config.text_config.max_position_embeddings)
        feats = _features(self.models["siglip"].get_text_features(input_ids=ids["input_ids"].to(self.device)))
        return F.normalize(feats.float(), dim=-1).cpu()

    def masked(self, references: list[Image.Image], subject: str, names: list[str]) -> list[Image.Image]:
        """The reference photos with their masks applied (evaluator.masks: <dir>/<subject>/<name>.* or
        <dir>/<name>.*, white = subject), as the official protocol scores DINOv2; unmasked where none is found,
        said once per subject."""
        if self.masks is None:
            return references
        folder = self.masks / subject if (self.masks / subject).is_dir() else self.masks
        found = {p.stem: p for p in image_files(folder)}
        out = []
        for image, name in zip(references, names or [None] * len(references)):
            if name in found:
                mask = Image.open(found[name]).convert("L").resize(image.size, Image.Resampling.BILINEAR)
                out.append(Image.composite(image, Image.new("RGB", image.size, "black"), mask))
            else:
                out.append(image)
        missing = len(references) - sum(1 for n in names if n in found)
        if missing:
            log.info("evaluator.masks=%s: %d of %d reference photos of %s have no mask; scored unmasked",
                     self.masks, missing, len(references), subject)
        return out

    def reference_features(self, references: list[Image.Image], cache: Path) -> torch.Tensor:
        """DINOv2 features of the reference photos, cached per model and image content."""
        from safetensors.torch import load_file

        key = f"{self.names['dinov2']}|{self.dtype}"  # features depend on the model and the precision it ran in
        path = Path(cache) / f"dinov2_{hashlib.sha1(key.encode()).hexdigest()[:8]}.safetensors"
        try:
            stored = load_file(str(path)) if path.exists() else {}
        except Exception as err:  # noqa: BLE001  (a torn cache file: rebuilt from the photos)
            log.warning("%s is unreadable (%s): the reference features are computed again", path, type(err).__name__)
            stored = {}
        keys = [image_key(im) for im in references]
        missing = [i for i, k in enumerate(keys) if k not in stored]
        if missing:
            feats = self._image_features("dinov2", [references[i] for i in missing])
            stored.update({keys[i]: f.contiguous() for i, f in zip(missing, feats)})
            io.save_safetensors(path, stored)
        return torch.stack([stored[k] for k in keys])

    # -- scoring --------------------------------------------------------------------------------------------
    def evaluate(self, samples: Path, references: list[Image.Image], subject: str, cache: Path,
                 config: dict | None = None, step: int | None = None, reference_names: list[str] | None = None
                 ) -> dict:
        samples = Path(samples)
        if not (samples / "prompts.json").is_file():
            raise InputError("stage", "evaluate", f"no samples at {samples}; include the sample stage")
        prompts = read_json(samples / "prompts.json")
        if prompts is None:
            raise InputError("stage", "evaluate", f"{samples / 'prompts.json'} is unreadable; run "
                             "stage=[sample,evaluate] to write it again")
        items = [(int(i), p, path) for i, p in prompts.items() for path in sorted((samples / p["folder"]).glob("*.png"),
                                                                                 key=lambda q: int(q.stem))]
        if not items:
            raise InputError("stage", "evaluate", f"{samples} holds no images; include the sample stage")
        images = []
        for _, _, path in items:
            try:
                images.append(Image.open(path).convert("RGB"))
            except Exception:  # noqa: BLE001  (PIL raises many types for a broken file)
                raise InputError("stage", "evaluate", f"{path} is unreadable; run stage=[sample,evaluate] to make "
                                 "it again") from None
        scores = {}
        if "dinov2" in self.models:
            refs = self.reference_features(self.masked(references, subject, reference_names or []), cache)
            scores["dinov2"] = (self._image_features("dinov2", images) @ refs.T).mean(dim=1)
        if "siglip" in self.models:
            model = self.models["siglip"]
            texts = self._text_features([p["class_prompt"] for _, p, _ in items])
            cos = (self._image_features("siglip", images) * texts).sum(-1)
            scores["siglip"] = cos
            scores["siglip_official"] = torch.sigmoid(cos * model.logit_scale.exp().float().cpu()
                                                      + model.logit_bias.float().cpu())
        if self.clip is not None:
            scores.update(self.clip.scores(images, references, [p["class_prompt"] for _, p, _ in items]))
        return self._report(items, scores, subject, samples, config, step)

    def _report(self, items, scores, subject, samples, config, step=None) -> dict:
        for key, values in scores.items():
            if not torch.isfinite(values).all():
                raise NonFiniteError(f"the {key} scores of {samples} are not finite: metrics.json not written")
        per_image = [{"prompt_index": i, "seed": int(path.stem), "path": str(path.relative_to(samples)),
                      **{k: round(float(v[n]), 6) for k, v in scores.items()}} for n, (i, _, path) in enumerate(items)]
        per_prompt = []
        for i in sorted({i for i, _, _ in items}):
            rows = [r for r in per_image if r["prompt_index"] == i]
            prompt = next(p for j, p, _ in items if j == i)
            per_prompt.append({"prompt_index": i, "prompt": prompt["prompt"], "class_prompt": prompt["class_prompt"],
                               "num_images": len(rows), **{k: statistics.fmean(r[k] for r in rows) for k in scores}})
        means = {k: statistics.fmean(r[k] for r in per_image) for k in scores}
        headline = {"image_sim": means.get("dinov2"), "text_sim": means.get("siglip"),
                    "text_sim_official": means.get("siglip_official")}
        metrics = {**headline, "subject": subject, "step": step, "num_images": len(per_image),
                   "num_prompts": len(per_prompt), "seeds": sorted({r["seed"] for r in per_image}),
                   "models": {k: v for k, v in self.names.items() if v}, "per_subject": {subject: means},
                   "per_prompt": per_prompt, "per_image": per_image, "config": config or {}}
        io.write_json(samples / "metrics.json", metrics)
        return metrics


class _OpenClip:
    """CLIP-I / CLIP-T with open_clip ("ViT-L-14/openai": architecture/pretrained tag). open_clip's import needs
    a working torchvision; where it has none this says so in one line instead of failing later."""

    def __init__(self, name: str, device: torch.device):
        try:
            import open_clip
        except Exception as err:  # noqa: BLE001 (a broken torchvision raises RuntimeError, not ImportError)
            raise InputError("evaluator.clip", name, f"open_clip cannot be imported ({type(err).__name__}: "
                             f"{err}); remove evaluator.clip or install a torchvision matching torch") from None
        arch, _, pretrained = name.partition("/")
        self.model, _, self.preprocess = open_clip.create_model_and_transforms(arch, pretrained=pretrained or None)
        self.model = self.model.to(device).eval()
        self.tokenizer, self.device = open_clip.get_tokenizer(arch), device

    @torch.no_grad()
    def scores(self, images, references, texts) -> dict[str, torch.Tensor]:
        def embed(ims):
            batch = torch.stack([self.preprocess(im) for im in ims]).to(self.device)
            return F.normalize(self.model.encode_image(batch).float(), dim=-1).cpu()

        gen = embed(images)
        text = F.normalize(self.model.encode_text(self.tokenizer(texts).to(self.device)).float(), dim=-1).cpu()
        return {"clip_i": (gen @ embed(references).T).mean(dim=1), "clip_t": (gen * text).sum(-1)}
