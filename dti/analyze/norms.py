"""`norms` (Figure 1a): each encoder's vocabulary row norms as a histogram, the given runs' learned norms marked.
The paper: TI's norm grows past 20 while the vocabulary's is about 0.4; DTI keeps the vocabulary's mean."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from dti.analyze.anatomy import vocabulary
from dti.analyze.context import Context, paper_section2
from dti.analyze.outputs import md_table


def vocabulary_stats(norms) -> dict:
    return {"mean": float(norms.mean()), "min": float(norms.min()), "max": float(norms.max()),
            "median": float(norms.median()), "rows": int(norms.numel())}


def run(ctx: Context) -> dict:
    runs = ctx.runs()
    paper = paper_section2()["vocabulary_norm"]
    stats, rows, learned = {}, [], {}
    encoders = ctx.backbone.encoders
    fig, axes = plt.subplots(1, len(encoders), figsize=(6 * len(encoders), 4), dpi=110, squeeze=False)
    for ax, slot in zip(axes[0], encoders):
        norms = vocabulary(slot).norm(dim=-1)
        stats[slot.key] = vocabulary_stats(norms)
        learned[slot.key] = {r.label: [float(x) for x in r.rows[slot.key].norm(dim=-1)] for r in runs}
        values = norms.cpu().numpy()
        marks = [x for v in learned[slot.key].values() for x in v]
        wide = bool(marks) and max(marks) > 5 * float(values.max())  # TI far out: a log axis keeps both visible
        bins = np.geomspace(max(values.min(), 1e-6), max(values.max(), *marks) * 1.1, 120) if wide else 100
        ax.hist(values, bins=bins, color="0.6")
        if wide:
            ax.set_xscale("log")
        for i, (label, values_) in enumerate(learned[slot.key].items()):
            for j, x in enumerate(values_):
                ax.axvline(x, color=plt.get_cmap("tab10")(i % 10), linewidth=2,
                           label=f"{label}: {x:.3g}" if j == 0 else None)
        ax.axvline(stats[slot.key]["mean"], color="black", linestyle="--", label=f"vocabulary mean "
                   f"{stats[slot.key]['mean']:.4f}")
        ax.set_title(f"{ctx.model} {slot.key}: vocabulary row norms ({stats[slot.key]['rows']} rows)")
        ax.set_xlabel("‖e‖")
        ax.set_ylabel("tokens")
        ax.legend(fontsize=7)
        rows += [{"encoder": slot.key, "source": "vocabulary", **stats[slot.key]}]
        rows += [{"encoder": slot.key, "source": label, "row": j, "norm": x}
                 for label, v in learned[slot.key].items() for j, x in enumerate(v)]
    ctx.out.figure(fig, "norms.png")
    ctx.out.csv(rows, "norms.csv")
    record = {"model": ctx.model, "vocabulary": stats, "learned": learned, "paper": paper}
    ctx.out.json(record, "norms.json")
    lines = md_table(["encoder", "vocabulary mean", "min", "max", "official notebook mean"],
                     [[k, s["mean"], s["min"], s["max"], paper["official_notebook"].get(k, "-")]
                      for k, s in stats.items()])
    if runs:
        lines += ["", *md_table(["run", "encoder", "learned norm(s)", "x vocabulary mean"],
                                [[label, k, ", ".join(f"{x:.4g}" for x in v), max(v) / stats[k]["mean"]]
                                 for k in learned for label, v in learned[k].items()])]
    lines += ["", f"Paper (Figure 1a): TI norms {paper['ti_norm_typical']}, vocabulary about {paper['paper_clip']}."]
    ctx.out.summary(f"Vocabulary and learned norms: {ctx.model}", lines)
    return ctx.out.result(**record)
