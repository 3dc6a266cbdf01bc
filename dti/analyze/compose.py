"""`compose` (Figure 17): two or more learned concepts, from different runs and possibly different methods, in one
backbone at once (add_concept nests the lookups, one token each) and prompts that use them together. A concept's
placeholder already taken by an earlier one gets a number (<dog> and <dog-2>)."""

from __future__ import annotations

from dti.analyze.context import Context
from dti.analyze.render import check_prompts, render
from dti.analyze.runs import concepts_added


def default_prompt(count: int) -> str:
    return "a photo of " + " and ".join(["a {}"] * count)


def run(ctx: Context) -> dict:
    count = len(ctx.cfg.runs)
    prompts = check_prompts(ctx.settings.prompts or [default_prompt(count)], count)
    sampler = ctx.sampler()
    runs = ctx.runs(minimum=2)
    with concepts_added(ctx.backbone, runs) as concepts:
        def fill(template: str) -> str:
            return template.format(*(" ".join(c.added) for c in concepts))

        tokens = {r.label: c.added for r, c in zip(runs, concepts)}
        grids = render(ctx.backbone, ctx.out, prompts, fill, [("together", None)], sampler,
                       " + ".join(r.label for r in runs))
        filled = [fill(p) for p in prompts]
    record = {"model": ctx.model, "runs": [str(r.path) for r in runs], "tokens": tokens, "prompts": filled,
              "grids": [str(g) for g in grids]}
    ctx.out.json(record, "compose.json")
    lines = [f"- {label}: {' '.join(t)}" for label, t in tokens.items()]
    lines += ["", "Prompts:", *(f"- {p}" for p in filled), "", "A grid per prompt, a row per seed."]
    ctx.out.summary(f"Concepts composed: {ctx.model}", lines)
    return ctx.out.result(**record)
