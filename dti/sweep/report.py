"""Tables from a sweep: `python -m dti.report multirun/<sweep>` (also run by Hydra at the end of every -m sweep).

Reads every `samples/<tag>/metrics.json` below the folder. A row is a method with what else tells its runs apart:
its key is the method (`method.name`; `external` for an embedding made elsewhere, `embeddings=FILE`, named by
the label its run recorded: `label=`, or the file's own) and, in brackets, the job's other run-name overrides
(beyond method, model and experiment) and the sampler's rescale, e.g. `dti [+words=qwen_vl]` or
`ti [rescale=mean]`; a column is a backbone x {image, text}. A cell is the mean over subjects of each subject's
mean, with the number of subjects and seeds behind it, and the paper's value beside it (conf/paper/*.yaml,
matched by key) with the difference. Missing cells are shown as missing, never as 0. `text` is
`text_sim_official` (sigmoid of SigLIP's logit), the variant the paper's numbers use. Writes report.md,
report.csv and report.png (image vs text similarity, ours and the paper's) into the folder.
"""

from __future__ import annotations

import argparse
import csv
import io as stdio
import re
import shutil
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import yaml
from hydra.experimental.callback import Callback

from dti.core import io
from dti.core.io import read_json
from dti.run.conftree import conf_dir
from dti.run.identity import REFUSED_DIR
from dti.sweep.plots import score_scatter, score_vs_step

PAPER_DIR = conf_dir() / "paper"
NOT_ROW_PARTS = ("method=", "model=", "experiment=", "+experiment=")  # the row, the column, the sweep itself


def split_name(name: str) -> list[str]:
    """A run name's overrides (values may hold commas inside brackets: `x=[a,b]`)."""
    return [p for p in re.split(r",(?=[+~]*[\w./@-]+=)", name) if "=" in p]


def row_key(config: dict, job_name: str, shared: frozenset = frozenset()) -> str:
    """`<method>` or `<method> [<what else tells the run apart>]` (see the module's docstring); overrides every
    run of the folder shares (`shared`, e.g. a sweep's common train.steps=500) tell nothing apart and are left
    out."""
    method = config.get("method")
    name = method.get("name") if isinstance(method, dict) else (method or "?")
    if config.get("embeddings"):  # an embedding made elsewhere: no method of ours made it (the file is the extra)
        name = "external"
    extras = [p for p in split_name(job_name) if not p.startswith(NOT_ROW_PARTS) and p not in shared]
    rescale = str((config.get("sampler") or {}).get("rescale", "none"))
    if rescale != "none":
        extras.append(f"rescale={rescale}")
    return f"{name} [{','.join(sorted(extras))}]" if extras else str(name)


def row_label(config: dict, key: str) -> str:
    """How the report names a row: the run's `label`, else the method's label with the key's brackets."""
    method = config.get("method")
    label = config.get("label") or (method.get("label") if isinstance(method, dict) else method) or key
    return label + key[key.index(" ["):] if " [" in key and not config.get("label") else label


def collect(folder: Path) -> list[dict]:
    """One record per (run directory, sample tag) with a complete metrics.json."""
    found = []
    for path in sorted(Path(folder).rglob("samples/*/metrics.json")):
        metrics = read_json(path)
        if not metrics or "subject" not in metrics:
            continue  # unreadable (a torn write): its run scores again when re-run
        found.append((path, metrics, metrics.get("config") or {}, path.parent.parent.parent))
    names = [set(split_name(run.parent.name)) for _, _, _, run in found]
    shared = frozenset(set.intersection(*names)) if len(names) > 1 else frozenset()
    records = []
    for path, metrics, config, run in found:
        key = row_key(config, run.parent.name, shared)
        records.append({
            "key": key, "label": row_label(config, key), "backbone": (config.get("model") or {}).get("name", "?"),
            "subject": metrics["subject"], "image": metrics.get("image_sim"),
            "text": metrics.get("text_sim_official"), "text_cos": metrics.get("text_sim"),
            "seeds": len(metrics.get("seeds", [])),
            "prompt_set": path.parent.name.split("-rescale_")[0].split("-step_")[0],
            "saved_step": metrics.get("step") is not None,  # an intermediate step (sampler.steps), not the final
            "step": metrics.get("step") or (config.get("train") or {}).get("steps"),
            "run": str(run.relative_to(folder)),
        })
    return records


def failures(folder: Path) -> list[tuple[str, str]]:
    """(run, error) of the runs whose status.json says failed, and of the sweep's jobs refused because another
    process held their run directory (they could not write a status there)."""
    out = []
    for path in sorted(Path(folder).rglob("status.json")):
        status = read_json(path) or {}
        if status.get("status") == "failed":
            out.append((str(path.parent.relative_to(folder)), status.get("error", "?")))
    for path in sorted((Path(folder) / REFUSED_DIR).glob("*.json")):
        refused = read_json(path) or {}
        out.append((refused.get("run", "?"), refused.get("error", "?")))
    return out


