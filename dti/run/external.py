"""A run of an embedding made elsewhere (`embeddings=FILE`, stages sample and evaluate): its rows are written into
the run's `embeddings/` as training would write them, with `source.json` saying where they came from, and from
there the run samples and scores exactly as a trained run does (same prompts, seeds, sampler and evaluator)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from dti.backbones.base import Backbone
from dti.core import io
from dti.core.io import read_json
from dti.method.concept import Concept
from dti.method.external import ExternalEmbedding, content_sha256, stem
from dti.method.formats import save_embeddings

SOURCE_FILE = "source.json"  # in the run directory of an external embedding


def import_external(external: ExternalEmbedding, backbone: Backbone, concept: Concept, directory: Path,
                    trigger: str) -> list[Path]:
    """The external rows as the run's `embeddings/` (every format a trained run writes, under the concept's
    placeholder; the tool files named `trigger`) and `source.json`. The files keep the source's metadata, with
    where it came from."""
    sha = content_sha256(external.path)
    metadata = {**external.metadata, **backbone.embedding_metadata(), "dti.source": str(external.path.resolve()),
                "dti.source_sha256": sha}
    files = save_embeddings(external.rows, concept.placeholder, backbone.encoders, Path(directory) / "embeddings",
                            trigger, metadata, backbone.tool_files)
    io.write_json(Path(directory) / SOURCE_FILE, {
        "path": str(external.path.resolve()), "sha256": sha, "format": external.format, "token": external.token,
        "label": external.label(), "num_vectors": external.num_vectors, "metadata": external.metadata,
    })
    return files


def scored_config(cfg: DictConfig, directory: Path) -> dict:
    """The resolved config that metrics.json records; for an external embedding with its label filled in
    (`label=`, else the file's own, from source.json), which is the report's name for the row."""
    config = OmegaConf.to_container(cfg, resolve=True)
    if cfg.get("embeddings") is not None and not cfg.label:
        config["label"] = (read_json(Path(directory) / SOURCE_FILE) or {}).get("label") or stem(Path(cfg.embeddings))
    return config
