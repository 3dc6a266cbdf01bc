"""Embeddings made elsewhere (another tool, another dti run), as a concept's starting rows (`concept.init_from`) or
as the rows a run samples and scores (`embeddings=`).

What identifies such an input is its content, not its path: `content_sha256` hashes the bytes of the embedding
files (a folder: the embedding files in it and in its `embeddings/`), so the same file under another name is the
same input and an edited file at the same path is another one.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from dti.core.errors import InputError
from dti.method.formats import read_embedding
from dti.method.formats.layouts import load_state, read_layout
from dti.method.formats.reading import FILE_SUFFIXES
from dti.method.slots import TextEncoderSlot

# metadata keys that name what made a file, the first one present wins (then the A1111 name, then the file stem)
LABEL_KEYS = ("dti.method", "modelspec.title")


@dataclass
class ExternalEmbedding:
    """The rows of an embedding file matched to a backbone's encoders, and what the file says about itself."""

    path: Path
    rows: dict[str, torch.Tensor]  # encoder key -> [n, d] float32, on the CPU
    format: str
    token: str | None
    metadata: dict[str, str]

    @property
    def num_vectors(self) -> int:
        return next(iter(self.rows.values())).shape[0]

    def label(self) -> str:
        """How a report names it: the file's metadata (`dti.method`, `modelspec.title`), the A1111 name, else the
        file's stem."""
        for key in LABEL_KEYS:
            if self.metadata.get(key):
                return self.metadata[key]
        if self.format.startswith("a1111") and self.token:
            return self.token
        return stem(self.path)


def stem(path: Path) -> str:
    """A file's stem; a folder's name (a run's `embeddings/` folder: the run's, its subject)."""
    path = Path(path)
    if path.name == "embeddings" and not path.is_file():
        return path.resolve().parent.name
    return path.stem if path.suffix in FILE_SUFFIXES else path.name


def embedding_files(path: Path) -> list[Path]:
    """The files whose bytes define the embedding at `path`: the file, or a folder's embedding files (and its
    `embeddings/`'s, for a run directory), in a fixed order."""
    path = Path(path)
    if path.is_file():
        return [path]
    found = []
    for folder in (path, path / "embeddings"):
        if folder.is_dir():
            found += sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in FILE_SUFFIXES)
    return found


def content_sha256(path: str | Path) -> str | None:
    """The sha256 of the embedding's bytes (file names inside a folder included); None when there is nothing."""
    files = embedding_files(Path(path))
    if not files:
        return None
    digest = hashlib.sha256()
    for file in files:
        if len(files) > 1:
            digest.update(str(file.relative_to(path)).encode() + b"\0")
        digest.update(file.read_bytes())
    return digest.hexdigest()


def name_part(path: str) -> str:
    """A short folder-name-safe stand-in for an embedding path in a run's name: its stem and content hash."""
    short = re.sub(r"[^\w.-]+", "_", stem(Path(path)))[:32] or "embedding"
    sha = content_sha256(path) if Path(path).exists() else None
    return f"{short}~{sha[:8]}" if sha else short


def check_readable(field: str, path: str | None) -> None:
    """Before any model is loaded: the path is there and holds an embedding a layout reads (whether its rows fit
    the model's encoders needs the model: `read_external`)."""
    if path is None:
        return
    if not Path(path).exists():
        raise InputError(field, path, "does not exist (give an embedding file, an embeddings/ folder or a run)")
    files = embedding_files(Path(path))
    if not files:
        raise InputError(field, path, f"holds no embedding file ({', '.join(FILE_SUFFIXES)})")
    if Path(path).is_file():
        try:
            read_layout(*load_state(Path(path)))
        except Exception as err:  # noqa: BLE001  (a truncated file, a pickle of code, no known layout)
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise InputError(field, path, f"cannot be read as an embedding ({first})") from None


def read_external(field: str, path: str | Path, encoders: list[TextEncoderSlot]) -> ExternalEmbedding:
    """The embedding at `path` matched to `encoders` (one line naming `field` when it cannot be read or does
    not fit them)."""
    check_readable(field, str(path))
    try:
        read = read_embedding(Path(path), encoders)
    except InputError as err:  # the reader names the file it read (inside a folder, one of its files): keep it
        same = err.value == str(path)
        raise InputError(field, str(path), err.problem if same else f"{err.value}: {err.problem}") from None
    rows = {key: value.detach().float().cpu().contiguous() for key, value in read.rows.items()}
    return ExternalEmbedding(Path(path), rows, read.format, read.token, dict(read.metadata))

