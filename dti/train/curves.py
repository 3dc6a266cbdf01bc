"""`train_curves.png` of a run (matplotlib): the loss, and per text encoder the norm of the learned embedding and
its cosine to the prior direction, over the steps logged in `train_log.jsonl`."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

from dti.core import io  # noqa: E402


def read_log(path: Path) -> list[dict]:
    """The records of a train_log.jsonl (an unreadable line is skipped)."""
    records = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


def plot_training(log: Path, out: Path, vocabulary_norms: dict[str, float] | None = None):
    """Write the curves of `log` to `out`; `vocabulary_norms` ({encoder: mean row norm}) are drawn as reference
    lines on the norm panel. Returns the figure (closed after saving), or None for an empty log."""
    records = read_log(log)
    if not records:
        return None
    steps = [r["step"] for r in records]
    encoders = sorted({k.split("/")[0] for r in records for k in r if "/" in k})
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), dpi=110)
    axes[0].plot(steps, [r.get("loss") for r in records], color="black", linewidth=1)
    axes[0].set_title("loss")
    for i, key in enumerate(encoders):
        colour = plt.get_cmap("tab10")(i)
        axes[1].plot(steps, [r.get(f"{key}/norm") for r in records], color=colour, label=f"{key} ‖e‖")
        axes[2].plot(steps, [r.get(f"{key}/cos_prior") for r in records], color=colour, label=key)
        if vocabulary_norms and key in vocabulary_norms:
            axes[1].axhline(vocabulary_norms[key], color=colour, linestyle="--", linewidth=0.8,
                            label=f"{key} vocabulary mean")
    axes[1].set_title("‖e‖ per encoder")
    axes[2].set_title("cos(v, μ) per encoder")
    for ax in axes:
        ax.set_xlabel("step")
        ax.grid(True, alpha=0.3)
    axes[1].legend(fontsize=7)
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    io.write_figure(out, fig)
    return fig
