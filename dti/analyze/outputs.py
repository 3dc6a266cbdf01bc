"""What every analysis writes into its folder (analysis/<name>/ by default): figures (matplotlib, Agg), the numbers
as CSV and JSON, and a short markdown summary; image grids for the rendering analyses. Every file is atomic
(dti.core.io)."""

from __future__ import annotations

import csv
import io as stdio
import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

from dti.core import io  # noqa: E402


def fmt(value, digits: int = 4) -> str:
    """A number for a markdown table."""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.{digits}g}"
    return str(value)


def md_table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    return lines + ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]


class AnalysisOutput:
    """One analysis's folder and the files written into it (`files`, in order)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.files: list[Path] = []

    def path(self, name: str) -> Path:
        self.files.append(self.folder / name)
        return self.files[-1]

    def figure(self, fig, name: str) -> Path:
        path = self.path(name)
        fig.tight_layout()
        io.write_figure(path, fig)
        return path

    def csv(self, rows: list[dict], name: str) -> Path:
        buffer = stdio.StringIO()
        columns = list(dict.fromkeys(k for row in rows for k in row))
        writer = csv.DictWriter(buffer, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
        path = self.path(name)
        io.write_text(path, buffer.getvalue())
        return path

    def json(self, record: dict, name: str) -> Path:
        path = self.path(name)
        io.write_text(path, json.dumps(record, indent=2, default=float) + "\n")
        return path

    def summary(self, title: str, lines: list[str]) -> Path:
        path = self.path("summary.md")
        io.write_text(path, "\n".join([f"# {title}", "", *lines]).rstrip() + "\n")
        return path

    def image(self, image, name: str) -> Path:
        path = self.path(name)
        io.save_image(path, image)
        return path

    def result(self, **numbers) -> dict:
        """What the Python API returns: the folder, every file, the summary's text and the numbers."""
        summary = self.folder / "summary.md"
        return {"folder": self.folder, "files": list(self.files),
                "summary": summary.read_text(encoding="utf-8") if summary.is_file() else "", **numbers}


def image_grid(images: list[list], row_labels: list[str], column_labels: list[str], title: str):
    """A labelled grid (rows x columns of PIL images) as a matplotlib figure."""
    rows, columns = len(images), len(images[0])
    fig, axes = plt.subplots(rows, columns, figsize=(1.9 * columns, 1.9 * rows + 0.4), dpi=140, squeeze=False)
    for r in range(rows):
        for c in range(columns):
            ax = axes[r][c]
            ax.imshow(images[r][c])
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(column_labels[c], fontsize=8)
            if c == 0:
                ax.set_ylabel(row_labels[r], fontsize=8)
    fig.suptitle(title, fontsize=9)
    return fig
