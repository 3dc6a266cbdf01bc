"""Trained concepts as the analyses read them: a run directory (or its embeddings/ folder, or a folder an analysis
exported) turned into rows per encoder key, with the run's label, initializer and saved steps; and putting such
rows into a loaded backbone as concept tokens (nested: several concepts at once)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import OmegaConf

from dti.backbones.base import Backbone
from dti.core.errors import InputError
from dti.core.io import read_json
from dti.method.concept import Concept, add_concept
from dti.method.formats import read_token_file
from dti.method.magnitude import Free


@dataclass
class LearnedRun:
    """One trained concept: `rows[encoder key]` is [n, d] (the final embeddings m*·v, or the raw TI rows)."""

    path: Path
    label: str
    placeholder: str
    rows: dict[str, torch.Tensor]
    initializer: str | None = None
    method: str | None = None
    step: int | None = None
    steps: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)  # saved steps (embeddings/steps/*)

    @property
    def num_vectors(self) -> int:
        return next(iter(self.rows.values())).shape[0]


def embeddings_folder(path: Path) -> Path:
    return path / "embeddings" if (path / "embeddings").is_dir() else path


def _read_rows(folder: Path, backbone: Backbone, source: Path) -> tuple[str, dict[str, torch.Tensor]]:
    """The placeholder and each encoder's rows of one embeddings folder, checked against the backbone."""
    rows, tokens = {}, set()
    for slot in backbone.encoders:
        file = folder / slot.diffusers_file
        if not file.is_file():
            raise InputError("runs", str(source), f"has no {slot.diffusers_file} (the {slot.key} encoder's rows); "
                             "give a run directory or an embeddings folder made for this model")
        token, value = read_token_file(file)
        width = slot.input_embeddings().weight.shape[1]
        if value.ndim != 2 or value.shape[1] != width:
            raise InputError("runs", str(source), f"holds {slot.key} rows of shape {tuple(value.shape)}; this "
                             f"model's {slot.key} encoder takes rows of width {width} (another model's run?)")
        rows[slot.key], tokens = value.float(), tokens | {token}
    if len(tokens) != 1 or len({r.shape[0] for r in rows.values()}) != 1:
        raise InputError("runs", str(source), f"its files disagree on the token or the row count ({sorted(tokens)})")
    return tokens.pop(), rows


def _method_label(path: Path, done: dict) -> str | None:
    """The run's method label: its Hydra config (kept in the job's folder; a multi-subject job's other subjects
    are siblings of it), else the method's name from done.json's fingerprint."""
    for folder in (path, *sorted(p for p in path.parent.iterdir() if p.is_dir())) if path.parent.is_dir() else ():
        config = folder / ".hydra" / "config.yaml"
        if config.is_file():
            cfg = OmegaConf.load(config)
            return str(OmegaConf.select(cfg, "label") or OmegaConf.select(cfg, "method.label") or "") or None
    name = (done.get("fingerprint") or {}).get("settings", {}).get("method.name")
    return str(name).upper() if name else None


def load_run(path: str | Path, backbone: Backbone, with_steps: bool = False) -> LearnedRun:
    """A run as the analyses use it; `with_steps` also reads every saved step's rows."""
    source = Path(path)
    if not source.is_dir():
        raise InputError("runs", str(path), "is not a folder (give a run directory or an embeddings folder)")
    folder = embeddings_folder(source)
    placeholder, rows = _read_rows(folder, backbone, source)
    done = read_json(source / "done.json") or {}
    method = _method_label(source, done) if done else None
    name = source.parent.name if source.name == "embeddings" else source.name  # an exported blend's folder
    subject = done.get("subject") or name
    run = LearnedRun(source, f"{method} {subject}" if method else name, placeholder, rows,
                     (done.get("fingerprint") or {}).get("initializer"), method, done.get("step"))
    if with_steps:
        for step_dir in sorted((folder / "steps").glob("[0-9]*")):
            run.steps[int(step_dir.name)] = _read_rows(step_dir, backbone, step_dir)[1]
    return run


def check_paths(paths: list, minimum: int = 0, exactly: int | None = None, analysis: str = "") -> list[str]:
    """The run folders exist and there are as many as the analysis needs (checked before any model is loaded)."""
    paths = [str(p) for p in paths]
    if exactly is not None and len(paths) != exactly or len(paths) < minimum:
        need = f"exactly {exactly}" if exactly is not None else f"at least {minimum}"
        raise InputError("runs", paths, f"{analysis} needs {need} run(s), e.g. runs=[outputs/a/dog,outputs/b/dog]")
    for path in paths:
        if not Path(path).is_dir():
            raise InputError("runs", path, "is not a folder (give a run directory or an embeddings folder)")
    return paths


def load_runs(paths: list[str], backbone: Backbone, with_steps: bool = False, minimum: int = 0,
              exactly: int | None = None, analysis: str = "") -> list[LearnedRun]:
    """Every run of `runs=[...]`, each label unique (a repeated label gets its folder's name)."""
    paths = check_paths(paths, minimum, exactly, analysis)
    runs = [load_run(p, backbone, with_steps) for p in paths]
    seen: dict[str, int] = {}
    for run in runs:
        seen[run.label] = seen.get(run.label, 0) + 1
    for i, run in enumerate(runs):
        if seen[run.label] > 1:
            run.label = f"{run.label} ({run.path.parent.name or i})"
    return runs


def free_token(backbone: Backbone, wanted: str) -> str:
    """`wanted`, or `wanted` with a number inside its brackets when a tokenizer already has it."""
    def taken(token: str) -> bool:
        return any(token in slot.tokenizer.get_vocab() for slot in backbone.encoders)

    if not taken(wanted):
        return wanted
    stem = wanted[1:-1] if wanted.startswith("<") and wanted.endswith(">") else wanted
    return next(f"<{stem}-{i}>" for i in range(2, 10_000) if not taken(f"<{stem}-{i}>"))


def add_rows(backbone: Backbone, placeholder: str, rows: dict[str, torch.Tensor], initializer: str | None = None
             ) -> Concept:
    """A concept token carrying these rows in every encoder of the backbone (free-norm tables: set_rows writes
    any rows, of any norm)."""
    n = next(iter(rows.values())).shape[0]
    concept = add_concept(backbone.encoders, free_token(backbone, placeholder), initializer or "photo", Free(), n)
    set_rows(concept, rows)
    return concept


def set_rows(concept: Concept, rows: dict[str, torch.Tensor]) -> None:
    for key, table in concept.tables.items():
        table.set_embeddings(rows[key])


@contextlib.contextmanager
def concepts_added(backbone: Backbone, runs: list[LearnedRun], placeholders: list[str] | None = None):
    """Each run's rows as its own token (add_concept nests the lookups: each wraps the one before); all taken out
    again on exit, in reverse order, so the backbone is as it was."""
    concepts: list[Concept] = []
    try:
        for i, run in enumerate(runs):
            placeholder = placeholders[i] if placeholders else run.placeholder
            concepts.append(add_rows(backbone, placeholder, run.rows, run.initializer))
        yield concepts
    finally:
        for concept in reversed(concepts):
            concept.remove()