def load_paper(paper_dir: Path = PAPER_DIR) -> dict[tuple[str, str], dict]:
    """(key, backbone) -> {"image", "text", "label", "implemented", "cite"} from conf/paper/*.yaml. A value given
    by more than one table (Table 3's DTI row is Table 2's) is cited by all of them."""
    values = {}
    for path in sorted(Path(paper_dir).glob("*.yaml")):
        data = yaml.safe_load(path.read_text())
        for entry in data.get("rows", []):
            cell = (entry["key"], entry["backbone"])
            cite = f"{data.get('table', path.stem)}, {entry.get('label', entry['key'])}"
            if cell in values:
                values[cell]["cite"] += f"; {cite}"
                continue
            values[cell] = {"image": entry.get("image"), "text": entry.get("text"), "cite": cite,
                            "label": entry.get("label", entry["key"]), "implemented": entry.get("implemented", True)}
    return values


def _mean(values):
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def summarise(records: list[dict]) -> tuple[dict[tuple[str, str], dict], list[str]]:
    """Cell = mean over subjects of each subject's mean (a subject scored twice counts once, and is warned of).
    Rows are (key, prompt set): the paper's numbers are for the DreamBooth set, so other sets are rows of their
    own."""
    by_subject, warnings = defaultdict(list), []
    for r in records:
        by_subject[(r["key"], r["prompt_set"], r["backbone"], r["subject"])].append(r)
    cells = defaultdict(list)
    for (key, prompt_set, backbone, subject), rs in by_subject.items():
        if len(rs) > 1:
            runs = ", ".join(r["run"] for r in rs)
            warnings.append(f"{key} [{prompt_set}] / {backbone} / {subject}: {len(rs)} runs averaged ({runs})")
        cells[((key, prompt_set), backbone)].append({"image": _mean(r["image"] for r in rs),
                                                     "text": _mean(r["text"] for r in rs),
                                                     "seeds": {r["seeds"] for r in rs}})
    out = {cell: {"image": _mean(x["image"] for x in subjects), "text": _mean(x["text"] for x in subjects),
                  "subjects": len(subjects), "seeds": sorted(set().union(*(x["seeds"] for x in subjects)))}
           for cell, subjects in cells.items()}
    return out, warnings


