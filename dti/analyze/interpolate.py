"""`interpolate` (Figures 4 and 15): blend two learned concepts along the sphere and render the path at the
paper's ratios [0, .35, .40, ..., .65, 1], or (analyze.ratio=0.5) write the blend at one ratio as an embedding
folder in a run's embeddings/ layout, loadable like any concept (dti.load_embeddings, dti.analyze.load_run).

analyze.blend: slerp (DTI: both concepts share m*, so the blend keeps it), lerp, or nslerp (slerp of the
directions, norm interpolated: TI concepts of different norms)."""

from __future__ import annotations

import matplotlib.pyplot as plt
from torch.nn.functional import cosine_similarity

from dti.analyze.context import Context
from dti.analyze.outputs import md_table
from dti.analyze.render import check_prompts, render
from dti.analyze.runs import add_rows
from dti.analyze.spherical import blend
from dti.core.errors import InputError
from dti.method.formats import save_embeddings

DEFAULT_PROMPTS = ["a photo of a {}"]


def path_numbers(a: dict, b: dict, ratios: list[float], how: str) -> list[dict]:
    """Norm and cosine to either end of the blend at each ratio, per encoder (means over a concept's rows)."""
    numbers = []
    for t in ratios:
        rows = blend(a, b, t, how)
        for key, value in rows.items():
            numbers.append({"ratio": t, "encoder": key, "norm": float(value.norm(dim=-1).mean()),
                            "cos_a": float(cosine_similarity(value, a[key], dim=-1).mean()),
                            "cos_b": float(cosine_similarity(value, b[key], dim=-1).mean())})
    return numbers


def run(ctx: Context) -> dict:
    s = ctx.settings
    prompts = check_prompts(s.prompts or DEFAULT_PROMPTS, 1) if s.ratio is None else []
    sampler = ctx.sampler() if s.ratio is None else None
    a, b = ctx.runs(exactly=2)
    if a.num_vectors != b.num_vectors:
        raise InputError("runs", [str(a.path), str(b.path)], f"have {a.num_vectors} and {b.num_vectors} vectors; "
                         "blending needs concepts with the same number of vectors")
    ratios = [s.ratio] if s.ratio is not None else list(s.ratios)
    numbers = path_numbers(a.rows, b.rows, sorted({*s.ratios, *ratios}), s.blend)
    ctx.out.figure(_path_figure(numbers, s.blend, ratios if s.ratio is not None else []), "interpolate.png")
    ctx.out.csv(numbers, "interpolate.csv")
    record = {"model": ctx.model, "a": a.label, "b": b.label, "blend": s.blend, "ratios": ratios, "path": numbers}
    lines = [f"{s.blend} from **{a.label}** (ratio 0) to **{b.label}** (ratio 1).", ""]
    lines += md_table(["ratio", "encoder", "norm", "cos to a", "cos to b"],
                      [[n["ratio"], n["encoder"], n["norm"], n["cos_a"], n["cos_b"]] for n in numbers])
    if s.ratio is not None:
        folder = ctx.out.folder / "embeddings"
        subject = s.placeholder.strip("<>") or "blend"
        metadata = {**ctx.backbone.embedding_metadata(), "dti.blend": s.blend, "dti.ratio": str(s.ratio),
                    "dti.a": str(a.path), "dti.b": str(b.path)}
        files = save_embeddings(blend(a.rows, b.rows, s.ratio, s.blend), s.placeholder, ctx.backbone.encoders,
                                folder, f"{subject}-{s.blend}", metadata, ctx.backbone.tool_files)
        ctx.out.files += files
        record["embeddings"] = str(folder)
        lines += ["", f"Written: {folder} (token {s.placeholder}); load it with dti.load_embeddings(pipe, "
                  f"'{folder}') or as runs=[{folder}]."]
    else:
        base = add_rows(ctx.backbone, s.placeholder, a.rows, a.initializer)
        try:
            variants = [(f"{t:g}", blend(a.rows, b.rows, t, s.blend)) for t in ratios]
            record["grids"] = [str(p) for p in render(ctx.backbone, ctx.out, prompts, base.prompt, variants,
                                                     sampler, f"{a.label} → {b.label} ({s.blend})", base)]
        finally:
            base.remove()
        lines += ["", f"Grids: one per prompt, a row per seed, a column per ratio ({len(record['grids'])} files)."]
    ctx.out.json(record, "interpolate.json")
    ctx.out.summary(f"Interpolation: {ctx.model}", lines)
    return ctx.out.result(**record)



def _path_figure(numbers: list[dict], how: str, marked: list[float]):
    """Norm and cosine to either end along the path, per encoder; the exported ratio marked."""
    keys = list(dict.fromkeys(n["encoder"] for n in numbers))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), dpi=110)
    for i, key in enumerate(keys):
        points = [n for n in numbers if n["encoder"] == key]
        t = [n["ratio"] for n in points]
        colour = plt.get_cmap("tab10")(i % 10)
        axes[0].plot(t, [n["norm"] for n in points], marker="o", color=colour, label=key)
        axes[1].plot(t, [n["cos_a"] for n in points], marker="o", color=colour, label=f"{key}: to a")
        axes[1].plot(t, [n["cos_b"] for n in points], marker="s", linestyle=":", color=colour, label=f"{key}: to b")
    for ax, title in zip(axes, (f"norm along the {how} path", "cosine to either end")):
        for t in marked:
            ax.axvline(t, color="black", linestyle="--", linewidth=1)
        ax.set_xlabel("ratio")
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    return fig
