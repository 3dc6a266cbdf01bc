"""`drift` (Figure 1b): how far the learned direction moves from where it started, over training. For each saved
step (embeddings/steps/*, every train.checkpoint_every) the cosine of each learned row to its initializer token
and to related words, and a 2-D projection (PCA) of the unit directions: the path of each run among the words."""

from __future__ import annotations

import matplotlib.pyplot as plt
import torch
from torch.nn.functional import cosine_similarity, normalize

from dti.analyze.anatomy import initializer_rows, word_rows
from dti.analyze.context import Context
from dti.analyze.outputs import md_table
from dti.core.errors import InputError


def trajectory(run, key: str, start: torch.Tensor | None) -> dict[int, torch.Tensor]:
    """The run's rows by step: 0 (the initializer), every saved step, and the final rows."""
    path = {0: start} if start is not None else {}
    path.update({step: rows[key] for step, rows in sorted(run.steps.items())})
    if run.step is not None and run.step not in path:
        path[run.step] = run.rows[key]
    return path


def word_direction(slot, word: str) -> torch.Tensor:
    """A word's direction: its token's, or the mean direction of its tokens."""
    return normalize(normalize(word_rows(slot, word)[1], dim=-1).mean(0), dim=0)


def project(points: torch.Tensor) -> torch.Tensor:
    """The first two principal components of unit vectors (rows)."""
    centred = points - points.mean(0)
    _, _, v = torch.linalg.svd(centred.double(), full_matrices=False)
    return (centred.double() @ v[:2].T).float()


def run(ctx: Context) -> dict:
    runs = ctx.runs(with_steps=True, minimum=1)
    rows, record = [], {}
    encoders = ctx.backbone.encoders
    fig, axes = plt.subplots(2, len(encoders), figsize=(6.5 * len(encoders), 9), dpi=110, squeeze=False)
    for e, slot in enumerate(encoders):
        words = {w: word_direction(slot, w) for w in ctx.settings.related}
        record[slot.key], paths, labelled = {}, {}, dict(words)
        for i, r in enumerate(runs):
            if r.initializer is None and not words:
                raise InputError("runs", str(r.path), "has no done.json naming its initializer; give "
                                 "analyze.related=[words] to compare it with")
            start = initializer_rows(slot, r.initializer, r.num_vectors) if r.initializer else None
            if r.initializer:
                labelled.setdefault(r.initializer, word_direction(slot, r.initializer))
            path = paths[r.label] = trajectory(r, slot.key, start)
            targets = ({"initializer": normalize(start, dim=-1)} if start is not None else {}) | {
                w: d.expand(r.num_vectors, -1) for w, d in words.items()}
            series = {name: [float(cosine_similarity(rows_, t, dim=-1).mean()) for rows_ in path.values()]
                      for name, t in targets.items()}
            record[slot.key][r.label] = {"steps": list(path), "cosine": series,
                                         "norm": [float(x.norm(dim=-1).mean()) for x in path.values()]}
            rows += [{"run": r.label, "encoder": slot.key, "step": s, "to": name, "cosine": c}
                     for name, values in series.items() for s, c in zip(path, values)]
            for name, values in series.items():
                axes[0][e].plot(list(path), values, marker="o", color=plt.get_cmap("tab10")(i % 10),
                                linestyle="-" if name == "initializer" else ":", label=f"{r.label} → {name}")
        axes[0][e].set_title(f"{slot.key}: cosine of the learned direction")
        axes[0][e].set_xlabel("training step")
        axes[0][e].legend(fontsize=7)
        axes[0][e].grid(True, alpha=0.3)
        _projection(axes[1][e], paths, labelled, slot.key)
    ctx.out.figure(fig, "drift.png")
    ctx.out.csv(rows, "drift.csv")
    ctx.out.json({"model": ctx.model, "encoders": record}, "drift.json")
    table = [[label, key, v["steps"][-1], v["cosine"].get("initializer", [float("nan")])[-1], v["norm"][-1]]
             for key, by_run in record.items() for label, v in by_run.items()]
    lines = md_table(["run", "encoder", "last step", "cos to initializer", "norm"], table)
    lines += ["", "Cosine per step and word: drift.csv. DTI keeps the direction near the initializer (the vMF prior); "
              "TI's direction and norm both drift (paper, Figure 1b)."]
    ctx.out.summary(f"Direction drift over training: {ctx.model}", lines)
    return ctx.out.result(encoders=record)


def _projection(ax, paths: dict[str, dict[int, torch.Tensor]], words: dict[str, torch.Tensor], key: str) -> None:
    """Unit directions of every path (mean over a concept's rows) and the words, in the plane of their first two
    principal components."""
    points = [normalize(normalize(rows, dim=-1).mean(0), dim=0) for path in paths.values() for rows in path.values()]
    points += list(words.values())
    xy = project(torch.stack(points))
    start = 0
    for i, (label, path) in enumerate(paths.items()):
        segment = xy[start:start + len(path)]
        start += len(path)
        ax.plot(segment[:, 0], segment[:, 1], marker="o", markersize=3, color=plt.get_cmap("tab10")(i % 10),
                label=label)
        ax.annotate("", xy=tuple(segment[-1].tolist()), xytext=tuple(segment[max(len(segment) - 2, 0)].tolist()),
                    arrowprops={"arrowstyle": "->", "color": plt.get_cmap("tab10")(i % 10)})
    for (word, _), (x, y) in zip(words.items(), xy[start:].tolist()):
        ax.scatter([x], [y], color="black", marker="x")
        ax.annotate(word, (x, y), fontsize=8, xytext=(3, 3), textcoords="offset points")
    ax.set_title(f"{key}: unit directions, first two principal components")
    ax.legend(fontsize=7)
    ax.grid(True, alpha=0.3)