def _fmt(value, digits=3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _diff(ours, paper) -> str:
    return "—" if ours is None or paper is None else f"{ours - paper:+.3f}"


def table_rows(records: list[dict], cells: dict, paper: dict) -> tuple[list[tuple], list[str]]:
    """The report's rows ((key, prompt set), label) and columns (backbones): ours, and the paper's rows on our
    backbones (DreamBooth prompt set) even where we have no run."""
    backbones = sorted({b for _, b in cells})
    labels = {(r["key"], r["prompt_set"]): r["label"] for r in records}
    several = len({ps for _, ps in labels}) > 1
    rows = set(labels) | {(key, "dreambooth") for key, b in paper if b in backbones}
    out = []
    for key, prompt_set in sorted(rows):
        label = labels.get((key, prompt_set)) or next(v["label"] for (k, _), v in paper.items() if k == key)
        out.append(((key, prompt_set), f"{label} [{prompt_set}]" if several else label))
    return out, backbones


def write_report(folder: Path, paper_dir: Path = PAPER_DIR) -> dict:
    folder = Path(folder)
    everything, paper, failed = collect(folder), load_paper(paper_dir), failures(folder)
    records = [r for r in everything if not r["saved_step"]]  # the tables are of the final embeddings
    cells, warnings = summarise(records)
    rows, backbones = table_rows(records, cells, paper)
    md = [f"# Report: {folder.name}", "",
          "Mean over subjects; `text` is SigLIP's sigmoid score (text_sim_official), as in the paper. "
          "Each cell: ours (paper, difference) [subjects × seeds]. — = missing.", ""]
    md += ["| method | key | " + " | ".join(f"{b} image | {b} text" for b in backbones) + " |",
           "|" + " --- |" * (2 + 2 * len(backbones))]
    csv_rows, cites = [], set()
    for (key, prompt_set), label in rows:
        cols, csv_row = [], {"method": label, "key": key, "prompt_set": prompt_set}
        for b in backbones:
            cell = cells.get(((key, prompt_set), b))
            ref = paper.get((key, b), {}) if prompt_set == "dreambooth" else {}
            if ref:
                cites.add(ref["cite"])
            for metric in ("image", "text"):
                ours, theirs = (cell or {}).get(metric), ref.get(metric)
                count = f" [{cell['subjects']}×{'/'.join(map(str, cell['seeds']))}]" if cell else ""
                mine = "not implemented" if ref and not ref["implemented"] else _fmt(ours)
                cols.append(f"{mine} ({_fmt(theirs)}, {_diff(ours, theirs)}){count}")
                csv_row.update({f"{b}/{metric}": ours, f"{b}/{metric}_paper": theirs,
                                f"{b}/{metric}_diff": None if ours is None or theirs is None else ours - theirs,
                                f"{b}/subjects": cell["subjects"] if cell else 0})
        md.append(f"| {label} | `{key}` | " + " | ".join(cols) + " |")
        csv_rows.append(csv_row)
    if cites:
        md += ["", "Paper values: " + "; ".join(sorted(cites)) + " (Kim et al., ICLR 2026; conf/paper/)."]
    md += ["", "## Per subject", "", "| method | backbone | subject | image | text | seeds | run |",
           "| --- | --- | --- | --- | --- | --- | --- |"]
    md += [f"| {r['label']} | {r['backbone']} | {r['subject']} | {_fmt(r['image'])} | {_fmt(r['text'])} | "
           f"{r['seeds']} | {r['run']} |"
           for r in sorted(records, key=lambda r: (r["label"], r["backbone"], r["subject"]))]
    if warnings:
        md += ["", "## Warnings", ""] + [f"- {w}" for w in warnings]
    if failed:
        md += ["", f"## Failed ({len(failed)})", ""] + [f"- {run}: {err}" for run, err in failed]
    io.write_text(folder / "report.md", "\n".join(md) + "\n")
    buffer = stdio.StringIO()
    fields = sorted({k for r in csv_rows for k in r} - {"method", "key", "prompt_set"})
    writer = csv.DictWriter(buffer, fieldnames=["method", "key", "prompt_set", *fields])
    writer.writeheader()
    writer.writerows(csv_rows)
    io.write_text(folder / "report.csv", buffer.getvalue())
    points = [(label, b, cells[(row, b)]["image"], cells[(row, b)]["text"]) for row, label in rows for b in backbones
              if (row, b) in cells and None not in (cells[(row, b)]["image"], cells[(row, b)]["text"])]
    reference = [(label, b, paper[(row[0], b)]["image"], paper[(row[0], b)]["text"]) for row, label in rows
                 for b in backbones if row[1] == "dreambooth" and (row[0], b) in paper]
    score_scatter(points, reference, folder / "report.png")
    steps = steps_table(everything) if any(r["saved_step"] for r in everything) else {}
    if steps:
        score_vs_step(steps, folder / "report_steps.png")
        rows_csv = [{"method": row, "backbone": b, "step": step, "image": v["image"], "text": v["text"],
                     "subjects": v["subjects"]} for (row, b), by_step in sorted(steps.items())
                    for step, v in sorted(by_step.items())]
        buffer = stdio.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=["method", "backbone", "step", "image", "text", "subjects"])
        writer.writeheader()
        writer.writerows(rows_csv)
        io.write_text(folder / "report_steps.csv", buffer.getvalue())
        md = (folder / "report.md").read_text() + "\n## Score by training step\n\nreport_steps.png, report_steps.csv\n"
        io.write_text(folder / "report.md", md)
    return {"cells": cells, "failed": failed, "records": len(records), "warnings": warnings, "points": len(points),
            "paper_points": len(reference)}


def steps_table(records: list[dict]) -> dict[tuple[str, str], dict[int, dict]]:
    """(row label, backbone) -> {step: mean over subjects of image and text}, for the runs that scored saved
    steps (sampler.steps), final step included."""
    by = defaultdict(list)
    for r in records:
        by[(r["label"], r["prompt_set"], r["backbone"], r["step"])].append(r)
    keyed = {(label, ps, b) for (label, ps, b, _) in by}
    with_steps = {k for k in keyed if sum(1 for (la, ps, b, _) in by if (la, ps, b) == k) > 1}
    out = defaultdict(dict)
    for (label, prompt_set, backbone, step), rs in by.items():
        if (label, prompt_set, backbone) in with_steps and step is not None:
            out[(f"{label} [{prompt_set}]", backbone)][step] = {
                "image": _mean(r["image"] for r in rs), "text": _mean(r["text"] for r in rs),
                "subjects": len({r["subject"] for r in rs})}
    return dict(out)


class SweepReport(Callback):
    """Hydra callback: after a -m sweep, write the report and fail the command if any job failed."""

    def on_multirun_start(self, config, **kwargs) -> None:
        shutil.rmtree(Path(config.hydra.sweep.dir) / REFUSED_DIR, ignore_errors=True)  # an earlier sweep's

    def on_multirun_end(self, config, **kwargs) -> None:
        folder = Path(config.hydra.sweep.dir)
        if not folder.is_dir():
            return
        summary = write_report(folder)
        print(f"report: {folder / 'report.md'} ({summary['records']} evaluated runs)")
        if summary["failed"]:
            lines = "; ".join(f"{run}: {err}" for run, err in summary["failed"][:3])
            print(f"error: {len(summary['failed'])} job(s) failed (see their status.json, or the sweep folder's "
                  f".refused/): {lines}", file=sys.stderr)
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
