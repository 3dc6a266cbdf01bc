"""The few lines printed when a run ends: where its embeddings are, their norm against the vocabulary's, the
scores, and the pictures to look at."""

from __future__ import annotations

import os
from pathlib import Path

from dti.run.identity import read_json


def _rel(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)


def run_summary(directory: Path) -> list[str]:
    directory = Path(directory)
    lines = [f"done: {_rel(directory)}"]
    done = read_json(directory / "done.json")
    if done:
        files = ", ".join(Path(f).name for f in done.get("embeddings", []))
        lines.append(f"  embeddings  {_rel(directory / 'embeddings')}/ ({files})")
        norms = done.get("norms") or {}
        if norms:
            lines.append("  |e|         " + ", ".join(f"{k} {v['embedding']:.4f} (vocabulary mean "
                                                       f"{v['vocabulary_mean']:.4f})" for k, v in norms.items()))
    for metrics_path in sorted(directory.glob("samples/*/metrics.json")):
        m = read_json(metrics_path) or {}
        scores = [f"image {m['image_sim']:.3f} (DINOv2)" if m.get("image_sim") is not None else None,
                  f"text {m['text_sim_official']:.3f} (SigLIP sigmoid)" if m.get("text_sim_official") is not None
                  else None]
        scores = ", ".join(s for s in scores if s)
        lines.append(f"  scores      {scores} over {m.get('num_images')} images [{metrics_path.parent.name}]")
    grids = sorted((directory / "validation").glob("step_*.png"))
    if grids:
        lines.append(f"  validation  {_rel(grids[-1])}")
    if (directory / "train_curves.png").is_file():
        lines.append(f"  curves      {_rel(directory / 'train_curves.png')}")
    return lines
