"""Images of concept variants (the creative analyses): one labelled grid per prompt, a row per seed and a column
per variant, and every image on its own, all through the backbone's `generate` with the `sampler:` settings
(size, steps, guidance, negative prompt, scheduler; `sampler.seeds`)."""

from __future__ import annotations

import string
from collections.abc import Callable

import torch

from dti.analyze.outputs import AnalysisOutput, image_grid
from dti.analyze.runs import set_rows
from dti.backbones.base import Backbone
from dti.core.errors import InputError
from dti.evaluate.sampler import SamplerSettings, slug


def slots_in(template: str) -> int:
    """How many "{}" a prompt template has."""
    return sum(1 for _, name, _, _ in string.Formatter().parse(template) if name is not None)


def check_prompts(prompts: list[str], concepts: int) -> list[str]:
    for prompt in prompts:
        if slots_in(prompt) != concepts or any(name for _, name, _, _ in string.Formatter().parse(prompt) if name):
            raise InputError("analyze.prompts", prompt, f'needs exactly {concepts} "{{}}" (one per concept)')
    return list(prompts)


def render(backbone: Backbone, out: AnalysisOutput, prompts: list[str], fill: Callable[[str], str],
           variants: list[tuple[str, dict[str, torch.Tensor] | None]], sampler: SamplerSettings, title: str,
           concept=None) -> list:
    """For each variant (label, rows for `concept` or None to leave the backbone as it is), every (prompt, seed)
    image; `fill` puts the concept tokens into a prompt template. Returns the grid files, one per prompt."""
    seeds = list(sampler.seeds)
    scheduler = backbone.pipeline.scheduler
    if sampler.scheduler:
        backbone.use_scheduler(sampler.scheduler)
    try:
        images = {}
        for label, rows in variants:
            if rows is not None:
                set_rows(concept, rows)
            todo = [(p, s) for p in range(len(prompts)) for s in seeds]
            for start in range(0, len(todo), sampler.batch_size):
                batch = todo[start:start + sampler.batch_size]
                made = backbone.generate([fill(prompts[p]) for p, _ in batch], [s for _, s in batch],
                                         sampler.height, sampler.width, sampler.num_inference_steps,
                                         sampler.guidance_scale, negative_prompt=sampler.negative_prompt)
                images.update({(label, p, s): im for (p, s), im in zip(batch, made)})
    finally:
        backbone.pipeline.scheduler = scheduler
    grids, labels = [], [label for label, _ in variants]
    for p, prompt in enumerate(prompts):
        name = f"{p:02d}_{slug(prompt.replace('{}', 'concept'))}"
        for (label, q, s), image in images.items():
            if q == p:
                out.image(image, f"images/{name}/{slug(label)}_seed{s}.png")
        grid = [[images[(label, p, s)] for label in labels] for s in seeds]
        grids.append(out.figure(image_grid(grid, [f"seed {s}" for s in seeds], labels, f"{title}: {prompt}"),
                                f"grid_{name}.png"))
    return grids
