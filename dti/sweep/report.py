"""Tables from a sweep: `python -m dti.sweep.report multirun/<sweep>` (also run by Hydra at the end of every -m sweep).

Reads every `samples/<tag>/metrics.json` below the folder. A row is a method or ablation (the run's `method`
label, "-rescaled" appended for rescaled samples; without a label: optimizer / magnitude / κ); a column is a
backbone × {image, text}. A cell is the mean over subjects, with the number of subjects and seeds behind it, the
paper's value beside it (conf/paper/*.yaml) and the difference. Missing cells are shown as missing, never as 0.
`text` is `text_sim_official` (sigmoid of SigLIP's logit), the variant the paper's numbers use.
Writes report.md, report.csv and report.png (image vs text similarity per method) into the folder.
"""

from __future__ import annotations

import argparse
import csv
import io as stdio
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import yaml
from hydra.experimental.callback import Callback
from PIL import Image, ImageDraw

from dti.core import io
from dti.run.conftree import conf_dir

PAPER_DIR = conf_dir() / "paper"


def row_label(config: dict, job: str) -> str:
    """The run's `method` label, or else its job's overrides without the backbone (which is the column), so that
    runs differing in anything that changes training never share a row."""
    label = config.get("method")
    if not label:
        label = ",".join(p for p in job.split(",") if not p.startswith("model=")) or "default"
    rescale = str(config.get("sampler", {}).get("rescale", "none"))
    return label if rescale == "none" else f"{label}-rescaled" if rescale == "mean" else f"{label}-rescaled({rescale})"


def collect(folder: Path) -> list[dict]:
    """One record per (run directory, sample tag) with a complete metrics.json."""
    records = []
    for path in sorted(Path(folder).rglob("samples/*/metrics.json")):
        metrics = json.loads(path.read_text())
        config = metrics.get("config") or {}
        run = path.parent.parent.parent
        records.append({
            "row": row_label(config, run.parent.name), "backbone": config.get("model", {}).get("name", "?"),
            "subject": metrics["subject"], "image": metrics.get("image_sim"),
            "text": metrics.get("text_sim_official"), "text_cos": metrics.get("text_sim"),
            "seeds": len(metrics.get("seeds", [])), "prompt_set": path.parent.name.split("-rescale_")[0],
            "run": str(run.relative_to(folder)),
        })
    return records


def failures(folder: Path) -> list[tuple[str, str]]:
    out = []
    for path in sorted(Path(folder).rglob("status.json")):
        status = json.loads(path.read_text())
        if status.get("status") == "failed":
            out.append((str(path.parent.relative_to(folder)), status.get("error", "?")))
    return out


def load_paper(paper_dir: Path = PAPER_DIR) -> dict[tuple[str, str], dict]:
    """(row, backbone) -> {"image", "text", "cite"} from conf/paper/*.yaml."""
    values = {}
    for path in sorted(Path(paper_dir).glob("*.yaml")):
        data = yaml.safe_load(path.read_text())
        for entry in data.get("rows", []):
            values[(entry["row"], entry["backbone"])] = {"image": entry.get("image"), "text": entry.get("text"),
                                                        "cite": f"{data.get('table', path.stem)}, {entry['row']}"}
    return values


def display_rows(records: list[dict]) -> None:
    """Rows are (label, prompt set); the prompt set is shown only when the folder holds more than one."""
    several = len({r["prompt_set"] for r in records}) > 1
    for r in records:
        r["display"] = f"{r['row']} [{r['prompt_set']}]" if several else r["row"]


def _mean(values):
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def summarise(records: list[dict]) -> tuple[dict[tuple[str, str], dict], list[str]]:
    """Cell = mean over subjects of each subject's mean (a subject scored twice counts once, and is warned of)."""
    by_subject, warnings = defaultdict(list), []
    for r in records:
        by_subject[(r["display"], r["backbone"], r["subject"])].append(r)
    cells = defaultdict(list)
    for (row, backbone, subject), rs in by_subject.items():
        if len(rs) > 1:
            runs = ", ".join(r["run"] for r in rs)
            warnings.append(f"{row} / {backbone} / {subject}: {len(rs)} runs averaged ({runs})")
        cells[(row, backbone)].append({"image": _mean(r["image"] for r in rs), "text": _mean(r["text"] for r in rs),
                                       "seeds": {r["seeds"] for r in rs}})
    out = {key: {"image": _mean(x["image"] for x in subjects), "text": _mean(x["text"] for x in subjects),
                 "subjects": len(subjects), "seeds": sorted(set().union(*(x["seeds"] for x in subjects)))}
           for key, subjects in cells.items()}
    return out, warnings


