"""The report's figures (matplotlib): image vs text similarity of every row, ours beside the paper's."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

from dti.core import io  # noqa: E402

MARKERS = "osD^vP*X<>"


def score_scatter(points: list[tuple], reference: list[tuple], path: Path):
    """One point per (row, backbone): `points` ours (filled), `reference` the paper's (hollow, same colour);
    each tuple is (row label, backbone, image, text). Returns the figure (closed after saving)."""
    rows = sorted({p[0] for p in points} | {p[0] for p in reference})
    backbones = sorted({p[1] for p in points} | {p[1] for p in reference})
    colours = {row: plt.get_cmap("tab10" if len(rows) <= 10 else "tab20")(i) for i, row in enumerate(rows)}
    fig, ax = plt.subplots(figsize=(7.5, 5.5), dpi=120)
    for source, filled in ((points, True), (reference, False)):
        for row, backbone, image, text in source:
            colour = colours[row]
            ax.scatter([image], [text], s=60, marker=MARKERS[backbones.index(backbone) % len(MARKERS)],
                       facecolors=colour if filled else "none", edgecolors=colour, linewidths=1.5)
    handles = [plt.Line2D([], [], color=colours[row], marker="o", linestyle="", label=row) for row in rows]
    handles += [plt.Line2D([], [], color="gray", marker=MARKERS[i % len(MARKERS)], linestyle="", label=b)
                for i, b in enumerate(backbones)]
    handles += [plt.Line2D([], [], color="gray", marker="o", linestyle="", label="ours"),
                plt.Line2D([], [], color="gray", marker="o", markerfacecolor="none", linestyle="", label="paper")]
    ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=8, frameon=False)
    ax.set_xlabel("image similarity (DINOv2)")
    ax.set_ylabel("text similarity (SigLIP, sigmoid)")
    ax.set_title("Subject vs text fidelity, mean over subjects")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    io.write_figure(path, fig)
    return fig


def score_vs_step(steps: dict[tuple[str, str], dict[int, dict]], path: Path):
    """Image and text similarity against the training step, one line per (row, backbone)."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), dpi=110)
    for i, ((row, backbone), by_step) in enumerate(sorted(steps.items())):
        xs = sorted(by_step)
        for ax, metric in zip(axes, ("image", "text")):
            ax.plot(xs, [by_step[x][metric] for x in xs], marker="o", color=plt.get_cmap("tab10")(i % 10),
                    label=f"{row} · {backbone}")
    for ax, title in zip(axes, ("image similarity (DINOv2)", "text similarity (SigLIP, sigmoid)")):
        ax.set_xlabel("training step")
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    io.write_figure(path, fig)
    return fig
