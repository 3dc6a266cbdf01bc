"""`magnitude` (Figures 5 and 16): a learned concept rendered with its direction kept and its norm set to several
values: multiples of each encoder's vocabulary mean norm m* (analyze.relative=true) or absolute norms. Beside
them, the concept as trained. Too small a norm fades the concept, too large a norm breaks the prompt."""

from __future__ import annotations

from torch.nn.functional import normalize

from dti.analyze.anatomy import vocabulary
from dti.analyze.context import Context
from dti.analyze.outputs import md_table
from dti.analyze.render import check_prompts, render
from dti.analyze.runs import add_rows

DEFAULT_PROMPTS = ["a photo of a {}"]


def run(ctx: Context) -> dict:
    s = ctx.settings
    prompts, sampler = check_prompts(s.prompts or DEFAULT_PROMPTS, 1), ctx.sampler()
    runs = ctx.runs(minimum=1)
    means = {slot.key: float(vocabulary(slot).norm(dim=-1).mean()) for slot in ctx.backbone.encoders}
    record, rows = {"model": ctx.model, "relative": s.relative, "vocabulary_mean": means, "runs": {}}, []
    for r in runs:
        targets = {f"{v:g}": {k: v * (means[k] if s.relative else 1.0) for k in r.rows} for v in s.magnitudes}
        concept = add_rows(ctx.backbone, r.placeholder, r.rows, r.initializer)
        try:
            variants = [("as trained", r.rows)]
            variants += [(f"{label}{' m*' if s.relative else ''}",
                          {k: normalize(v, dim=-1) * t[k] for k, v in r.rows.items()}) for label, t in targets.items()]
            grids = render(ctx.backbone, ctx.out, prompts, concept.prompt, variants, sampler,
                           f"{r.label}: norm varied", concept)
        finally:
            concept.remove()
        learned = {k: float(v.norm(dim=-1).mean()) for k, v in r.rows.items()}
        record["runs"][r.label] = {"learned_norm": learned, "norms": targets, "grids": [str(g) for g in grids]}
        rows += [{"run": r.label, "value": label, "encoder": k, "norm": n} for label, t in targets.items()
                 for k, n in t.items()]
    ctx.out.csv(rows, "magnitude.csv")
    ctx.out.json(record, "magnitude.json")
    lines = md_table(["run", "encoder", "learned norm", "vocabulary mean m*"],
                     [[label, k, n, means[k]] for label, v in record["runs"].items()
                      for k, n in v["learned_norm"].items()])
    unit = "x m* of each encoder" if s.relative else "absolute norms"
    lines += ["", f"Norms rendered: {', '.join(f'{v:g}' for v in s.magnitudes)} ({unit}), beside the concept as "
              "trained; a grid per run and prompt, a row per seed."]
    ctx.out.summary(f"Magnitude: {ctx.model}", lines)
    return ctx.out.result(**record)