def _fmt(value, digits=3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _diff(ours, paper) -> str:
    return "—" if ours is None or paper is None else f"{ours - paper:+.3f}"


def write_report(folder: Path, paper_dir: Path = PAPER_DIR) -> dict:
    folder = Path(folder)
    records, paper, failed = collect(folder), load_paper(paper_dir), failures(folder)
    display_rows(records)
    cells, warnings = summarise(records)
    # the paper's numbers are for the DreamBooth prompt set
    paper = {(next((r["display"] for r in records if r["row"] == row and r["prompt_set"] == "dreambooth"), row),
              backbone): v for (row, backbone), v in paper.items()}
    rows = sorted({r for r, _ in cells} | {r for r, b in paper if any(b == bb for _, bb in cells)})
    backbones = sorted({b for _, b in cells})
    md = [f"# Report: {folder.name}", "",
          "Mean over subjects; `text` is SigLIP's sigmoid score (text_sim_official), as in the paper. "
          "Each cell: ours (paper, difference) [subjects × seeds]. — = missing.", ""]
    header = "| method | " + " | ".join(f"{b} image | {b} text" for b in backbones) + " |"
    md += [header, "|" + " --- |" * (1 + 2 * len(backbones))]
    table_rows = []
    for row in rows:
        cols, csv_row = [], {"method": row}
        for b in backbones:
            cell, ref = cells.get((row, b)), paper.get((row, b), {})
            for metric in ("image", "text"):
                ours = cell[metric] if cell else None
                ref_value = ref.get(metric)
                count = f" [{cell['subjects']}×{'/'.join(map(str, cell['seeds']))}]" if cell else ""
                cols.append(f"{_fmt(ours)} ({_fmt(ref_value)}, {_diff(ours, ref_value)}){count}")
                csv_row.update({f"{b}/{metric}": ours, f"{b}/{metric}_paper": ref_value,
                                f"{b}/{metric}_diff": None if ours is None or ref_value is None else ours - ref_value,
                                f"{b}/subjects": cell["subjects"] if cell else 0})
        md.append(f"| {row} | " + " | ".join(cols) + " |")
        table_rows.append(csv_row)
    cites = sorted({v["cite"] for (r, b), v in paper.items() if r in rows and b in backbones})
    if cites:
        md += ["", "Paper values: " + "; ".join(cites) + " (see conf/paper/ for sources)."]
    md += ["", "## Per subject", "", "| method | backbone | subject | image | text | seeds | run |",
           "| --- | --- | --- | --- | --- | --- | --- |"]
    md += [f"| {r['display']} | {r['backbone']} | {r['subject']} | {_fmt(r['image'])} | {_fmt(r['text'])} | "
           f"{r['seeds']} | {r['run']} |"
           for r in sorted(records, key=lambda r: (r["display"], r["backbone"], r["subject"]))]
    if warnings:
        md += ["", "## Warnings", ""] + [f"- {w}" for w in warnings]
    if failed:
        md += ["", f"## Failed ({len(failed)})", ""] + [f"- {run}: {err}" for run, err in failed]
    io.write_text(folder / "report.md", "\n".join(md) + "\n")
    buffer = stdio.StringIO()
    fields = sorted({k for r in table_rows for k in r} - {"method"})
    writer = csv.DictWriter(buffer, fieldnames=["method", *fields])
    writer.writeheader()
    writer.writerows(table_rows)
    io.write_text(folder / "report.csv", buffer.getvalue())
    io.save_image(folder / "report.png", scatter(cells))
    return {"cells": cells, "failed": failed, "records": len(records), "warnings": warnings}


def scatter(cells: dict, size: int = 480) -> Image.Image:
    """Image vs text similarity, one colour per method (mean over subjects, one point per backbone)."""
    canvas = Image.new("RGB", (size + 220, size), "white")
    draw = ImageDraw.Draw(canvas)
    margin = 40
    points = [(r, v["image"], v["text"]) for (r, _), v in cells.items() if v["image"] is not None
              and v["text"] is not None]
    draw.rectangle([margin, margin, size - margin, size - margin], outline="black")
    draw.text((size // 2 - 40, size - 25), "image sim (DINOv2)", fill="black")
    draw.text((5, 10), "text sim (SigLIP)", fill="black")
    if points:
        xs, ys = [p[1] for p in points], [p[2] for p in points]
        lo_x, hi_x = min(xs) - 0.02, max(xs) + 0.02
        lo_y, hi_y = min(ys) - 0.02, max(ys) + 0.02
        palette = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"]
        methods = sorted({p[0] for p in points})
        for row, x, y in points:
            px = margin + (x - lo_x) / (hi_x - lo_x) * (size - 2 * margin)
            py = size - margin - (y - lo_y) / (hi_y - lo_y) * (size - 2 * margin)
            color = palette[methods.index(row) % len(palette)]
            draw.ellipse([px - 5, py - 5, px + 5, py + 5], fill=color)
        for i, row in enumerate(methods):
            draw.rectangle([size + 5, 40 + 18 * i, size + 15, 50 + 18 * i], fill=palette[i % len(palette)])
            draw.text((size + 20, 38 + 18 * i), row[:30], fill="black")
        draw.text((margin, size - margin + 5), f"{lo_x:.2f}", fill="gray")
        draw.text((size - margin - 30, size - margin + 5), f"{hi_x:.2f}", fill="gray")
        draw.text((2, size - margin - 10), f"{lo_y:.2f}", fill="gray")
        draw.text((2, margin), f"{hi_y:.2f}", fill="gray")
    return canvas


class SweepReport(Callback):
    """Hydra callback: after a -m sweep, write the report and fail the command if any job failed."""

    def on_multirun_end(self, config, **kwargs) -> None:
        folder = Path(config.hydra.sweep.dir)
        if not folder.is_dir():
            return
        summary = write_report(folder)
        print(f"report: {folder / 'report.md'} ({summary['records']} evaluated runs)")
        if summary["failed"]:
            lines = "; ".join(f"{run}: {err}" for run, err in summary["failed"][:3])
            print(f"error: {len(summary['failed'])} job(s) failed (see their status.json): {lines}", file=sys.stderr)
            sys.exit(1)  # Hydra turns a callback's exception into a warning; a failed sweep must not exit 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write report.md/csv/png for a folder of runs (a sweep).")
    parser.add_argument("folder", help="e.g. multirun/table3")
    parser.add_argument("--paper", default=str(PAPER_DIR), help="folder of paper-number YAML files")
    args = parser.parse_args(argv)
    if not Path(args.folder).is_dir():
        print(f"error: folder={args.folder!r}: not a directory", file=sys.stderr)
        return 2
    summary = write_report(Path(args.folder), Path(args.paper))
    print(f"{Path(args.folder) / 'report.md'}: {summary['records']} evaluated runs, {len(summary['failed'])} failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
