"""The `sampler=` group: protocol sampling of every (prompt, seed) pair of a prompt set with the trained concept.

Images go to `samples/<tag>/<prompt index>_<slug>/<seed>.png` (tag = the prompt set's name, plus the rescale when
there is one), with `prompts.json` and `sampler.json` beside them. Each image has its own generator seeded by its
seed alone, so it does not depend on its batch; existing images are skipped, so an interrupted run resumes; every
file is written atomically.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from dti.backbones.base import Backbone
from dti.core import checks, io
from dti.core.errors import InputError
from dti.core.io import read_json
from dti.evaluate.prompts import PromptSet
from dti.method.concept import Concept
from dti.method.formats import read_token_file
from dti.method.magnitude import FixedValue, VocabNorm

log = logging.getLogger(__name__)


@dataclass
class SamplerSettings:
    """The `sampler:` node (also its config schema): every prompt of the prompt set x every seed."""

    batch_size: int = 16
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3])
    height: int = 1024
    width: int = 1024
    num_inference_steps: int = 50
    guidance_scale: float = 5.0
    negative_prompt: str | None = None  # None: the backbone's default (SDXL: zero embedding; SANA/Wan: "")
    scheduler: str | None = None  # a diffusers scheduler class built from the checkpoint's config; None: its own
    rescale: str = "none"  # none | mean | min | max | <number>: TI-rescaled
    tag: str | None = None  # sample folder name; None: "<prompt set>" or "<prompt set>-rescale_<value>"
    steps: Any = "final"  # which saved steps to sample and score: final | all | a list, e.g. [100, 200]

    def __post_init__(self):
        checks.integer("sampler.batch_size", self.batch_size, minimum=1, maximum=4096)
        checks.integer("sampler.height", self.height, minimum=8, maximum=8192)
        checks.integer("sampler.width", self.width, minimum=8, maximum=8192)
        checks.integer("sampler.num_inference_steps", self.num_inference_steps, minimum=1, maximum=1000)
        checks.number("sampler.guidance_scale", self.guidance_scale, minimum=0, maximum=100)
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise InputError("sampler.seeds", list(self.seeds), "must be a non-empty list of distinct seeds")
        for seed in self.seeds:
            checks.integer("sampler.seeds", seed, minimum=0)
        self.seeds = [int(s) for s in self.seeds]
        self.rescale = str(self.rescale)
        self.rescale_magnitude()  # validates
        if self.steps not in ("final", "all"):
            if isinstance(self.steps, (int, str)) or not list(self.steps):
                raise InputError("sampler.steps", self.steps, "choose final, all, or a list of saved steps")
            self.steps = [checks.integer("sampler.steps", s, minimum=1) for s in self.steps]
        if self.scheduler is not None:
            import diffusers

            if not isinstance(getattr(diffusers, self.scheduler, None), type) or not self.scheduler.endswith(
                    "Scheduler"):
                raise InputError("sampler.scheduler", self.scheduler, "is not a diffusers scheduler class "
                                 "(e.g. DDIMScheduler, EulerDiscreteScheduler)")

    def rescale_magnitude(self):
        """The magnitude strategy `rescale` names, or None."""
        value = str(self.rescale)
        if value == "none":
            return None
        if value in ("mean", "min", "max"):
            return VocabNorm(value)
        try:
            return FixedValue(float(value), field="sampler.rescale")
        except ValueError:  # InputError is a ValueError too
            raise InputError("sampler.rescale", self.rescale,
                             "choose none, mean, min, max or a positive number") from None


def sample_steps(settings: SamplerSettings, train_steps: int, checkpoint_every: int) -> list[int | None]:
    """The training steps whose embeddings are sampled: None is the final one (embeddings/), an int a saved step
    (embeddings/steps/<step>/, every train.checkpoint_every)."""
    if settings.steps == "final":
        return [None]
    steps = list(range(checkpoint_every, train_steps, checkpoint_every)) if settings.steps == "all" else \
        settings.steps
    return [None if s == train_steps else s for s in steps] + ([None] if settings.steps == "all" else [])


def image_settings(settings: SamplerSettings) -> dict:
    """The settings an image depends on (not batch_size: each image has its own generator), as JSON reads back."""
    record = {k: v for k, v in asdict(settings).items() if k not in ("batch_size", "tag", "steps")}
    return json.loads(json.dumps(record))


def readable_png(path: Path) -> bool:
    """The image is there and decodes (one torn by a kill or a full disk is made again)."""
    if not path.exists():
        return False
    try:
        with Image.open(path) as im:
            im.load()
        return True
    except Exception:  # noqa: BLE001  (PIL raises many types for a broken file)
        log.warning("%s is unreadable: made again", path)
        return False


def slug(text: str, limit: int = 48) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:limit].rstrip("_") or "prompt"


def load_trained_embeddings(concept: Concept, backbone: Backbone, folder: Path) -> None:
    """Put the saved rows of `folder` (a run's embeddings/) into the concept's tables."""
    for slot in backbone.encoders:
        path = Path(folder) / slot.diffusers_file
        if not path.is_file():
            raise InputError("stage", "sample", f"no trained embeddings at {path}; include the train stage")
        token, rows = read_token_file(path)
        table = concept.tables[slot.key]
        if token != concept.placeholder or rows.shape != table.weight.shape:
            raise InputError("placeholder", concept.placeholder, f"{path} holds {token} {tuple(rows.shape)}, not "
                             f"{concept.placeholder} {tuple(table.weight.shape)}")
        table.set_embeddings(rows)


def embeddings_checksum(backbone: Backbone, folder: Path, adapter: Path | None = None) -> str:
    """What the samples were made from: the embedding files, and the adapter's weights when there is one."""
    digest = hashlib.sha256()
    for slot in backbone.encoders:
        digest.update((Path(folder) / slot.diffusers_file).read_bytes())
    for path in sorted(Path(adapter).glob("*.safetensors")) if adapter else []:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


class Sampler:
    def __init__(self, backbone: Backbone, concept: Concept, settings: SamplerSettings, class_word: str):
        self.backbone, self.concept, self.settings, self.class_word = backbone, concept, settings, class_word

    @staticmethod
    def tag_for(settings: SamplerSettings, prompt_set: PromptSet, step: int | None = None) -> str:
        """The samples folder: the tag, or the prompt set's name with the rescale; `-step_000100` for a saved
        step other than the final one."""
        if settings.tag:
            base = settings.tag
        else:
            rescale = str(settings.rescale)
            base = prompt_set.name if rescale == "none" else f"{prompt_set.name}-rescale_{rescale}"
        return base if step is None else f"{base}-step_{step:06d}"

    def rescale(self) -> None:
        """TI-rescaled: give every row of the loaded embedding the norm `rescale` names; directions unchanged."""
        magnitude = self.settings.rescale_magnitude()
        if magnitude is None:
            return
        for slot in self.backbone.encoders:
            table = self.concept.tables[slot.key]
            rows = table.embeddings().detach()
            vocab = slot.input_embeddings().frozen.weight[: slot.num_vocab_rows]
            target = magnitude(vocab, rows, slot.tokenizer.all_special_ids)
            table.set_embeddings(rows / rows.norm(dim=-1, keepdim=True) * target[:, None])

    @torch.no_grad()
    def run(self, prompt_set: PromptSet, samples_root: Path, checksum: str, tag: str, step: int | None = None
            ) -> Path:
        """Every (prompt, seed) image of `prompt_set` into samples_root/tag with the embeddings loaded now (those
        of training step `step`; None: the final ones)."""
        s = self.settings
        out = Path(samples_root) / tag
        record = {**image_settings(s), "prompt_set": prompt_set.name, "embeddings_sha256": checksum, "step": step}
        if (out / "sampler.json").exists():
            previous = read_json(out / "sampler.json")
            if previous is None:
                raise InputError("sampler.tag", tag, f"{out / 'sampler.json'} is unreadable, so "
                                 "what made these samples is unknown: remove the folder, or set sampler.tag")
            if previous != record:
                changed = sorted(k for k in record if previous.get(k) != record[k])
                raise InputError("sampler.tag", tag, f"{out} holds samples made with other "
                                 f"settings ({', '.join(changed)}); set sampler.tag or remove the folder")
        io.write_json(out / "sampler.json", record)
        prompts = {}
        for i, template in enumerate(prompt_set.templates):
            prompts[i] = {"template": template, "prompt": template.format(self.concept.placeholder),
                          "class_prompt": template.format(self.class_word),
                          "folder": f"{i:02d}_{slug(template.format(self.class_word))}"}
        io.write_json(out / "prompts.json", {str(i): p for i, p in prompts.items()})
        todo = [(i, seed) for i in prompts for seed in s.seeds
                if not readable_png(out / prompts[i]["folder"] / f"{seed}.png")]
        scheduler = self.backbone.pipeline.scheduler
        if s.scheduler:
            self.backbone.use_scheduler(s.scheduler)
        self.rescale()
        try:
            self._generate(todo, prompts, out)
        finally:
            self.backbone.pipeline.scheduler = scheduler  # later subjects' validation keeps the model's own
        return out

    def _generate(self, todo, prompts, out) -> None:
        s = self.settings
        for start in range(0, len(todo), s.batch_size):
            batch = todo[start:start + s.batch_size]
            images = self.backbone.generate(
                [self.concept.prompt(prompts[i]["template"]) for i, _ in batch], [seed for _, seed in batch],
                s.height, s.width, s.num_inference_steps, s.guidance_scale, negative_prompt=s.negative_prompt,
            )
            for (i, seed), image in zip(batch, images):
                io.save_image(out / prompts[i]["folder"] / f"{seed}.png", image)
